"""Adam over per-sample gradients, in the cross-replica form of the reference controller optimizer.

The reference (`tunas/tpu_optimizer_ops.py`, `apply_adam`) trains the controller with one
architecture per TPU core and aggregates the cores' gradients in a way that differs from a
cross-replica Keras Adam: the second moment is updated with the MEAN OVER SAMPLES OF g², not
with the square of the mean gradient, and an optional regularisation loss (the entropy bonus)
takes a separate plain SGD step that bypasses the moments. Per variable and step, with
`g_s` the gradient of sample `s` (all samples of all replicas) and `r_s` its regularisation
gradient:

    m ← β1·m + (1 − β1)·mean_s(g_s)
    v ← β2·v + (1 − β2)·mean_s(g_s²)
    x ← x − lr·√(1 − β2^t)/(1 − β1^t) · m / (√v + ε)
    x ← x − lr·mean_s(r_s)

`CrossSampleAdam` applies this to any number of samples per replica (K architectures per step
on one device behave as K replicas with one each); with one sample in total it is plain Adam.
Call `apply` in replica context (inside `strategy.run`, or with no strategy); every replica must
hold the same number of samples.

References: Kingma & Ba, 2015 (Adam); google-research `tunas/tpu_optimizer_ops.py`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

ONLY_FIRST_REPLICA = tf.VariableAggregation.ONLY_FIRST_REPLICA


class CrossSampleAdam(tf.Module):
    """Adam whose moments aggregate per-sample gradients across samples and replicas.

    Args:
      beta_1: decay of the first moment, in [0, 1) (the controller uses 0).
      beta_2: decay of the second moment, in [0, 1).
      epsilon: added to √v (Kingma & Ba's "epsilon hat").

    Example:
      >>> optimizer = CrossSampleAdam(beta_1=0.0)
      >>> optimizer.build(controller.trainable_variables)
      >>> optimizer.apply(per_sample_gradients, controller.trainable_variables, learning_rate=1e-3)
    """

    def __init__(self, beta_1: float = 0.0, beta_2: float = 0.999, epsilon: float = 1e-8, name: str = "adam"):
        super().__init__(name=name)
        for argument, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected a value in [0, 1). "
                    f"Received: {argument}={value!r}"
                )
        if not float(epsilon) >= 0.0:
            raise ValueError(f"Invalid value for argument `epsilon`. Expected >= 0. Received: epsilon={epsilon!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.first_moments: list = []
        self.second_moments: list = []
        with self.name_scope:
            self.iterations = tf.Variable(
                0, dtype=tf.int64, trainable=False, aggregation=ONLY_FIRST_REPLICA, name="iterations"
            )

    def build(self, variables: Sequence[tf.Variable]) -> None:
        """Creates the zero-initialised moments of `variables` (call once, under the strategy's scope)."""
        if self.first_moments:
            raise ValueError("Invalid call of `CrossSampleAdam.build`: the optimizer is already built.")
        with self.name_scope:
            for variable in variables:
                name = variable.name.split(":")[0].replace("/", "_")
                for moments, suffix in ((self.first_moments, "m"), (self.second_moments, "v")):
                    moments.append(
                        tf.Variable(
                            tf.zeros(variable.shape, variable.dtype),
                            trainable=False,
                            aggregation=ONLY_FIRST_REPLICA,
                            name=f"{name}_{suffix}",
                        )
                    )

    def apply(
        self,
        sample_gradients: Sequence[tf.Tensor],
        variables: Sequence[tf.Variable],
        learning_rate,
        regularization_gradients: Optional[Sequence[tf.Tensor]] = None,
    ) -> None:
        """One update of `variables` from this replica's per-sample gradients.

        Args:
          sample_gradients: one `[num_samples, *variable.shape]` tensor per variable.
          variables: the variables `build` was called with, in the same order.
          learning_rate: scalar (the same on every replica).
          regularization_gradients: optional, shaped like `sample_gradients`: gradients of a
            regularisation loss, applied as plain SGD (no moments).
        """
        if len(variables) != len(self.first_moments) or len(sample_gradients) != len(variables):
            raise ValueError(
                "Invalid arguments of `CrossSampleAdam.apply`: expected one gradient per built variable "
                f"({len(self.first_moments)}). Received: {len(sample_gradients)} gradients, {len(variables)} variables"
            )
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError(
                "Invalid call of `CrossSampleAdam.apply`: call it inside `strategy.run` (replica context)."
            )
        # Every variable's values side by side in one vector: a handful of ops per step instead of
        # a dozen per variable (the controller has one variable per decision); the same numbers.
        sizes = [variable.shape.num_elements() for variable in variables]
        gradients = _concat(sample_gradients, leading=1)  # [S, N]
        statistics = {
            "mean": tf.reduce_mean(gradients, axis=0),
            "square_mean": tf.reduce_mean(tf.square(gradients), axis=0),
        }
        if regularization_gradients is not None:
            statistics["regularization"] = tf.reduce_mean(_concat(regularization_gradients, leading=1), axis=0)
        # One all-reduce for everything: means over replicas of per-replica means = means over samples.
        statistics = context.all_reduce(tf.distribute.ReduceOp.MEAN, statistics)
        learning_rate = tf.cast(learning_rate, tf.float32)
        count = tf.cast(self.iterations + 1, tf.float32)
        scale = learning_rate * tf.sqrt(1.0 - tf.pow(self.beta_2, count)) / (1.0 - tf.pow(self.beta_1, count))
        first = self.beta_1 * _concat(self.first_moments) + (1.0 - self.beta_1) * statistics["mean"]
        second = self.beta_2 * _concat(self.second_moments) + (1.0 - self.beta_2) * statistics["square_mean"]
        step = scale * first / (tf.sqrt(second) + self.epsilon)
        if regularization_gradients is not None:
            step = step + learning_rate * statistics["regularization"]
        for targets, values, method in (
            (self.first_moments, first, "assign"),
            (self.second_moments, second, "assign"),
            (variables, step, "assign_sub"),
        ):
            for target, value in zip(targets, tf.split(values, sizes)):
                getattr(target, method)(value if target.shape.rank == 1 else tf.reshape(value, target.shape))
        self.iterations.assign_add(1)

    def reset(self) -> None:
        """Back to the initial state (zero moments, step 0)."""
        for moment in self.first_moments + self.second_moments:
            moment.assign(tf.zeros_like(moment))
        self.iterations.assign(0)


def _concat(tensors: Sequence, leading: int = 0) -> tf.Tensor:
    """The tensors flattened after their first `leading` (0 or 1) dimensions, concatenated along the last."""
    flat = []
    for tensor in map(tf.convert_to_tensor, tensors):
        if tensor.shape.rank != leading + 1:  # static shapes: no shape ops in the graph
            tensor = tf.reshape(tensor, [-1, tensor.shape[1:].num_elements()] if leading else [-1])
        flat.append(tensor)
    return tf.concat(flat, axis=-1)
