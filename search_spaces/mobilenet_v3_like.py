"""The MobileNetV3-like search space (paper Table 2, third row); 86 decisions, ~8.5e42 points.

Stem conv (kernel {3, 5}, stride 2, swish6) and a skippable residual separable conv; five blocks
of one bottleneck + three skippable bottlenecks, each searching kernel {3, 5, 7}, expansion
{×1 … ×6} and squeeze-and-excite {off, on}; MobileNetV3's compact head. Every width is searched
over `base × {1/2 … 2}`.
"""

from __future__ import annotations

from search_spaces.common import KERNEL_SIZES, filter_choices
from tunas_keras.schema import OneOf, SearchSpace
from tunas_keras.specs import (
    RELU,
    SWISH6,
    Activation,
    Block,
    Bottleneck,
    Conv,
    Endpoint,
    GlobalPool,
    Network,
    SeparableConv,
    skippable,
)

TARGET_LATENCY_MS = 57.0
EXPANSIONS = (1, 2, 3, 4, 5, 6)


def bneck(activation: str, strides: int = 1) -> Bottleneck:
    return Bottleneck(
        kernel_size=OneOf(KERNEL_SIZES, "kernel_size"),
        expansion=OneOf(EXPANSIONS, "expansion"),
        squeeze_excite=OneOf((False, True), "squeeze_excite"),
        strides=strides,
        activation=activation,
    )


def block(*, strides: int, activation: str, base_filters: int, endpoint: bool) -> Block:
    """`bneck(stride)` + 3 skippable `bneck`s; the first layer has no keep/skip decision."""
    layers = (bneck(activation, strides),) + tuple(skippable(bneck(activation)) for _ in range(3))
    return Block(layers + ((Endpoint(),) if endpoint else ()), filter_choices(base_filters))


def build_network() -> Network:
    stem = Block(
        (
            Conv(kernel_size=OneOf((3, 5), "kernel_size"), strides=2),
            Activation(SWISH6),
            skippable(SeparableConv(kernel_size=OneOf(KERNEL_SIZES, "kernel_size"), activation=RELU)),
            Endpoint(),
        ),
        filter_choices(16),
    )
    # fmt: off
    blocks = (
        block(strides=2, activation=RELU,   base_filters=16,  endpoint=True),
        block(strides=2, activation=RELU,   base_filters=32,  endpoint=True),
        block(strides=2, activation=SWISH6, base_filters=64,  endpoint=False),
        block(strides=1, activation=SWISH6, base_filters=128, endpoint=True),
        block(strides=2, activation=SWISH6, base_filters=256, endpoint=True),
    )
    # fmt: on
    head1 = Block((Conv(kernel_size=1), Activation(SWISH6), GlobalPool()), filter_choices(512))
    head2 = Block((Conv(kernel_size=1, use_batch_norm=False), Activation(SWISH6)), filter_choices(1024))
    return Network((stem, *blocks, head1, head2))


MOBILENET_V3_LIKE = SearchSpace(
    name="mobilenet_v3_like",
    spec=build_network(),
    target_latency=TARGET_LATENCY_MS,
    reference_name="mobilenet_v3_like_search",
)
