"""The ProxylessNAS search space (paper Table 2, first row) and its enlarged variant.

`proxyless`: MobileNetV2 layout with ProxylessNAS' hand-tuned widths; every inverted bottleneck
searches its depthwise kernel {3, 5, 7} and expansion {×3, ×6}; layers 2-4 of blocks 2-6 may be
skipped. `proxyless_enlarged`: the same layers, with every block's width searched over
`base × {1/2, 5/8, 3/4, 1, 5/4, 3/2, 2}`. 73 decisions each.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from search_spaces.common import KERNEL_SIZES, filter_choices, fixed_filters
from tunas_keras.schema import OneOf, SearchSpace
from tunas_keras.specs import (
    RELU,
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


class BlockRow(NamedTuple):
    """One block of the ProxylessNAS layout: layers that share one output width.

    Attributes:
      layers: `row -> layer specs` of the block (`stem`, `separable`, `bnecks`, `head`).
      num_layers: how many layers (bottlenecks: the first is fixed, the others skippable).
      strides: stride of the block's first layer.
      filters: ProxylessNAS' hand-tuned width (a single-choice decision in `proxyless`).
      base_filters: the base of the width decision of `proxyless_enlarged`.
      endpoint: whether a detection head may read the block's output.
    """

    layers: Callable[["BlockRow"], tuple]
    num_layers: int
    strides: int
    filters: int
    base_filters: int
    endpoint: bool


def stem(row: BlockRow) -> tuple:
    return (Conv(kernel_size=3, strides=row.strides), Activation(RELU))


def separable(row: BlockRow) -> tuple:
    # As the reference: three complete separable convs (each kernel its own depthwise AND its own
    # 1x1 projection), not one projection shared by three depthwise kernels. Same decision
    # position and cost features as a kernel-size choice.
    return (OneOf(tuple(SeparableConv(kernel_size=size, strides=row.strides) for size in KERNEL_SIZES), "op"),)


def bneck(strides: int = 1) -> Bottleneck:
    return Bottleneck(
        kernel_size=OneOf(KERNEL_SIZES, "kernel_size"), expansion=OneOf(EXPANSIONS, "expansion"), strides=strides
    )


def bnecks(row: BlockRow) -> tuple:
    """First layer: a single-choice op; the others: skippable (Residual(OneOf([bneck, Zero])))."""
    return (fixed_op(bneck(row.strides)),) + tuple(skippable(bneck()) for _ in range(row.num_layers - 1))


def head(row: BlockRow) -> tuple:
    del row
    return (Conv(kernel_size=1), Activation(RELU), GlobalPool())


# fmt: off
BLOCKS = (
    BlockRow(stem,      num_layers=1, strides=2, filters=32,   base_filters=16,   endpoint=False),
    BlockRow(separable, num_layers=1, strides=1, filters=16,   base_filters=16,   endpoint=True),
    BlockRow(bnecks,    num_layers=4, strides=2, filters=32,   base_filters=16,   endpoint=True),
    BlockRow(bnecks,    num_layers=4, strides=2, filters=40,   base_filters=32,   endpoint=True),
    BlockRow(bnecks,    num_layers=4, strides=2, filters=80,   base_filters=64,   endpoint=False),
    BlockRow(bnecks,    num_layers=4, strides=1, filters=96,   base_filters=128,  endpoint=True),
    BlockRow(bnecks,    num_layers=4, strides=2, filters=192,  base_filters=256,  endpoint=True),
    BlockRow(bnecks,    num_layers=1, strides=1, filters=320,  base_filters=512,  endpoint=True),
    BlockRow(head,      num_layers=1, strides=1, filters=1280, base_filters=1024, endpoint=False),
)
# fmt: on


def build_network(enlarged: bool) -> Network:
    """The ProxylessNAS layout; `enlarged` searches every block's width around its base."""
    blocks = []
    for row in BLOCKS:
        filters = filter_choices(row.base_filters) if enlarged else fixed_filters(row.filters)
        layers = row.layers(row) + ((Endpoint(),) if row.endpoint else ())
        blocks.append(Block(layers, filters))
    return Network(tuple(blocks))


PROXYLESS = SearchSpace(
    name="proxyless",
    spec=build_network(enlarged=False),
    target_latency=TARGET_LATENCY_MS,
    reference_name="proxylessnas_search",
)

PROXYLESS_ENLARGED = SearchSpace(
    name="proxyless_enlarged",
    spec=build_network(enlarged=True),
    target_latency=TARGET_LATENCY_MS,
    reference_name="proxylessnas_enlarged_search",
)
