"""The supernet's ops: masked / sliced layers arranged like the standalone model's layers.

Every op is a Keras layer called as `op(features, context=context, training=..., gate=...)`:
- `context`, a `supernet_widths.CallContext`, holds the channel masks, the op decisions'
  selection weights and the execution mode of this call (computed once per supernet call from
  the per-decision masks: call-time inputs, never captured at construction);
- `gate` is the product of the selection weights on the path to the op (None at the top
  level). In the "slice" execution an op whose gate is 0 (a branch the sample did not choose)
  runs on `INACTIVE_CHANNELS` channels; its output is multiplied by 0 by the choice above it.

Each op also knows its L2 penalty under the masks (`active_l2`) and how to export its weights,
sliced to an architecture's widths, under the standalone model's layer names (`export`).

References: Bender et al., CVPR 2020, §4.1 (operation collapsing, channel masking).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from tunas_keras.layers.choice import ChoiceBlock, ZeroBranch
from tunas_keras.layers.common import ACTIVATION_FUNCTIONS, conv_initializer
from tunas_keras.layers.masked import MaskedBatchNorm, MaskedConv2D, MaskedDepthwiseConv2D
from tunas_keras.models.supernet_widths import CallContext, Combination


def _channels_shape(channels: int) -> tf.TensorShape:
    return tf.TensorShape([None, None, None, channels])


def _cut(inputs: tf.Tensor, channels, gate) -> tf.Tensor:
    """`inputs` cut to the `channels` an op inside a branch runs on ("slice"; all of them otherwise).

    Only branch ops (gate not None) cut: a branch with weight 0 runs on `INACTIVE_CHANNELS`.
    At the top level the inputs already have the op's input width.
    """
    if gate is None or channels is None:
        return inputs
    return inputs[..., :channels]


def _scaled(weight, gate):
    return weight if gate is None else gate * weight


class SupernetOp(keras.layers.Layer):
    """Base of the supernet ops: `call(features, context, training, gate)`, `active_l2`, `export`."""

    def active_l2(self, context: CallContext) -> tf.Tensor:
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

    def call(self, inputs, context=None, training=None, gate=None):
        input_channels = context.channels(self.input_width, gate)
        output_channels = context.channels(self.output_width, gate)
        output_mask = context.mask(self.output_width)
        outputs = self.conv(
            _cut(inputs, input_channels, gate),
            input_mask=context.mask(self.input_width),
            output_mask=output_mask,
            input_channels=input_channels,
            output_channels=output_channels,
        )
        if self.batch_norm is not None:
            outputs = self.batch_norm(outputs, channel_mask=output_mask, channels=output_channels)
        return outputs

    def active_l2(self, context):
        return self.conv.active_l2(context.mask(self.input_width), context.mask(self.output_width))

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

    def call(self, inputs, context=None, training=None, gate=None):
        channels, mask = context.channels(self.width, gate), context.mask(self.width)
        outputs = self.depthwise(_cut(inputs, channels, gate), channel_mask=mask, channels=channels)
        outputs = self.batch_norm(outputs, channel_mask=mask, channels=channels)
        return ACTIVATION_FUNCTIONS[self.activation](outputs)

    def active_l2(self, context):
        return self.depthwise.active_l2(context.mask(self.width))

    def export(self, prefix, indices):
        channels = self.width.value(indices)
        return {
            prefix + "depthwise": self.depthwise.sliced_weights(channels),
            prefix + "depthwise_bn": self.batch_norm.sliced_weights(channels),
        }


class SqueezeExcite(SupernetOp):
    """Masked squeeze-and-excite (pool → 1×1 → ReLU → 1×1 → sigmoid gate), optionally searched.

    With a `selection` (the decision "no SE / SE") the op computes the weighted sum of its two
    branches in one pass: `x · (w_off + w_on · gate(x))` (exact for one-hot and fractional
    weights; the gate's own layers run at the SE branch's gate `gate · w_on`).
    """

    def __init__(self, inner_width: Combination, hidden_width: Combination, selection=None, **kwargs):
        super().__init__(**kwargs)
        self.inner_width, self.hidden_width, self.selection = inner_width, hidden_width, selection
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

    def _gate_values(self, inputs, context, gate):
        inner, hidden = context.mask(self.inner_width), context.mask(self.hidden_width)
        inner_channels, hidden_channels = (
            context.channels(self.inner_width, gate),
            context.channels(self.hidden_width, gate),
        )
        pooled = tf.reduce_mean(_cut(inputs, inner_channels, gate), axis=[1, 2], keepdims=True)
        values = self.reduce(
            pooled, input_mask=inner, output_mask=hidden, input_channels=inner_channels, output_channels=hidden_channels
        )
        values = self.expand(
            tf.nn.relu(values),
            input_mask=hidden,
            output_mask=inner,
            input_channels=hidden_channels,
            output_channels=inner_channels,
        )
        return tf.sigmoid(values)

    def call(self, inputs, context=None, training=None, gate=None):
        if self.selection is None:
            return inputs * self._gate_values(inputs, context, gate)
        weights = context.selections[self.selection.key]
        # An SE branch run on one channel ("slice", weight 0) broadcasts a zero term.
        return inputs * (weights[0] + weights[1] * self._gate_values(inputs, context, _scaled(weights[1], gate)))

    def active_l2(self, context):
        inner, hidden = context.mask(self.inner_width), context.mask(self.hidden_width)
        l2 = self.reduce.active_l2(inner, hidden) + self.expand.active_l2(hidden, inner)
        return l2 if self.selection is None else context.selections[self.selection.key][1] * l2

    def export(self, prefix, indices):
        if self.selection is not None and self.selection.index(indices) == 0:
            return {}
        inner, hidden = self.inner_width.value(indices), self.hidden_width.value(indices)
        return {
            prefix + "se_reduce": self.reduce.sliced_weights(inner, hidden),
            prefix + "se_expand": self.expand.sliced_weights(hidden, inner),
        }


class Zero(ZeroBranch):
    """The "skip" branch of a skippable layer (no weights, never computed inside a choice)."""

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

    def __init__(self, branches, selection: Combination, rematerialize: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.selection = selection
        self.block = ChoiceBlock(list(branches), rematerialize=rematerialize, name="choice")

    def build(self, input_shape):
        self.block.build(input_shape)
        super().build(input_shape)

    def final_batch_norms(self):
        branches = [branch for branch in self.block.branches if not isinstance(branch, ZeroBranch)]
        return [norm for branch in branches for norm in branch.final_batch_norms()]

    def call(self, inputs, context=None, training=None, gate=None):
        return self.block(
            inputs,
            selection=context.selections[self.selection.key],
            context=context,
            training=training,
            one_hot=context.one_hot,
            gate=gate,
            static_shapes=context.static_shapes,
        )

    def active_l2(self, context):
        weights = context.selections[self.selection.key]
        return tf.add_n(
            [weights[index] * branch.active_l2(context) for index, branch in enumerate(self.block.branches)]
        )

    def export(self, prefix, indices):
        return self.block.branches[self.selection.index(indices)].export(prefix, indices)


class Sequence(SupernetOp):
    """Ops applied one after the other (a separable conv: depthwise op, then 1×1 project + BN)."""

    def __init__(self, parts, **kwargs):
        super().__init__(**kwargs)
        self.parts = list(parts)

    def build(self, input_shape):
        for part in self.parts:
            part.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, context=None, training=None, gate=None):
        outputs = inputs
        for part in self.parts:
            outputs = part(outputs, context=context, training=training, gate=gate)
        return outputs

    def active_l2(self, context):
        return tf.add_n([part.active_l2(context) for part in self.parts])

    def final_batch_norms(self):
        return self.parts[-1].final_batch_norms()

    def export(self, prefix, indices):
        weights = {}
        for part in self.parts:
            weights.update(part.export(prefix, indices))
        return weights


class Activation(SupernetOp):
    """A standalone activation (zero stays zero for all of ours, so masks are preserved)."""

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation

    def call(self, inputs, context=None, training=None, gate=None):
        return ACTIVATION_FUNCTIONS[self.activation](inputs)


def separable(depthwise: SupernetOp, project: ConvBatchNorm, name: str) -> Sequence:
    """Separable conv: a `DepthwiseBatchNorm` (or a kernel `Choice` of them) → 1×1 project + BN."""
    return Sequence([depthwise, project], name=name)


class Bottleneck(Sequence):
    """Inverted bottleneck with operation collapsing: expand / project shared by all kernel and SE choices.

    Parts: 1×1 expand + BN, activation, depthwise op (a kernel `Choice` if searched), optional
    squeeze-and-excite, 1×1 project + BN.
    """

    def __init__(self, expand: ConvBatchNorm, activation: str, depthwise, squeeze_excite, project, **kwargs):
        name = kwargs.pop("name")
        parts = [expand, Activation(activation, name=name + "_expand_act"), depthwise, squeeze_excite, project]
        super().__init__([part for part in parts if part is not None], name=name, **kwargs)

    @property
    def inner_width(self) -> Combination:
        return self.parts[0].output_width

    def split_after_expansion(self) -> tuple:
        """`(expansion, rest)`: two ops whose sequence is this one (the expansion output is SSDLite's C4)."""
        return Sequence(self.parts[:2], name=self.name + "_expansion"), Sequence(self.parts[2:], name=self.name)


class Residual(SupernetOp):
    """`inputs + op(inputs)`; with `op = Choice([layer, Zero])` a skippable layer."""

    def __init__(self, op: SupernetOp, **kwargs):
        super().__init__(**kwargs)
        self.op = op

    def build(self, input_shape):
        self.op.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, context=None, training=None, gate=None):
        # A skipped layer's branch ("slice", weight 0) is one zero channel: it broadcasts.
        return inputs + self.op(inputs, context=context, training=training, gate=gate)

    def zero_init(self) -> None:
        """Sets the γ of every batch norm that ends the residual branch to 0 (the block starts as identity)."""
        for norm in self.op.final_batch_norms():
            norm.gamma.assign(tf.zeros_like(norm.gamma))

    def active_l2(self, context):
        return self.op.active_l2(context)

    def export(self, prefix, indices):
        return self.op.export(prefix, indices)
