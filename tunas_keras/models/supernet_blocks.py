"""Building blocks of the weight-sharing supernet: width algebra and the masked ops.

Widths that depend on decisions are `Combination`s: one candidate value per combination of the
choices of some decisions (e.g. a bottleneck's inner width depends on the input block's
`filters` and on the layer's `expansion`). Its channel mask is linear in each decision mask:

    m[c] = sum_k w_k · [c < value_k],   w = outer product of the decisions' masks (flattened)

so one-hot masks select exactly the chosen width and fractional masks also work.

Every op here is a Keras layer called as `op(features, context=context, training=...)`, where
`context = {"channels": {key: mask}, "selections": {key: weights}}` is computed once per
supernet call from the per-decision masks (call-time inputs, never captured at construction).
Each op also knows its active L2 penalty (`active_l2(context)`) and how to export its weights,
sliced to an architecture's widths, under the standalone model's layer names (`export`).

References: Bender et al., CVPR 2020, §4.1 (operation collapsing, channel masking).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tunas_keras.layers.choice import ChoiceBlock, ZeroBranch
from tunas_keras.layers.common import ACTIVATION_FUNCTIONS, conv_initializer
from tunas_keras.layers.masked import MaskedBatchNorm, MaskedConv2D, MaskedDepthwiseConv2D
from tunas_keras.specs import make_divisible


@dataclasses.dataclass(frozen=True)
class Combination:
    """A quantity that depends on some decisions: one value per combination of their choices.

    Attributes:
      factors: positions of the decisions it depends on (in `space.decisions`).
      shape: their numbers of choices.
      values: for widths, the width of each combination (row-major over `shape`).
    """

    factors: tuple = ()
    shape: tuple = ()
    values: tuple = ()

    @property
    def key(self) -> str:
        return f"{self.factors}:{self.values}"

    @property
    def max_value(self) -> int:
        return max(self.values)

    def weights(self, masks: Sequence[tf.Tensor]) -> tf.Tensor:
        """Outer product of the factors' masks, flattened (row-major); `[1.]` when constant."""
        result = tf.ones([1], tf.float32)
        for factor in self.factors:
            result = tf.reshape(result[:, None] * masks[factor][None, :], [-1])
        return result

    def channel_mask(self, masks: Sequence[tf.Tensor]) -> tf.Tensor:
        """`(max_value,)` float32: the weighted sum of the k-of-n masks of the candidate widths."""
        if not self.factors:
            return tf.ones([self.values[0]], tf.float32)
        table = np.arange(self.max_value)[None, :] < np.asarray(self.values)[:, None]
        return tf.tensordot(self.weights(masks), tf.constant(table, tf.float32), 1)

    def index(self, indices: Sequence[int]) -> int:
        """The flat combination index of an architecture's `indices`."""
        if not self.factors:
            return 0
        return int(np.ravel_multi_index([indices[factor] for factor in self.factors], self.shape))

    def value(self, indices: Sequence[int]) -> int:
        return self.values[self.index(indices)]

    def mapped(self, function) -> "Combination":
        """The same dependence with every value passed through `function`."""
        return Combination(self.factors, self.shape, tuple(function(value) for value in self.values))

    def times(self, factor: Optional[int], num_choices: int, function) -> "Combination":
        """A new width depending also on decision `factor`: `function(value, choice_index)`."""
        if factor is None:
            return self.mapped(lambda value: function(value, 0))
        values = tuple(function(value, choice) for value in self.values for choice in range(num_choices))
        return Combination(self.factors + (factor,), self.shape + (num_choices,), values)


def constant_width(value: int) -> Combination:
    return Combination(values=(int(value),))


def _channels_shape(channels: int) -> tf.TensorShape:
    return tf.TensorShape([None, None, None, channels])


class SupernetOp(keras.layers.Layer):
    """Base of the supernet ops: `call(features, context, training)`, `active_l2`, `export`."""

    def active_l2(self, context) -> tf.Tensor:
        del context
        return tf.constant(0.0)

    def export(self, prefix: str, indices) -> dict:
        """`{standalone layer name: [weights]}` for the architecture `indices`."""
        del prefix, indices
        return {}

    def final_batch_norms(self) -> list:
        """The batch norms whose output is this op's output (one per branch; none for Zero)."""
        raise ValueError(f"{type(self).__name__} {self.name!r} does not end in batch norm")


class ConvBatchNorm(SupernetOp):
    """k×k masked conv (+ masked batch norm, or + bias when `use_batch_norm` is False)."""

    def __init__(
        self, kernel_size, strides, input_width, output_width, use_batch_norm=True, names=("conv", "bn"), **kwargs
    ):
        super().__init__(**kwargs)
        self.input_width, self.output_width, self.names = input_width, output_width, names
        self.conv = MaskedConv2D(
            output_width.max_value,
            kernel_size,
            strides,
            use_bias=not use_batch_norm,
            kernel_initializer=conv_initializer(),
            name=names[0],
        )
        self.batch_norm = MaskedBatchNorm(name=names[1]) if use_batch_norm else None

    def final_batch_norms(self):
        return [self.batch_norm] if self.batch_norm is not None else super().final_batch_norms()

    def build(self, input_shape):
        self.conv.build(_channels_shape(self.input_width.max_value))
        if self.batch_norm is not None:
            self.batch_norm.build(_channels_shape(self.output_width.max_value))
        super().build(input_shape)

    def call(self, inputs, context=None, training=None):
        output_mask = context["channels"][self.output_width.key]
        outputs = self.conv(inputs, input_mask=context["channels"][self.input_width.key], output_mask=output_mask)
        if self.batch_norm is not None:
            outputs = self.batch_norm(outputs, channel_mask=output_mask, training=training)
        return outputs

    def active_l2(self, context):
        channels = context["channels"]
        return self.conv.active_l2(channels[self.input_width.key], channels[self.output_width.key])

    def export(self, prefix, indices):
        output_channels = self.output_width.value(indices)
        weights = {prefix + self.names[0]: self.conv.sliced_weights(self.input_width.value(indices), output_channels)}
        if self.batch_norm is not None:
            weights[prefix + self.names[1]] = self.batch_norm.sliced_weights(output_channels)
        return weights


class DepthwiseBatchNorm(SupernetOp):
    """k×k masked depthwise conv + masked batch norm + activation (one kernel-size branch)."""

    def __init__(self, kernel_size, strides, width, activation, **kwargs):
        super().__init__(**kwargs)
        self.width, self.activation = width, activation
        self.depthwise = MaskedDepthwiseConv2D(kernel_size, strides, name="depthwise")
        self.batch_norm = MaskedBatchNorm(name="depthwise_bn")

    def build(self, input_shape):
        self.depthwise.build(_channels_shape(self.width.max_value))
        self.batch_norm.build(_channels_shape(self.width.max_value))
        super().build(input_shape)

    def call(self, inputs, context=None, training=None):
        mask = context["channels"][self.width.key]
        outputs = self.batch_norm(self.depthwise(inputs, channel_mask=mask), channel_mask=mask, training=training)
        return ACTIVATION_FUNCTIONS[self.activation](outputs)

    def active_l2(self, context):
        return self.depthwise.active_l2(context["channels"][self.width.key])

    def export(self, prefix, indices):
        channels = self.width.value(indices)
        return {
            prefix + "depthwise": self.depthwise.sliced_weights(channels),
            prefix + "depthwise_bn": self.batch_norm.sliced_weights(channels),
        }


class SqueezeExcite(SupernetOp):
    """Masked squeeze-and-excite: pool → 1×1 (bias) → ReLU → 1×1 (bias) → sigmoid gate."""

    def __init__(self, inner_width, hidden_width, **kwargs):
        super().__init__(**kwargs)
        self.inner_width, self.hidden_width = inner_width, hidden_width
        self.reduce = MaskedConv2D(
            hidden_width.max_value, 1, use_bias=True, kernel_initializer=conv_initializer(), name="se_reduce"
        )
        self.expand = MaskedConv2D(
            inner_width.max_value, 1, use_bias=True, kernel_initializer=conv_initializer(), name="se_expand"
        )

    def build(self, input_shape):
        self.reduce.build(_channels_shape(self.inner_width.max_value))
        self.expand.build(_channels_shape(self.hidden_width.max_value))
        super().build(input_shape)

    def call(self, inputs, context=None, training=None):
        inner, hidden = context["channels"][self.inner_width.key], context["channels"][self.hidden_width.key]
        gate = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
        gate = tf.nn.relu(self.reduce(gate, input_mask=inner, output_mask=hidden))
        gate = tf.sigmoid(self.expand(gate, input_mask=hidden, output_mask=inner))
        return inputs * gate

    def active_l2(self, context):
        inner, hidden = context["channels"][self.inner_width.key], context["channels"][self.hidden_width.key]
        return self.reduce.active_l2(inner, hidden) + self.expand.active_l2(hidden, inner)

    def export(self, prefix, indices):
        inner, hidden = self.inner_width.value(indices), self.hidden_width.value(indices)
        return {
            prefix + "se_reduce": self.reduce.sliced_weights(inner, hidden),
            prefix + "se_expand": self.expand.sliced_weights(hidden, inner),
        }


class Identity(SupernetOp):
    """The "no squeeze-and-excite" branch."""

    def call(self, inputs, context=None, training=None):
        return inputs


class Zero(ZeroBranch):
    """The "skip" branch of a skippable layer (no weights)."""

    def active_l2(self, context=None):
        return tf.constant(0.0)

    def export(self, prefix, indices):
        return {}


class Choice(SupernetOp):
    """An op decision: a `ChoiceBlock` over `branches`, selected by `selection` (a `Combination`).

    `active_l2` weights each branch's penalty by its selection weight, as the reference's
    `Switch` masks each option's regulariser by its mask entry: a one-hot selection counts the
    chosen branch only; under op warmup each of n branches counts 1/n (nested choices multiply).
    The reference takes the maximum over options for a variable that several options share; no
    two branches of our choices share a variable, so the weighted sum is the same thing.
    """

    def __init__(self, branches, selection: Combination, **kwargs):
        super().__init__(**kwargs)
        self.selection = selection
        self.block = ChoiceBlock(list(branches), name="choice")

    def build(self, input_shape):
        self.block.build(input_shape)
        super().build(input_shape)

    def final_batch_norms(self):
        branches = [branch for branch in self.block.branches if not isinstance(branch, ZeroBranch)]
        return [norm for branch in branches for norm in branch.final_batch_norms()]

    def call(self, inputs, context=None, training=None):
        selection = context["selections"][self.selection.key]
        one_hot = bool(context.get("one_hot", False))
        return self.block(inputs, selection=selection, context=context, training=training, one_hot=one_hot)

    def active_l2(self, context):
        weights = context["selections"][self.selection.key]
        return tf.add_n([weights[index] * branch.active_l2(context) for index, branch in enumerate(self.block.branches)])

    def export(self, prefix, indices):
        return self.block.branches[self.selection.index(indices)].export(prefix, indices)


class Separable(SupernetOp):
    """Separable conv: depthwise op (a `DepthwiseBatchNorm` or a kernel `Choice`) → 1×1 project + BN."""

    def __init__(self, depthwise: SupernetOp, project: ConvBatchNorm, **kwargs):
        super().__init__(**kwargs)
        self.depthwise, self.project = depthwise, project

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        self.project.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, context=None, training=None):
        outputs = self.depthwise(inputs, context=context, training=training)
        return self.project(outputs, context=context, training=training)

    def active_l2(self, context):
        return self.depthwise.active_l2(context) + self.project.active_l2(context)

    def final_batch_norms(self):
        return self.project.final_batch_norms()

    def export(self, prefix, indices):
        return {**self.depthwise.export(prefix, indices), **self.project.export(prefix, indices)}


class Bottleneck(SupernetOp):
    """Inverted bottleneck with operation collapsing: shared 1×1 expand / project convs.

    Args:
      expand: 1×1 conv + BN from the input width to the inner width.
      activation: activation after expand and depthwise.
      depthwise: a `DepthwiseBatchNorm` or a kernel-size `Choice` of them (own weights per size).
      squeeze_excite: None, a `SqueezeExcite`, or a `Choice` of [`Identity`, `SqueezeExcite`].
      project: 1×1 conv + BN from the inner width to the output width.
    """

    def __init__(self, expand, activation, depthwise, squeeze_excite, project, **kwargs):
        super().__init__(**kwargs)
        self.expand, self.activation, self.depthwise = expand, activation, depthwise
        self.squeeze_excite, self.project = squeeze_excite, project

    def _parts(self):
        return [part for part in (self.expand, self.depthwise, self.squeeze_excite, self.project) if part is not None]

    def build(self, input_shape):
        for part in self._parts():
            part.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, context=None, training=None):
        outputs = ACTIVATION_FUNCTIONS[self.activation](self.expand(inputs, context=context, training=training))
        outputs = self.depthwise(outputs, context=context, training=training)
        if self.squeeze_excite is not None:
            outputs = self.squeeze_excite(outputs, context=context, training=training)
        return self.project(outputs, context=context, training=training)

    def active_l2(self, context):
        return tf.add_n([part.active_l2(context) for part in self._parts()])

    def final_batch_norms(self):
        return self.project.final_batch_norms()

    def export(self, prefix, indices):
        weights = {}
        for part in self._parts():
            weights.update(part.export(prefix, indices))
        return weights


class Residual(SupernetOp):
    """`inputs + op(inputs)`; with `op = Choice([layer, Zero])` a skippable layer."""

    def __init__(self, op: SupernetOp, **kwargs):
        super().__init__(**kwargs)
        self.op = op

    def build(self, input_shape):
        self.op.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, context=None, training=None):
        return inputs + self.op(inputs, context=context, training=training)

    def zero_init(self) -> None:
        """Sets the γ of every batch norm that ends the residual branch to 0 (the block starts as identity)."""
        for norm in self.op.final_batch_norms():
            norm.gamma.assign(tf.zeros_like(norm.gamma))

    def active_l2(self, context):
        return self.op.active_l2(context)

    def export(self, prefix, indices):
        return self.op.export(prefix, indices)


class Activation(SupernetOp):
    """A standalone activation (zero stays zero for all of ours, so masks are preserved)."""

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation

    def call(self, inputs, context=None, training=None):
        return ACTIVATION_FUNCTIONS[self.activation](inputs)


def squeeze_excite_width(inner: Combination) -> Combination:
    """Hidden width of the SE module: `make_divisible(inner * 0.25)` of the CHOSEN inner width."""
    return inner.mapped(lambda value: make_divisible(value * 0.25))

