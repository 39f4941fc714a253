"""Reference architectures: MobileNetV2, MnasNet-B1, ProxylessNAS-Mobile, MobileNetV3-Large.

The first three (and the two Table-8 filter variants of ProxylessNAS-Mobile) are points of the
ProxylessNAS layout: per-layer ops plus the nine widths (stem, sepconv, blocks 2..7, head). Op
codes follow the reference: `op = 3·e + k` with e ∈ {0: ×3, 1: ×6} and k ∈ {0: 3×3, 1: 5×5,
2: 7×7}, 6 = skip; the first entry is the separable conv's kernel index. MobileNetV3-Large is
not a point of any space (its block-4 width 112 and head width 960 are not choices), so it is
written with absolute sizes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from tunas_keras.registry import Reference
from tunas_keras.schema import Decision, SearchSpace
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
    Residual,
    SeparableConv,
    Zero,
)

# Op code = 3·e + k: the kernel size is OP_KERNEL_SIZES[k], the expansion OP_EXPANSIONS[e].
OP_KERNEL_SIZES = (3, 5, 7)
OP_EXPANSIONS = (3, 6)
SKIP_OP = 6


class ProxylessLayout(NamedTuple):
    """A network of the ProxylessNAS layout: 22 op codes and 9 widths."""

    ops: tuple
    filters: tuple


PROXYLESS_LAYOUT_REFERENCES = {
    "mobilenet_v2": ProxylessLayout(
        ops=(0, 3, 3, 6, 6, 3, 3, 3, 6, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 3),
        filters=(32, 16, 24, 32, 64, 96, 160, 320, 1280),
    ),
    "mnasnet_b1": ProxylessLayout(
        ops=(0, 0, 0, 0, 6, 1, 1, 1, 6, 4, 4, 4, 6, 3, 3, 6, 6, 4, 4, 4, 4, 3),
        filters=(32, 16, 24, 40, 80, 96, 192, 320, 1280),
    ),
    "proxylessnas_mobile": ProxylessLayout(
        ops=(0, 1, 0, 6, 6, 2, 0, 1, 1, 5, 1, 1, 1, 4, 1, 1, 1, 5, 5, 2, 2, 5),
        filters=(32, 16, 32, 40, 80, 96, 192, 320, 1280),
    ),
}
# Paper Table 8: ProxylessNAS-Mobile's operations with naive width heuristics. Our reading of
# the two heuristics: "×2 every stride-2" doubles the width at every stride-2 layer starting from
# 16 at the stem; "×2 every block" is the enlarged space's base widths (16 at the stem, doubled
# at each new block from block 3 on). Both are points of `proxyless_enlarged`.
PROXYLESS_LAYOUT_REFERENCES["proxylessnas_mobile_x2_every_stride2"] = ProxylessLayout(
    ops=PROXYLESS_LAYOUT_REFERENCES["proxylessnas_mobile"].ops, filters=(16, 16, 32, 64, 128, 128, 256, 256, 1280)
)
PROXYLESS_LAYOUT_REFERENCES["proxylessnas_mobile_x2_every_block"] = ProxylessLayout(
    ops=PROXYLESS_LAYOUT_REFERENCES["proxylessnas_mobile"].ops, filters=(16, 16, 16, 32, 64, 128, 256, 512, 1024)
)


class V3Bneck(NamedTuple):
    """One bottleneck row of MobileNetV3-Large (Howard et al. 2019, Table 1).

    A row is residual when it keeps the stride and the width of its input (as the paper).
    """

    kernel_size: int
    expanded_filters: int
    filters: int
    strides: int = 1
    squeeze_excite: bool = False
    activation: str = RELU
    endpoint: bool = False


STEM_FILTERS = 16
# fmt: off
MOBILENET_V3_LARGE_BNECKS = (
    V3Bneck(kernel_size=3, expanded_filters=64,  filters=24,  strides=2),
    V3Bneck(kernel_size=3, expanded_filters=72,  filters=24,  endpoint=True),
    V3Bneck(kernel_size=5, expanded_filters=72,  filters=40,  strides=2, squeeze_excite=True),
    V3Bneck(kernel_size=5, expanded_filters=120, filters=40,  squeeze_excite=True),
    V3Bneck(kernel_size=5, expanded_filters=120, filters=40,  squeeze_excite=True, endpoint=True),
    V3Bneck(kernel_size=3, expanded_filters=240, filters=80,  strides=2, activation=SWISH6),
    V3Bneck(kernel_size=3, expanded_filters=200, filters=80,  activation=SWISH6),
    V3Bneck(kernel_size=3, expanded_filters=184, filters=80,  activation=SWISH6),
    V3Bneck(kernel_size=3, expanded_filters=184, filters=80,  activation=SWISH6),
    V3Bneck(kernel_size=3, expanded_filters=480, filters=112, squeeze_excite=True, activation=SWISH6),
    V3Bneck(kernel_size=3, expanded_filters=672, filters=112, squeeze_excite=True, activation=SWISH6, endpoint=True),
    V3Bneck(kernel_size=5, expanded_filters=672, filters=160, strides=2, squeeze_excite=True, activation=SWISH6),
    V3Bneck(kernel_size=5, expanded_filters=960, filters=160, squeeze_excite=True, activation=SWISH6),
    V3Bneck(kernel_size=5, expanded_filters=960, filters=160, squeeze_excite=True, activation=SWISH6, endpoint=True),
)
# fmt: on
HEAD_FILTERS = (960, 1280)


def _v3_blocks(rows, input_filters: int) -> list:
    """Rows → `Block`s: consecutive rows of one width form a block."""
    blocks, layers = [], []
    for index, row in enumerate(rows):
        layer = Bottleneck(
            kernel_size=row.kernel_size,
            expansion=None,
            squeeze_excite=row.squeeze_excite,
            strides=row.strides,
            activation=row.activation,
            expanded_filters=row.expanded_filters,
        )
        layers.append(Residual(layer) if row.strides == 1 and row.filters == input_filters else layer)
        if row.endpoint:
            layers.append(Endpoint())
        if index + 1 == len(rows) or rows[index + 1].filters != row.filters:
            blocks.append(Block(tuple(layers), row.filters))
            layers = []
        input_filters = row.filters
    return blocks


def mobilenet_v3_large() -> Network:
    """MobileNetV3-Large (Howard et al. 2019, Table 1) with absolute sizes."""
    stem = Block(
        (
            Conv(kernel_size=3, strides=2),
            Activation(SWISH6),
            Residual(SeparableConv(kernel_size=3, activation=RELU)),
            Endpoint(),
        ),
        STEM_FILTERS,
    )
    head = (
        Block((Conv(kernel_size=1), Activation(SWISH6), GlobalPool()), HEAD_FILTERS[0]),
        Block((Conv(kernel_size=1, use_batch_norm=False), Activation(SWISH6)), HEAD_FILTERS[1]),
    )
    return Network((stem, *_v3_blocks(MOBILENET_V3_LARGE_BNECKS, STEM_FILTERS), *head))


def _op_index(decision: Decision, op: int) -> int:
    """The choice of one decision of a layer that the op code `op` describes."""
    skipped = op == SKIP_OP
    kernel_size = None if skipped else OP_KERNEL_SIZES[op % 3]
    expansion = None if skipped else OP_EXPANSIONS[op // 3]
    if decision.tag in ("kernel_size", "expansion"):
        # A skipped layer keeps kernel and expansion at index 0; they do not matter then.
        return 0 if skipped else decision.choices.index(kernel_size if decision.tag == "kernel_size" else expansion)
    if decision.tag != "op":
        raise ValueError(f"Decision {decision.name} has no meaning in the ProxylessNAS op codes.")

    layers = [index for index, choice in enumerate(decision.choices) if not isinstance(choice, Zero)]
    if skipped:
        candidates = [index for index, choice in enumerate(decision.choices) if isinstance(choice, Zero)]
    elif len(layers) > 1:  # whole ops that differ by their kernel size
        candidates = [index for index in layers if decision.choices[index].kernel_size == kernel_size]
    else:
        candidates = layers
    if len(candidates) != 1:
        raise ValueError(f"Op code {op} matches {len(candidates)} choices of {decision.name}.")
    return candidates[0]


def layout_indices(layout: ProxylessLayout, space: SearchSpace) -> list:
    """The `indices` of a ProxylessNAS-layout network in a space with that layout.

    The space's own decision order decides: each layer that has decisions takes the next op
    code, and each block's `filters` decision takes that block's width.

    Args:
      layout: ops and widths.
      space: a search space of the ProxylessNAS layout.

    Raises:
      ValueError: a width or an op is not among the choices of its decision, or the layout does
        not have one op per searched layer.
    """
    ops = iter(layout.ops)
    layer_ops: dict = {}
    indices = []
    for decision in space.decisions:
        block = decision.path[1]  # ("blocks", block, "filters") or ("blocks", block, "layers", layer, ...)
        if decision.tag == "filters":
            filters = layout.filters[block]
            if filters not in decision.choices:
                raise ValueError(f"Width {filters} of block {block} is not one of the choices {decision.choices}.")
            indices.append(decision.choices.index(filters))
            continue
        layer = decision.path[:4]
        if layer not in layer_ops:
            layer_ops[layer] = next(ops, None)
            if layer_ops[layer] is None:
                raise ValueError(f"The layout has {len(layout.ops)} op codes; the space needs more.")
        indices.append(_op_index(decision, layer_ops[layer]))
    if len(layer_ops) != len(layout.ops):
        raise ValueError(f"The layout has {len(layout.ops)} op codes; the space has {len(layer_ops)} searched layers.")
    return indices


# The spaces with the ProxylessNAS layout, smallest first.
PROXYLESS_LAYOUT_SPACES = ("proxyless", "proxyless_enlarged")
REFERENCES = tuple(
    Reference(name, spaces=PROXYLESS_LAYOUT_SPACES, indices=functools.partial(layout_indices, layout))
    for name, layout in PROXYLESS_LAYOUT_REFERENCES.items()
) + (Reference("mobilenet_v3_large", network=mobilenet_v3_large),)
