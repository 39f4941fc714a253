"""The ProxylessNAS search space (paper Table 2, first row) and its enlarged variant.

`proxyless`: MobileNetV2 layout with ProxylessNAS' hand-tuned widths; every inverted bottleneck
searches its depthwise kernel {3, 5, 7} and expansion {×3, ×6}; layers 2-4 of blocks 2-6 may be
skipped. `proxyless_enlarged`: the same layers, with every block's width searched over
`base × {1/2, 5/8, 3/4, 1, 5/4, 3/2, 2}`. 73 decisions each.
"""

from __future__ import annotations

from search_spaces.common import KERNEL_SIZES, filter_choices, fixed_filters
from tunas_keras.schema import OneOf, SearchSpace
from tunas_keras.specs import (
    Activation,
    Block,
    Bottleneck,
    Conv,
    Endpoint,
    GlobalPool,
    Network,
    SeparableConv,
    fixed_op,
    skippable,
)

TARGET_LATENCY_MS = 84.0
EXPANSIONS = (3, 6)

# (stride of the first layer, number of layers, has a detection endpoint) for blocks 2..7.
BOTTLENECK_BLOCKS = (
    (2, 4, True),
    (2, 4, True),
    (2, 4, False),
    (1, 4, True),
    (2, 4, True),
    (1, 1, True),
)
PROXYLESS_FILTERS = (32, 16, 32, 40, 80, 96, 192, 320, 1280)  # stem, sepconv, blocks 2..7, head
ENLARGED_BASE_FILTERS = (16, 16, 16, 32, 64, 128, 256, 512, 1024)


def bneck(strides: int = 1) -> Bottleneck:
    return Bottleneck(
        kernel_size=OneOf(KERNEL_SIZES, "kernel_size"), expansion=OneOf(EXPANSIONS, "expansion"), strides=strides
    )


def bottleneck_block(strides: int, num_layers: int, endpoint: bool, filters: OneOf) -> Block:
    """First layer: a single-choice op; the others: skippable (Residual(OneOf([bneck, Zero])))."""
    layers = [fixed_op(bneck(strides))] + [skippable(bneck()) for _ in range(num_layers - 1)]
    return Block(tuple(layers) + ((Endpoint(),) if endpoint else ()), filters)


def build_network(widths: list[OneOf]) -> Network:
    """The ProxylessNAS layout with the given width decisions (stem, sepconv, 6 blocks, head)."""
    stem = Block((Conv(kernel_size=3, strides=2), Activation("relu")), widths[0])
    # As the reference: three complete separable convs (each kernel its own depthwise AND its own
    # 1x1 projection), not one projection shared by three depthwise kernels. Same decision
    # position and cost features as a kernel-size choice.
    separable_choices = tuple(SeparableConv(kernel_size=kernel_size) for kernel_size in KERNEL_SIZES)
    separable = Block((OneOf(separable_choices, "op"), Endpoint()), widths[1])
    blocks = [
        bottleneck_block(strides, num_layers, endpoint, width)
        for (strides, num_layers, endpoint), width in zip(BOTTLENECK_BLOCKS, widths[2:8])
    ]
    head = Block((Conv(kernel_size=1), Activation("relu"), GlobalPool()), widths[8])
    return Network((stem, separable, *blocks, head))


PROXYLESS = SearchSpace(
    name="proxyless",
    spec=build_network([fixed_filters(filters) for filters in PROXYLESS_FILTERS]),
    target_latency=TARGET_LATENCY_MS,
    reference_name="proxylessnas_search",
)

PROXYLESS_ENLARGED = SearchSpace(
    name="proxyless_enlarged",
    spec=build_network([filter_choices(filters) for filters in ENLARGED_BASE_FILTERS]),
    target_latency=TARGET_LATENCY_MS,
    reference_name="proxylessnas_enlarged_search",
)
