"""Typed, immutable layer specs from which search spaces and reference models are written.

A field of a spec holds either a plain value or a `OneOf` of values. The output width of a layer
is not a field of the layer: it is the `filters` of the `Block` that contains the layer (the
reference convention: layers joined by a residual share a filter count). Field order matters:
it is the decision order and the order of the Kronecker factors in the Pixel-1 cost features
(kernel size, then expansion, then squeeze-and-excite).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from tunas_keras.schema import OneOf

RELU = "relu"
RELU6 = "relu6"
SWISH6 = "swish6"  # x * relu6(x + 3) / 6, a.k.a. hard swish.
ACTIVATIONS = (RELU, RELU6, SWISH6)

IntOrChoice = Union[int, OneOf]


def scale_filters(filters: float, multiplier: float) -> int:
    """Rounds `filters * multiplier` to the nearest multiple of 8 (at least 8), as the reference."""
    return max(8, int(filters * multiplier / 8 + 0.5) * 8)


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNetV3 rounding (used for the squeeze-and-excite width): never more than 10 % down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


SQUEEZE_EXCITE_RATIO = 0.25


def squeeze_excite_filters(inner_filters: int) -> int:
    """Hidden width of a squeeze-and-excite module on `inner_filters` channels (MobileNetV3)."""
    return make_divisible(inner_filters * SQUEEZE_EXCITE_RATIO)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Invalid value for argument `activation`. Expected one of {ACTIVATIONS}. "
            f"Received: activation={activation!r}"
        )


@dataclasses.dataclass(frozen=True)
class Conv:
    """k×k convolution to the block's filters, + batch norm unless `use_batch_norm` is False.

    The activation is a separate `Activation` layer (the Pixel-1 cost model counts it apart).
    """

    kernel_size: IntOrChoice = 3
    strides: int = 1
    use_batch_norm: bool = True


@dataclasses.dataclass(frozen=True)
class SeparableConv:
    """k×k depthwise conv + BN + activation → 1×1 conv to the block's filters + BN (no activation)."""

    kernel_size: IntOrChoice = 3
    strides: int = 1
    activation: str = RELU

    def __post_init__(self):
        _check_activation(self.activation)


@dataclasses.dataclass(frozen=True)
class Bottleneck:
    """Inverted bottleneck (MobileNetV2 / V3 "bneck").

    1×1 expand conv + BN + activation → k×k depthwise conv (stride) + BN + activation →
    [squeeze-and-excite] → 1×1 project conv to the block's filters + BN (no activation).

    Args:
      kernel_size: depthwise kernel size.
      expansion: inner width as a multiple of the layer's *input* width (rounded to 8).
      squeeze_excite: whether to add a squeeze-and-excite module (hidden width
        `squeeze_excite_filters(inner)`, ReLU inside, sigmoid gate).
      strides: depthwise stride.
      activation: one of `ACTIVATIONS`.
      expanded_filters: absolute inner width; overrides `expansion` (MobileNetV3-Large's sizes
        are not multiples of the input width).
    """

    kernel_size: IntOrChoice = 3
    expansion: Any = 6
    squeeze_excite: Any = False
    strides: int = 1
    activation: str = RELU
    expanded_filters: Optional[int] = None

    def __post_init__(self):
        _check_activation(self.activation)

    def inner_filters(self, input_filters: int) -> int:
        if self.expanded_filters is not None:
            return self.expanded_filters
        return scale_filters(input_filters, self.expansion)


@dataclasses.dataclass(frozen=True)
class Zero:
    """The "skip" option of a skippable layer: the branch outputs nothing (the residual remains)."""


@dataclasses.dataclass(frozen=True)
class Residual:
    """`layer(x) + x`. With `layer = OneOf([op, Zero()])` this is a skippable layer."""

    layer: Any


@dataclasses.dataclass(frozen=True)
class Activation:
    """A standalone activation layer."""

    activation: str = RELU

    def __post_init__(self):
        _check_activation(self.activation)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Marks a feature map that a detection head may read (no computation)."""


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    """Global average pooling; the spatial size becomes 1×1 (kept as a 1×1 map)."""


@dataclasses.dataclass(frozen=True)
class Block:
    """A run of layers that share one output width `filters`."""

    layers: tuple
    filters: IntOrChoice


@dataclasses.dataclass(frozen=True)
class Network:
    """A whole backbone: blocks in order. The classifier (dropout + dense) is added by builders."""

    blocks: tuple


def skippable(layer: Any) -> Residual:
    """A layer the search may drop: `Residual(OneOf([layer, Zero()]))`."""
    return Residual(OneOf((layer, Zero()), "op"))


def fixed_op(layer: Any) -> OneOf:
    """A single-choice op decision (the reference keeps one for non-skippable ProxylessNAS layers)."""
    return OneOf((layer,), "op")
