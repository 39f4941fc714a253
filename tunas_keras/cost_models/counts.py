"""MAC and parameter counts as cost models (`"macs"`, `"params"`), in millions.

The count of a network is the sum of its layers' counts, and a layer's count is fixed by its
own decisions, its block's width, its input width (the width of the previous layer's block, or
the image channels for the first layer) and its spatial size, which no decision of our spaces
changes (strided layers are never skippable). So the counts are tabulated per layer exactly like
the Pixel-1 features (`tables.py`) and `batch_cost` is pure TF (no `tf.numpy_function`): the
tables are filled by the analytic counter `tunas_keras.models.counters` and the totals equal
`count_network` (a test checks it on random architectures of every space).
"""

from __future__ import annotations

import functools
from typing import Any

from tunas_keras.cost_models.base import register_cost_model
from tunas_keras.cost_models.tables import LayerSlot, TabulatedCostModel, network_slots, slot_dependencies, tabulate
from tunas_keras.models import counters
from tunas_keras.schema import SearchSpace, assign

DEFAULT_NUM_CLASSES = 1001
DEFAULT_INPUT_SHAPE = (224, 224, 3)
COUNT_FIELDS = ("macs", "params")


def _resolve(spec: Any, indices: list, positions: tuple) -> Any:
    return assign(spec, [indices[position] for position in positions])


def _input_sizes(space: SearchSpace, input_shape: tuple) -> list[tuple[int, int]]:
    """Spatial size entering each layer (walking the all-zeros architecture)."""
    indices = [0] * space.num_decisions
    walk = counters._Walk(height=input_shape[0], width=input_shape[1], channels=input_shape[2])
    sizes = []
    for slot in network_slots(space):
        sizes.append((walk.height, walk.width))
        walk.filters = _resolve(slot.block_filters, indices, slot.width.positions())
        counters.count_layer(_resolve(slot.spec, indices, slot.vector.positions()), walk)
    return sizes


def _layer_counter(slot: LayerSlot, previous: LayerSlot, size: tuple, input_channels: int, field: str):
    resolved_layers = {}  # the layer's own choices -> resolved spec (widths vary faster than it)

    def count(indices: list) -> float:
        channels = input_channels
        if previous is not None:
            channels = _resolve(previous.block_filters, indices, previous.width.positions())
        walk = counters._Walk(height=size[0], width=size[1], channels=channels)
        walk.filters = _resolve(slot.block_filters, indices, slot.width.positions())
        choices = tuple(indices[position] for position in slot.vector.positions())
        if choices not in resolved_layers:
            resolved_layers[choices] = assign(slot.spec, list(choices))
        counters.count_layer(resolved_layers[choices], walk)
        return float(getattr(walk, field))

    return count


def _classifier_counter(last: LayerSlot, num_classes: int, field: str):
    def count(indices: list) -> float:
        channels = _resolve(last.block_filters, indices, last.width.positions())
        weights = channels * num_classes
        return float(weights + num_classes if field == "params" else weights)

    return count


@functools.lru_cache(maxsize=None)
def count_cost_model(
    space: SearchSpace, field: str, num_classes: int = DEFAULT_NUM_CLASSES, input_shape: tuple = DEFAULT_INPUT_SHAPE
) -> TabulatedCostModel:
    """MACs or parameters (millions) of the standalone classifier, tabulated per layer.

    Args:
      space: the search space.
      field: "macs" or "params".
      num_classes: classifier outputs.
      input_shape: (height, width, channels) of the input images.
    """
    if field not in COUNT_FIELDS:
        raise ValueError(
            f"Invalid value for argument `field`. Expected one of {COUNT_FIELDS}. Received: field={field!r}"
        )
    slots = network_slots(space)
    sizes = _input_sizes(space, tuple(input_shape))
    segments = []
    for index, (slot, size) in enumerate(zip(slots, sizes)):
        previous = slots[index - 1] if index else None
        counter = _layer_counter(slot, previous, size, input_shape[2], field)
        # The input width is the previous layer's block width, so depend on that decision.
        positions = slot_dependencies(slot)
        if previous is not None and slot.previous_width is not previous.width:
            raise ValueError("Internal error: P must be the previous layer's block width.")
        segments.append(tabulate(space, slot.name, positions, counter))
    last = slots[-1]
    classifier = _classifier_counter(last, num_classes, field)
    segments.append(tabulate(space, "classifier", last.width.positions(), classifier))
    units = "M MACs" if field == "macs" else "M params"
    return TabulatedCostModel(space, field, units, 0.0, segments, scale=1e-6)


@register_cost_model("macs")
def macs_cost_model(space: SearchSpace) -> TabulatedCostModel:
    """Multiply-accumulates (millions) at 224×224 with 1001 classes."""
    return count_cost_model(space, "macs")


@register_cost_model("params")
def params_cost_model(space: SearchSpace) -> TabulatedCostModel:
    """Parameters (millions) with 1001 classes, batch-norm statistics included."""
    return count_cost_model(space, "params")
