"""The supernet planner: a search space's spec tree → supernet ops, widths and selections.

How decisions are implemented (paper §4.1, reference implementation):
- `filters` and `expansion` decisions: channel masking (`Combination.channel_mask`); the inner
  width of a bottleneck is `scale_filters(input width, expansion)` of the masked input width.
- every other decision (kernel size, squeeze-and-excite, keep/skip, a whole-op choice) is an
  op decision: a `Choice` (the weighted sum of its branches), or for squeeze-and-excite the
  one-pass `SqueezeExcite(selection=...)`.
- operation collapsing (`weight_sharing="aggressive"`): the 1×1 expand / project convs of a
  bottleneck are shared by all kernel sizes and SE choices; each kernel size has its own
  depthwise conv. `weight_sharing="none"` (space `proxyless` only; paper Appendix G): every
  (kernel, expansion) combination is its own bottleneck with its own weights, selected by the
  outer product of the expansion and kernel masks (op code `3·e + k`, as the reference).

    >>> plan = plan_supernet(space, input_channels=3)
    >>> plan.entries[0]          # ("op", ConvBatchNorm, "block0_layer0_")
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tunas_keras import specs
from tunas_keras.models import supernet_blocks as blocks
from tunas_keras.models.standalone import C4_INPUT_STRIDE
from tunas_keras.models.supernet_widths import Combination, constant_width, squeeze_excite_width
from tunas_keras.schema import OneOf, SearchSpace

WEIGHT_SHARING_MODES = ("aggressive", "none")
UNSHARED_SPACES = ("proxyless",)


@dataclasses.dataclass
class Plan:
    """The planned supernet.

    Attributes:
      entries: `(kind, value, prefix)` in network order: `("op", op, prefix)`,
        `("endpoint", stride, prefix)` or `("pool", None, prefix)`; `prefix` is the standalone
        model's layer-name prefix of that layer.
      widths: `{key: Combination}` of every width an op reads.
      selections: `{key: Combination}` of every op decision's branch weights.
      feature_width: the width of the features before the classifier.
      endpoint_widths: `{stride or "c4" / "c5": Combination}`, the width of the last endpoint at
        each stride and of SSDLite's C4 / C5 (`standalone.DETECTION_ENDPOINTS`).
    """

    entries: list
    widths: dict
    selections: dict
    feature_width: Combination
    endpoint_widths: dict


class _Planner:
    """Turns a spec tree with `OneOf`s into supernet ops (one traversal, keyed by decision path)."""

    def __init__(self, space: SearchSpace, weight_sharing: str, rematerialize: bool):
        self.space = space
        self.weight_sharing = weight_sharing
        self.rematerialize = rematerialize
        self.decision_at = {decision.path: position for position, decision in enumerate(space.decisions)}
        self.widths: dict = {}
        self.selections: dict = {}
        self.entries: list = []
        self.endpoint_widths: dict = {}
        self.stride = 1

    def decision(self, path: tuple) -> int:
        return self.decision_at[path]

    def width(self, width: Combination) -> Combination:
        self.widths[width.key] = width
        return width

    def selection(self, factors: tuple) -> Combination:
        shape = tuple(self.space.decisions[factor].num_choices for factor in factors)
        selection = Combination(factors, shape)
        self.selections[selection.key] = selection
        return selection

    def filters(self, value, path: tuple) -> Combination:
        if isinstance(value, OneOf):
            position = self.decision(path)
            return self.width(Combination((position,), (len(value.choices),), tuple(value.choices)))
        return self.width(constant_width(value))

    def plan(self, network: specs.Network, input_channels: int) -> Plan:
        width = self.width(constant_width(input_channels))
        for block_index, block in enumerate(network.blocks):
            block_width = self.filters(block.filters, ("blocks", block_index, "filters"))
            for layer_index, layer in enumerate(block.layers):
                prefix = f"block{block_index}_layer{layer_index}_"
                path = ("blocks", block_index, "layers", layer_index)
                width = self.layer(layer, path, width, block_width, prefix)
        return Plan(self.entries, dict(self.widths), dict(self.selections), width, dict(self.endpoint_widths))

    def layer(self, spec, path, input_width, output_width, prefix) -> Combination:
        """Plans one top-level layer spec; returns its output width."""
        if isinstance(spec, specs.Endpoint):
            self.entries.append(("endpoint", self.stride, prefix))
            self.endpoint_widths[self.stride] = input_width
            return input_width
        if isinstance(spec, specs.GlobalPool):
            self.entries.append(("endpoint", "c5", prefix))  # SSDLite's C5: the pool's input
            self.endpoint_widths["c5"] = input_width
            self.entries.append(("pool", None, prefix))
            return input_width
        input_stride = self.stride
        op, width = self.op(spec, path, input_width, output_width, prefix)
        if self._is_c4_bottleneck(op, input_stride):
            expansion, rest = op.split_after_expansion()
            self.entries += [("op", expansion, prefix), ("endpoint", "c4", prefix), ("op", rest, prefix)]
            self.endpoint_widths["c4"] = op.inner_width
        else:
            self.entries.append(("op", op, prefix))
        return width

    def _is_c4_bottleneck(self, op, input_stride: int) -> bool:
        """The first top-level bottleneck from stride 16 to 32 (standalone.C4_INPUT_STRIDE): C4 is its expansion."""
        first = "c4" not in self.endpoint_widths
        return (
            first
            and isinstance(op, blocks.Bottleneck)
            and input_stride == C4_INPUT_STRIDE
            and self.stride == 2 * input_stride
        )

    def op(self, spec, path, input_width, output_width, prefix):
        """A `SupernetOp` for `spec` and its output width, through `OP_PLANNERS`."""
        if isinstance(spec, OneOf):
            return self._one_of(spec, path, input_width, output_width, prefix)
        planner = OP_PLANNERS.get(type(spec))
        if planner is None:
            raise ValueError(
                f"Invalid layer spec for the supernet. Expected one of {[kind.__name__ for kind in OP_PLANNERS]}. "
                f"Received: {type(spec).__name__}"
            )
        return planner(self, spec, path, input_width, output_width, prefix)

    def choice(self, branches, factors: tuple, name: str) -> blocks.Choice:
        return blocks.Choice(branches, self.selection(factors), rematerialize=self.rematerialize, name=name)

    def _one_of(self, spec: OneOf, path, input_width, output_width, prefix):
        # Keras names must not repeat among the branches (e.g. three whole separable convs).
        def branch_prefix(index):
            return prefix if len(spec.choices) == 1 else f"{prefix}{spec.tag}{index}_"

        stride = self.stride
        planned = []
        for index, choice in enumerate(spec.choices):
            self.stride = stride  # every branch starts at the same stride
            planned.append(
                self.op(choice, path + (f"{spec.tag}={index}",), input_width, output_width, branch_prefix(index))
            )
        if len(planned) == 1:
            return planned[0]
        return self.choice([op for op, _ in planned], (self.decision(path),), prefix + spec.tag), planned[0][1]

    def kernel_op(self, kernel_size, path, make: Callable[[int], Any], prefix):
        """One op per kernel size (own weights, no centre-cropping), in a `Choice` if searched."""
        if not isinstance(kernel_size, OneOf):
            return make(kernel_size)
        factors = (self.decision(path + ("kernel_size",)),)
        return self.choice([make(size) for size in kernel_size.choices], factors, prefix + "kernel_choice")


def _plan_conv(planner: _Planner, spec: specs.Conv, path, input_width, output_width, prefix):
    def make(kernel_size):
        return blocks.ConvBatchNorm(
            kernel_size, spec.strides, input_width, output_width, spec.use_batch_norm, name=f"{prefix}conv{kernel_size}"
        )

    op = planner.kernel_op(spec.kernel_size, path, make, prefix)
    planner.stride *= spec.strides
    return op, output_width


def _plan_separable_conv(planner: _Planner, spec: specs.SeparableConv, path, input_width, output_width, prefix):
    def make(kernel_size):
        return blocks.DepthwiseBatchNorm(
            kernel_size, spec.strides, input_width, spec.activation, name=f"{prefix}depthwise{kernel_size}"
        )

    depthwise = planner.kernel_op(spec.kernel_size, path, make, prefix)
    project = blocks.ConvBatchNorm(
        1, 1, input_width, output_width, names=("project", "project_bn"), name=prefix + "project"
    )
    planner.stride *= spec.strides
    return blocks.separable(depthwise, project, name=prefix + "separable"), output_width


def _inner_width(planner: _Planner, spec: specs.Bottleneck, path, input_width) -> Combination:
    if spec.expanded_filters is not None:
        return planner.width(constant_width(spec.expanded_filters))
    expansion = spec.expansion
    if isinstance(expansion, OneOf):
        factor, choices = planner.decision(path + ("expansion",)), expansion.choices
        width = input_width.times(factor, len(choices), lambda value, index: specs.scale_filters(value, choices[index]))
    else:
        width = input_width.mapped(lambda value: specs.scale_filters(value, expansion))
    return planner.width(width)


def _plan_squeeze_excite(planner: _Planner, spec: specs.Bottleneck, path, inner_width, prefix):
    if spec.squeeze_excite is False:
        return None
    hidden = planner.width(squeeze_excite_width(inner_width))
    if spec.squeeze_excite is True:
        return blocks.SqueezeExcite(inner_width, hidden, name=prefix + "se")
    if not isinstance(spec.squeeze_excite, OneOf) or spec.squeeze_excite.choices != (False, True):
        raise ValueError(
            "Invalid value for `squeeze_excite`. Expected a bool or OneOf((False, True)). "
            f"Received: squeeze_excite={spec.squeeze_excite!r}"
        )
    selection = planner.selection((planner.decision(path + ("squeeze_excite",)),))
    return blocks.SqueezeExcite(inner_width, hidden, selection=selection, name=prefix + "se_choice")


def _plan_bottleneck(planner: _Planner, spec: specs.Bottleneck, path, input_width, output_width, prefix):
    if planner.weight_sharing == "none" and isinstance(spec.expansion, OneOf):
        return _plan_unshared_bottleneck(planner, spec, path, input_width, output_width, prefix)
    inner_width = _inner_width(planner, spec, path, input_width)
    expand = blocks.ConvBatchNorm(1, 1, input_width, inner_width, names=("expand", "expand_bn"), name=prefix + "expand")

    def make(kernel_size):
        return blocks.DepthwiseBatchNorm(
            kernel_size, spec.strides, inner_width, spec.activation, name=f"{prefix}depthwise{kernel_size}"
        )

    depthwise = planner.kernel_op(spec.kernel_size, path, make, prefix)
    squeeze_excite = _plan_squeeze_excite(planner, spec, path, inner_width, prefix)
    project = blocks.ConvBatchNorm(
        1, 1, inner_width, output_width, names=("project", "project_bn"), name=prefix + "project"
    )
    planner.stride *= spec.strides
    op = blocks.Bottleneck(expand, spec.activation, depthwise, squeeze_excite, project, name=prefix + "bottleneck")
    return op, output_width


def _plan_unshared_bottleneck(planner: _Planner, spec: specs.Bottleneck, path, input_width, output_width, prefix):
    """ProxylessNAS-style: one complete bottleneck per (expansion, kernel) pair, op = 3·e + k."""
    if not isinstance(spec.kernel_size, OneOf) or spec.squeeze_excite not in (False, True):
        raise ValueError(f"weight_sharing='none' expects kernel and expansion decisions at {prefix!r}")
    branches = []
    stride = planner.stride
    for expansion in spec.expansion.choices:
        for kernel_size in spec.kernel_size.choices:
            planner.stride = stride
            fixed = specs.Bottleneck(kernel_size, expansion, spec.squeeze_excite, spec.strides, spec.activation)
            branch_prefix = f"{prefix}e{expansion}_k{kernel_size}_"
            op, _ = _plan_bottleneck(planner, fixed, path, input_width, output_width, branch_prefix)
            branches.append(op)
    factors = (planner.decision(path + ("expansion",)), planner.decision(path + ("kernel_size",)))
    return planner.choice(branches, factors, prefix + "path_choice"), output_width


def _plan_residual(planner: _Planner, spec: specs.Residual, path, input_width, output_width, prefix):
    op, width = planner.op(spec.layer, path + ("layer",), input_width, output_width, prefix)
    if width != input_width:
        raise ValueError(f"Invalid residual at {prefix!r}: the layer must keep the width of its input.")
    return blocks.Residual(op, name=prefix + "residual"), input_width


def _plan_zero(planner: _Planner, spec: specs.Zero, path, input_width, output_width, prefix):
    del planner, spec, path, output_width
    return blocks.Zero(name=prefix + "zero"), input_width


def _plan_activation(planner: _Planner, spec: specs.Activation, path, input_width, output_width, prefix):
    del planner, path, output_width
    return blocks.Activation(spec.activation, name=prefix + spec.activation), input_width


OP_PLANNERS: dict[type, Callable] = {
    specs.Conv: _plan_conv,
    specs.SeparableConv: _plan_separable_conv,
    specs.Bottleneck: _plan_bottleneck,
    specs.Residual: _plan_residual,
    specs.Zero: _plan_zero,
    specs.Activation: _plan_activation,
}


def plan_supernet(
    space: SearchSpace, input_channels: int, weight_sharing: str = "aggressive", rematerialize: bool = False
) -> Plan:
    """Plans the supernet ops of `space` for images with `input_channels` channels."""
    return _Planner(space, weight_sharing, rematerialize).plan(space.spec, input_channels)
