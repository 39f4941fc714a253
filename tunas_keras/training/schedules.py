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


def warmup_probability(step, total_steps: int, warmup_fraction: float = 0.25):
    """Op / filter warmup probability: 1 at step 0, linearly down to 0 at `warmup_fraction`."""
    step = tf.cast(step, tf.float32)
    warmup_steps = max(warmup_fraction * total_steps, 1.0)
    return tf.clip_by_value(1.0 - step / warmup_steps, 0.0, 1.0)


def _rmsprop(learning_rate):
    # The legacy RMSprop applies epsilon inside the square root, as the reference (TF1) optimizer.
    return keras.optimizers.legacy.RMSprop(learning_rate=learning_rate, rho=0.9, momentum=0.9, epsilon=1.0)


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
        raise ValueError(f"Invalid value for argument `optimizer`. Expected one of {sorted(OPTIMIZERS)}. Received: {name!r}")
    peak = scaled_learning_rate(base_learning_rate, batch_size)
    schedule = WarmupCosine(peak, total_steps, int(warmup_fraction * total_steps))
    return OPTIMIZERS[name](schedule)
