"""Cost models as sums of small lookup tables, evaluated per sample with one batched gather.

Every cost model we have is *separable over layers*: the cost of a network is a constant plus
one term per layer, and the term of a layer depends only on a handful of decisions (the
layer's own decisions, its block's width and the width of the block before it). The Pixel-1
model is linear over one-hot features built exactly that way (cost-model.md §4), and the MAC /
parameter count of a layer is fixed by the same decisions plus the (fixed) spatial size.

So a cost model here is `bias + sum_s table_s[joint choice of the decisions of segment s]`,
where each table enumerates the joint choices of its few decisions (mixed radix, first
decision slowest). `batch_cost` evaluates it for a whole batch with TF ops only (one gather of
the indices, a multiply-add to form the mixed-radix keys, one gather of the tables).

The network walk (`network_slots`) is derived generically from a space's spec: blocks and
layers of the `Network`, and per layer a compiled *vector node* that mirrors the Pixel-1 layer
vector (concatenation over a decision's options, Kronecker product over a record's fields).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tunas_keras.cost_models.base import CostModel
from tunas_keras.schema import Architecture, OneOf, SearchSpace, traverse


@dataclasses.dataclass(frozen=True)
class VectorNode:
    """The one-hot layer vector of a spec subtree (cost-model.md §4.1), compiled to positions.

    Attributes:
      length: length of the vector.
      position: for a `OneOf`, its decision position; None for records and plain values.
      children: options of a `OneOf`, or fields of a record (empty for a plain value).
      offsets: for a `OneOf`, where each option's sub-vector starts; for a record, the
        Kronecker stride of each field (first field slowest).
    """

    length: int
    position: Optional[int] = None
    children: tuple = ()
    offsets: tuple = ()

    def active_entry(self, indices: Sequence[int]) -> int:
        """Where the single 1 of the vector is, for full-length `indices`."""
        if self.position is not None:
            choice = indices[self.position]
            return self.offsets[choice] + self.children[choice].active_entry(indices)
        return sum(stride * child.active_entry(indices) for stride, child in zip(self.offsets, self.children))

    def positions(self) -> tuple[int, ...]:
        """The decision positions inside this subtree, in traversal order."""
        inner = tuple(position for child in self.children for position in child.positions())
        return inner + ((self.position,) if self.position is not None else ())


def compile_vector(spec: Any, positions: Iterator[int], decisions: Sequence) -> VectorNode:
    """Compiles `spec` into a `VectorNode`, drawing decision positions from `positions`.

    `schema.traverse` meets the decisions in decision order, so `positions` is consumed in that
    order; `decisions` (the space's) is used to check that every position lands on the very same
    `OneOf` object.
    """

    def one_of_vector(path: tuple, one_of: OneOf, options: list) -> VectorNode:
        del path
        position = next(positions)
        if decisions[position].one_of is not one_of:
            raise ValueError(f"Internal error: decision order mismatch at position {position}.")
        offsets = tuple(int(offset) for offset in np.cumsum([0] + [option.length for option in options[:-1]]))
        return VectorNode(sum(option.length for option in options), position, tuple(options), offsets)

    def record_vector(path: tuple, node: Any, fields: list) -> VectorNode:
        del path, node  # A plain value has no fields: a vector of length 1.
        lengths = [field.length for field in fields]
        strides = tuple(int(np.prod(lengths[index + 1 :], dtype=np.int64)) for index in range(len(fields)))
        return VectorNode(int(np.prod(lengths, dtype=np.int64)), None, tuple(fields), strides)

    return traverse(spec, one_of_vector, record_vector)


@dataclasses.dataclass(frozen=True)
class LayerSlot:
    """One layer of the network walk with the vectors it depends on.

    Attributes:
      name: `"block{b}/layer{l}/{SpecType}"` (block and layer numbered from 0).
      block_index: index of the block in `Network.blocks`.
      spec: the layer's (unresolved) spec.
      block_filters: the block's width spec (a `OneOf` or an int).
      vector: the layer's own vector (cost-model.md §4.1).
      width: the block's width one-hot `W` (a `VectorNode`).
      previous_width: `P`, the width one-hot of the block of the previous layer (None for the
        first layer of the network).
    """

    name: str
    block_index: int
    spec: Any
    block_filters: Any
    vector: VectorNode
    width: VectorNode
    previous_width: Optional[VectorNode]


@functools.lru_cache(maxsize=None)
def network_slots(space: SearchSpace) -> tuple[LayerSlot, ...]:
    """Every layer of `space.spec` (a `Network`) in order, with its compiled vectors."""
    positions = itertools.count()
    pending = []
    for block_index, block in enumerate(space.spec.blocks):
        vectors = [compile_vector(layer, positions, space.decisions) for layer in block.layers]
        # A block's width decision comes after its layers' decisions (cost-model.md §2 rule 1).
        width = compile_vector(block.filters, positions, space.decisions)
        for layer_index, (layer, vector) in enumerate(zip(block.layers, vectors)):
            name = f"block{block_index}/layer{layer_index}/{type(layer).__name__}"
            pending.append((name, block_index, layer, block.filters, vector, width))
    if next(positions) != space.num_decisions:
        raise ValueError(f"Internal error: the network walk of {space.name!r} missed decisions.")
    slots, previous_width = [], None
    for name, block_index, layer, filters, vector, width in pending:
        slots.append(LayerSlot(name, block_index, layer, filters, vector, width, previous_width))
        previous_width = width
    return tuple(slots)


def slot_dependencies(slot: LayerSlot) -> tuple[int, ...]:
    """Decision positions a layer's term may depend on: W, P (if another decision), own decisions."""
    ordered = slot.width.positions()
    if slot.previous_width is not None:
        ordered += slot.previous_width.positions()
    ordered += slot.vector.positions()
    return tuple(dict.fromkeys(ordered))  # unique, order kept


@dataclasses.dataclass(frozen=True)
class TableSegment:
    """A term of a tabulated cost: `table[mixed-radix key of indices[positions]]`."""

    name: str
    positions: tuple
    radices: tuple
    table: np.ndarray  # float64, length prod(radices)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(int(np.prod(self.radices[index + 1 :], dtype=np.int64)) for index in range(len(self.radices)))

    def key(self, indices: Sequence[int]) -> int:
        return sum(stride * indices[position] for stride, position in zip(self.strides, self.positions))


def tabulate(space: SearchSpace, name: str, positions: Sequence[int], value: Callable[[list], float]) -> TableSegment:
    """Evaluates `value(indices)` on every joint choice of `positions` (other indices are 0)."""
    radices = tuple(space.num_choices[position] for position in positions)
    indices = [0] * space.num_decisions
    table = []
    for combination in itertools.product(*(range(radix) for radix in radices)):
        for position, choice in zip(positions, combination):
            indices[position] = choice
        table.append(value(indices))
    return TableSegment(name, tuple(positions), radices, np.asarray(table, dtype=np.float64))


class TabulatedCostModel(CostModel):
    """`cost = scale * (bias + sum of the segments' table entries)`.

    Args:
      space: the search space.
      name: the cost model's name.
      units: units of the cost.
      bias: constant term (before `scale`).
      segments: the `TableSegment`s; segments without positions are folded into the bias.
      scale: multiplies the sum (e.g. 1e-6 to report millions of MACs).
    """

    def __init__(
        self,
        space: SearchSpace,
        name: str,
        units: str,
        bias: float,
        segments: Sequence[TableSegment],
        scale: float = 1.0,
    ):
        super().__init__(space, name, units)
        self.scale = float(scale)
        self.bias = float(bias) + sum(float(segment.table[0]) for segment in segments if not segment.positions)
        self.segments = tuple(segment for segment in segments if segment.positions)
        width = max((len(segment.positions) for segment in self.segments), default=1)
        count = len(self.segments)
        self._positions = np.zeros([count, width], np.int32)
        self._strides = np.zeros([count, width], np.int32)  # padding: stride 0 on position 0
        for row, segment in enumerate(self.segments):
            self._positions[row, : len(segment.positions)] = segment.positions
            self._strides[row, : len(segment.positions)] = segment.strides
        sizes = [segment.table.size for segment in self.segments]
        self._table_offsets = np.cumsum([0] + sizes[:-1]).astype(np.int32)
        flat = np.concatenate([segment.table for segment in self.segments]) if self.segments else np.zeros([1])
        self._flat_table = (flat * self.scale).astype(np.float32)
        self._entry_keys = self._mask_entry_keys()

    def _mask_entry_keys(self) -> np.ndarray:
        """For each flat table entry, the (position, choice) keys of its joint choice in a flattened
        `[num_decisions, max_choices]` mask matrix; padding columns point at an appended 1."""
        width = max((len(segment.positions) for segment in self.segments), default=1)
        max_choices = max(self.space.num_choices)
        padding = self.space.num_decisions * max_choices
        rows = []
        for segment in self.segments:
            grid = np.indices(segment.radices).reshape(len(segment.radices), -1).T  # [entries, len] row-major
            keys = np.full([grid.shape[0], width], padding, np.int32)
            keys[:, : len(segment.positions)] = np.asarray(segment.positions) * max_choices + grid
            rows.append(keys)
        return np.concatenate(rows) if rows else np.zeros([1, width], np.int32)

    def cost(self, architecture: Union[Architecture, Sequence[int]]) -> float:
        indices = self.validate(architecture)
        total = self.bias + sum(float(segment.table[segment.key(indices)]) for segment in self.segments)
        return total * self.scale

    def batch_cost(self, indices) -> tf.Tensor:
        """Costs of a batch: `indices` int32 `[batch, num_decisions]` -> float32 `[batch]`.

        Pure TF ops on constant tables (no Python per sample), so it runs inside `tf.function`
        and `strategy.run`. Indices must be in range (they are not checked here).
        """
        indices = self.check_batch_indices(indices)
        chosen = tf.gather(indices, tf.constant(self._positions), axis=1)  # [batch, segments, width]
        keys = tf.reduce_sum(chosen * tf.constant(self._strides), axis=-1) + tf.constant(self._table_offsets)
        terms = tf.gather(tf.constant(self._flat_table), keys)  # [batch, segments]
        return tf.reduce_sum(terms, axis=-1) + tf.constant(self.bias * self.scale, tf.float32)

    def mask_cost(self, masks) -> tf.Tensor:
        """Costs of (possibly fractional) masks: float32 `[..., num_decisions, max_choices]` -> `[...]`.

        Each term is multilinear in the masks, `Σ_joint choice Π mask weights · table entry`, as
        the reference's linear cost model on its mask features: one-hot masks give `batch_cost`
        of their architecture; warmup masks give the expected cost under independent choices
        with those weights (an averaged op: the average of its ops' costs). Masks are zero-padded
        as `tunas_keras.masks.pad_masks` writes them.
        """
        masks = tf.cast(masks, tf.float32)
        flat = tf.reshape(masks, tf.concat([tf.shape(masks)[:-2], [-1]], axis=0))
        flat = tf.concat([flat, tf.ones_like(flat[..., :1])], axis=-1)
        weights = tf.reduce_prod(tf.gather(flat, tf.constant(self._entry_keys), axis=-1), axis=-1)  # [..., E]
        return tf.reduce_sum(weights * tf.constant(self._flat_table), axis=-1) + tf.constant(self.bias * self.scale)
