"""`ChoiceBlock`: one branch per choice of an op decision (paper §4.1 and §4.3), no control flow.

The block computes the selection-weighted sum of its branches, `Σ_i w_i · branch_i(x)`: a
one-hot selection gives exactly the chosen branch, a fractional one (op warmup: "all ops on,
averaged") the average. There is no `tf.cond` / `tf.switch_case`: the graph is straight-line,
traces in seconds, needs no device-to-host copy of a predicate and compiles with XLA. What a
branch with weight 0 costs is up to the branch: the supernet's ops run it at (almost) zero
width in its "slice" execution and at full width in its "mask" execution (see
`tunas_keras.models.supernet`). `ZeroBranch`es (the skip of a skippable layer) add nothing and
are never computed.

With `one_hot=True` (the caller promises a one-hot selection) and *kernel-size variants* as
branches (same layer type, same variables, shapes differing only in the square spatial size of
conv kernels), the block runs ONE branch, the largest, with merged weights: every variable is
`Σ_i w_i · centre_pad(v_i)`, which for a one-hot `w` is the chosen branch's variable, padded
with zeros around it (a k×k "same" convolution equals the 7×7 one with the k×k kernel in the
centre, for any stride). With `static_shapes=False` the merged kernel is also cut back to the
chosen size, so the convolution runs at the sampled kernel size.

    >>> block = ChoiceBlock([MaskedDepthwiseConv2D(3), MaskedDepthwiseConv2D(5)])
    >>> outputs = block(features, selection=tf.constant([0.0, 1.0]))   # the 5×5 branch's output

References: Bender et al., CVPR 2020, §4.1, §4.3 (op warmup).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tunas_keras.layers import remat
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


def _spatial_size(variable) -> int:
    return int(variable.shape[0]) if variable.shape.rank == 4 else 0


def kernel_variants(branches) -> bool:
    """Whether the branches differ only in the (odd, square) spatial size of their conv kernels."""
    if len(branches) < 2 or len({type(branch) for branch in branches}) != 1:
        return False
    groups = list(zip(*(branch.trainable_weights for branch in branches)))
    if not groups or any(len(branch.trainable_weights) != len(groups) for branch in branches):
        return False
    for variables in groups:
        shapes = [tuple(variable.shape) for variable in variables]
        if len(set(shapes)) == 1:
            continue
        if any(len(shape) != 4 or shape[0] != shape[1] or shape[0] % 2 == 0 for shape in shapes):
            return False
        if len({shape[2:] for shape in shapes}) != 1:
            return False
    return True


def _centre_pad(value: tf.Tensor, size: int) -> tf.Tensor:
    margin = (size - int(value.shape[0])) // 2
    if margin == 0:
        return value
    return tf.pad(value, [[margin, margin], [margin, margin], [0, 0], [0, 0]])


@keras.utils.register_keras_serializable(package="tunas_keras")
class ChoiceBlock(keras.layers.Layer):
    """The selection-weighted sum of its branches (one-hot: the selected one); no control flow.

    Args:
      branches: a non-empty list of Keras layers with equal output shapes (or outputs that
        broadcast: the supernet runs a branch with weight 0 on one channel). Each is called as
        `branch(inputs, training=...)`, or, when a context is given (supernet ops),
        `branch(inputs, context=context, training=..., gate=gate · w_i)`.
      rematerialize: recompute the branches of a weighted sum in the backward pass instead of
        keeping their activations (`tunas_keras.layers.remat`; the one-hot merged path keeps
        one branch's activations and is not rematerialised).

    Call arguments:
      inputs: a tensor passed to every branch.
      selection: float32 `(len(branches),)`: one-hot, or fractional weights (e.g. `1/n`).
        Gradients do not flow into it.
      context: optional object passed to every branch (the supernet's widths and selections).
      training: passed to the branches.
      one_hot: Python bool; True promises a one-hot `selection`: kernel-size variants then run
        as one branch with merged weights (see the module docstring). Other branches are
        summed as usual (exact for one-hot selections anyway).
      gate: optional float32 scalar passed on (times `w_i`) to branches that take a context:
        the product of the selection weights on the path to this block (1 at the top).
      static_shapes: Python bool; False lets the merged kernel take the chosen (dynamic) size.

    Returns:
      `Σ_i selection[i] · branch_i(inputs)`.
    """

    def __init__(self, branches, rematerialize=False, **kwargs):
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
        self._mergeable = kernel_variants(self.branches)
        super().build(input_shape)

    def _run_branch(self, index, inputs, context, training, gate):
        branch = self.branches[index]
        if context is None:
            return branch(inputs, training=training)
        return branch(inputs, context=context, training=training, gate=gate)

    def _weighted_sum(self, selection, inputs, context, training, gate):
        terms, weights = [], tf.unstack(selection)
        for index, branch in enumerate(self.branches):
            if isinstance(branch, ZeroBranch):
                continue
            weight = weights[index]
            branch_gate = weight if gate is None else gate * weight

            def run(inputs_, index=index, branch_gate=branch_gate):
                return self._run_branch(index, inputs_, context, training, branch_gate)

            outputs = remat.recompute(run)(inputs) if self.rematerialize else run(inputs)
            terms.append((weight, outputs))
        if not terms:
            return tf.zeros_like(inputs)
        total = None
        for weight, outputs in terms:
            # `+` broadcasts: a branch the supernet ran on one channel (weight 0) adds zeros.
            total = weight * outputs if total is None else total + weight * outputs
        return total

    def _merged(self, selection, inputs, context, training, gate, static_shapes):
        """The largest branch, run with every variable merged over the branches (one-hot only)."""
        largest = max(
            range(self.num_branches), key=lambda i: max(map(_spatial_size, self.branches[i].trainable_weights))
        )
        mapping, weights = {}, tf.unstack(selection)
        sizes = [max(map(_spatial_size, branch.trainable_weights)) for branch in self.branches]
        # The chosen kernel size ("slice" runs it at that size): one-hot weights pick it exactly.
        chosen = (
            None if static_shapes else tf.cast(tf.tensordot(selection, [float(size) for size in sizes], 1), tf.int32)
        )
        for variables in zip(*(branch.trainable_weights for branch in self.branches)):
            target = variables[largest]
            size = _spatial_size(target)
            if size and len({tuple(variable.shape) for variable in variables}) > 1:
                merged = tf.add_n([weights[i] * _centre_pad(read_weight(v), size) for i, v in enumerate(variables)])
                if chosen is not None:
                    margin = (size - chosen) // 2
                    merged = tf.slice(merged, tf.stack([margin, margin, 0, 0]), tf.stack([chosen, chosen, -1, -1]))
            else:
                merged = tf.add_n([weights[i] * read_weight(variable) for i, variable in enumerate(variables)])
            mapping[target.ref()] = merged
        with substitute_weights(mapping):
            return self._run_branch(largest, inputs, context, training, gate)

    def call(self, inputs, selection, context=None, training=None, one_hot=False, gate=None, static_shapes=True):
        selection = tf.stop_gradient(tf.cast(selection, tf.float32))
        if selection.shape.rank is not None and selection.shape != (self.num_branches,):
            raise ValueError(
                f"Invalid value for argument `selection`. Expected shape ({self.num_branches},). "
                f"Received: selection.shape={selection.shape}"
            )
        if self.num_branches == 1:
            return self._run_branch(0, inputs, context, training, gate)
        if one_hot and self._mergeable:
            return self._merged(selection, inputs, context, training, gate, static_shapes)
        return self._weighted_sum(selection, inputs, context, training, gate)

    def compute_output_shape(self, input_shape):
        return self.branches[0].compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            branches=[keras.layers.serialize(branch) for branch in self.branches],
            rematerialize=self.rematerialize,
        )
        return config
