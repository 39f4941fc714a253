"""`ChoiceBlock`: one branch per choice of an op decision (paper §4.1 and §4.3).

- A one-hot selection runs exactly ONE branch (`tf.switch_case` on its index): the other
  branches are not executed and get no gradient. `ZeroBranch`es (the skip of a skippable
  layer) are never computed inside sums; with a single other branch the block is just
  `tf.cond(w > 0, w · branch, zeros)`.
- A fractional selection (op warmup: "all ops on, averaged") computes the selection-weighted
  sum of all branches. That path is rematerialised (a `tf.custom_gradient` that recomputes the
  branches, like `tf.recompute_grad`): only the block's inputs and weights are kept for the
  backward pass, so activation memory under op warmup stays close to that of one path.
  (`tf.recompute_grad` itself fails inside a `tf.switch_case` branch in TF 2.20: its
  recomputation captures eager variable handles that the cond gradient cannot resolve; our
  branches therefore read their weights through `masked.read_weight`.)

Both paths are branches of one `tf.switch_case` on a tensor index, so the selection can change
every step (and differ per replica inside `strategy.run`) without retracing.

    >>> block = ChoiceBlock([MaskedDepthwiseConv2D(3), MaskedDepthwiseConv2D(5)])
    >>> outputs = block(features, selection=tf.constant([0.0, 1.0]))   # runs the 5×5 only

References: Bender et al., CVPR 2020, §4.1, §4.3 (op warmup).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tunas_keras.layers.masked import read_weight, substitute_weights


@keras.utils.register_keras_serializable(package="tunas_keras")
class ZeroBranch(keras.layers.Layer):
    """The `Zero` op of a skippable layer: outputs zeros shaped like its inputs."""

    def call(self, inputs, context=None, training=None):
        del context, training
        return tf.zeros_like(inputs)

    def active_l2(self, context=None) -> tf.Tensor:
        del context
        return tf.constant(0.0)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


def is_one_hot(selection: tf.Tensor) -> tf.Tensor:
    """Boolean scalar: every entry is 0 or 1 and they sum to 1."""
    binary = tf.reduce_all(tf.logical_or(tf.equal(selection, 0.0), tf.equal(selection, 1.0)))
    return tf.logical_and(binary, tf.equal(tf.reduce_sum(selection), 1.0))


@keras.utils.register_keras_serializable(package="tunas_keras")
class ChoiceBlock(keras.layers.Layer):
    """Runs the selected branch (one-hot) or the selection-weighted sum of all branches.

    Args:
      branches: a non-empty list of Keras layers with equal output shapes. Each is called as
        `branch(inputs, training=...)`, plus `context=context` when a context is given. To be
        rematerialised inside `tf.function`, branches must read their weights through
        `tunas_keras.layers.masked.read_weight` (all masked layers do).
      rematerialize: recompute the branches in the backward pass of the fractional path
        instead of keeping their activations.

    Call arguments:
      inputs: a tensor (or nested structure) passed to every branch.
      selection: float32 `(len(branches),)`: one-hot, or fractional weights (e.g. `1/n`).
        Gradients do not flow into it.
      context: optional nested structure of tensors passed to every branch (the supernet's
        channel masks).
      training: passed to the branches (the fractional path passes `False` so that stateful
        updates, e.g. moving statistics, are not repeated by the recomputation).
      one_hot: Python bool; True promises a one-hot `selection`: only the branches are built
        (no fractional path, no one-hot test), a smaller graph that traces faster. The branch
        run is `argmax(selection)`.

    Returns:
      The selected branch's output, or `sum_i selection[i] * branch_i(inputs)`.
    """

    def __init__(self, branches, rematerialize=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(branches, (list, tuple)) or not branches:
            raise ValueError(
                "Invalid value for argument `branches`. Expected a non-empty list of layers. "
                f"Received: branches={branches!r}"
            )
        branches = [keras.layers.deserialize(branch) if isinstance(branch, dict) else branch for branch in branches]
        for branch in branches:
            if not isinstance(branch, keras.layers.Layer):
                raise ValueError(
                    f"Invalid value for argument `branches`. Expected Keras layers. Received: {type(branch).__name__}"
                )
        self.branches = list(branches)
        self.rematerialize = bool(rematerialize)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def build(self, input_shape):
        for branch in self.branches:
            if not branch.built:
                branch.build(input_shape)
        super().build(input_shape)

    def _run_branch(self, index, inputs, context, training):
        if context is None:
            return self.branches[index](inputs, training=training)
        return self.branches[index](inputs, context=context, training=training)

    def _computed_branches(self) -> list:
        """Indices of the branches that are not `ZeroBranch` (zeros add nothing to a sum)."""
        return [index for index, branch in enumerate(self.branches) if not isinstance(branch, ZeroBranch)]

    def _scaled_single_branch(self, index, selection, inputs, context, training):
        """`selection[index] · branch(inputs)`, or zeros when that weight is 0 (e.g. op-or-skip).

        With one non-zero branch the weighted sum keeps no more activations than the branch
        itself, so it needs no rematerialisation (which also keeps the graph small).
        """
        weight = selection[index]
        zero_index = next(i for i, branch in enumerate(self.branches) if isinstance(branch, ZeroBranch))
        return tf.cond(
            weight > 0,
            lambda: weight * self._run_branch(index, inputs, context, training),
            lambda: self._run_branch(zero_index, inputs, context, training),
        )

    def _weighted_sum(self, selection, inputs, context):
        total = None
        for index in self._computed_branches():
            term = selection[index] * self._run_branch(index, inputs, context, training=False)
            total = term if total is None else total + term
        return total

    def _mixture(self, selection, inputs, context):
        if not self.rematerialize:
            return self._weighted_sum(selection, inputs, context)
        # The branches read their weights from explicit tensors (not the variables), so that
        # the recomputation below needs no variable capture inside TF's cond gradient.
        variables = self.trainable_weights
        values = [tf.identity(read_weight(variable)) for variable in variables]
        refs = [variable.ref() for variable in variables]
        structure = (inputs, {} if context is None else context)
        # Identities make every tensor the gradient below refers to a tensor of THIS branch's
        # graph (not a tensor captured from an outer graph), as TF's cond gradient requires.
        flat = [tf.identity(tensor) for tensor in tf.nest.flatten(structure)]
        selection = tf.identity(selection)
        num_flat = len(flat)

        def compute(selection_, *tensors):
            inputs_, context_ = tf.nest.pack_sequence_as(structure, list(tensors[:num_flat]))
            context_ = None if context is None else context_
            with substitute_weights(dict(zip(refs, tensors[num_flat:]))):
                return self._weighted_sum(selection_, inputs_, context_)

        @tf.custom_gradient
        def rematerialized(selection_, *tensors):
            outputs = compute(selection_, *tensors)

            def gradient(upstream, variables=None):
                # `variables` is only set for branches that read variables directly instead of
                # through `read_weight`; that works outside `tf.switch_case` gradients only.
                variables = list(variables or [])
                with tf.GradientTape() as tape:
                    tape.watch(tensors)
                    recomputed = compute(selection_, *tensors)
                grads = tape.gradient(
                    recomputed,
                    list(tensors) + variables,
                    output_gradients=upstream,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
                input_grads = [tf.zeros_like(selection_)] + list(grads[: len(tensors)])
                return (input_grads, list(grads[len(tensors) :])) if variables else input_grads

            return outputs, gradient

        return rematerialized(selection, *flat, *values)

    def call(self, inputs, selection, context=None, training=None, one_hot=False):
        selection = tf.stop_gradient(tf.cast(selection, tf.float32))
        if selection.shape.rank is not None and selection.shape != (self.num_branches,):
            raise ValueError(
                f"Invalid value for argument `selection`. Expected shape ({self.num_branches},). "
                f"Received: selection.shape={selection.shape}"
            )
        if self.num_branches == 1:
            return self._run_branch(0, inputs, context, training)
        computed = self._computed_branches()
        if len(computed) == 1:
            return self._scaled_single_branch(computed[0], selection, inputs, context, training)
        branch_fns = [
            (lambda i=i: self._run_branch(i, inputs, context, training)) for i in range(self.num_branches)
        ]
        if one_hot:
            return tf.switch_case(tf.argmax(selection, output_type=tf.int32), branch_fns)
        index = tf.where(is_one_hot(selection), tf.argmax(selection, output_type=tf.int32), self.num_branches)
        branch_fns.append(lambda: self._mixture(selection, inputs, context))
        return tf.switch_case(index, branch_fns)

    def compute_output_shape(self, input_shape):
        return self.branches[0].compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            branches=[keras.layers.serialize(branch) for branch in self.branches],
            rematerialize=self.rematerialize,
        )
        return config
