"""Learning-rate and warmup schedules of the search and of standalone training.

References: design.md §4–§6 (linear warmup over 2.5 % then cosine; op / filter warmup decaying
1 → 0 over the first 25 % of the search).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

REFERENCE_BATCH_SIZE = 256


def scaled_learning_rate(base: float, batch_size: int) -> float:
    """The reference's linear scaling rule: `base × batch / 256`."""
    return base * batch_size / REFERENCE_BATCH_SIZE


@keras.utils.register_keras_serializable(package="tunas_keras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def __init__(self, peak_learning_rate: float, total_steps: int, warmup_steps: int):
        if total_steps < 1:
            raise ValueError(f"Invalid value for argument `total_steps`. Expected >= 1. Received: {total_steps}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.maximum(float(self.warmup_steps), 1.0)
        warm = self.peak_learning_rate * step / warmup
        decay_steps = tf.maximum(float(self.total_steps - self.warmup_steps), 1.0)
        progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * self.peak_learning_rate * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """`int(warmup_fraction · total_steps)`, as the reference counts its warmup steps."""
    return int(float(warmup_fraction) * int(total_steps))


def warmup_probability(step, total_steps: int, warmup_fraction: float = 0.25):
    """Op / filter warmup probability: `1 − step / warmup_steps`, clipped to [0, 1]; 0 without warmup steps.

    As the reference's `linear_decay`: 1 at step 0, 0 from `warmup_steps = int(fraction · total)` on.
    """
    count = warmup_steps(total_steps, warmup_fraction)
    if count == 0:
        return tf.constant(0.0)
    return tf.clip_by_value(1.0 - tf.cast(step, tf.float32) / float(count), 0.0, 1.0)


class ReferenceRMSprop(keras.optimizers.legacy.RMSprop):
    """The legacy Keras RMSprop with its `rms` slot starting at ONES, as TF1's `RMSPropOptimizer`.

    Keras starts the mean square at zeros, so its first steps divide by `√((1 − ρ)·g² + ε)`
    instead of `√(ρ + (1 − ρ)·g² + ε)`: with ε = 1 the difference is small, but it is not the
    reference's optimizer. Everything else (ε inside the square root, momentum) is already TF1's.
    """

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "rms", initializer="ones")
        if self._momentum:
            for var in var_list:
                self.add_slot(var, "momentum")
        if self.centered:
            for var in var_list:
                self.add_slot(var, "mg")


def _rmsprop(learning_rate):
    # The legacy RMSprop applies epsilon inside the square root, as the reference (TF1) optimizer.
    return ReferenceRMSprop(learning_rate=learning_rate, rho=0.9, momentum=0.9, epsilon=1.0)


OPTIMIZERS = {
    "rmsprop": _rmsprop,  # the reference recipe
    "adam": lambda learning_rate: keras.optimizers.legacy.Adam(learning_rate=learning_rate),
    "sgd": lambda learning_rate: keras.optimizers.legacy.SGD(learning_rate=learning_rate, momentum=0.9),
}


def make_optimizer(name: str, base_learning_rate: float, batch_size: int, total_steps: int, warmup_fraction: float):
    """The weight optimizer with the warmup + cosine schedule at `base × batch / 256`.

    `rmsprop` is the reference recipe (decay 0.9, momentum 0.9, ε 1.0, tuned for long ImageNet
    runs with large batches); `adam` and `sgd` (momentum 0.9) help short runs on small data.
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            f"Invalid value for argument `optimizer`. Expected one of {sorted(OPTIMIZERS)}. Received: {name!r}"
        )
    peak = scaled_learning_rate(base_learning_rate, batch_size)
    schedule = WarmupCosine(peak, total_steps, int(warmup_fraction * total_steps))
    return OPTIMIZERS[name](schedule)


def create_optimizer_slots(optimizer, variables) -> None:
    """Creates a (legacy) optimizer's iteration counter, hyper-parameters and slots for `variables`.

    Call it where the model is built (inside the strategy's scope): a `tf.function` whose first
    trace creates variables is traced a second time, which doubles the first step's tracing.
    """
    optimizer._create_all_weights(list(variables))  # pylint: disable=protected-access
