"""Per-layer latency tables: the layer variants of a space, their models, and tables → a linear file.

A network of our spaces is a sequence of layers (`tables.network_slots`) whose spatial sizes no
decision changes, so each layer runs as one of a few *variants*: its resolved spec at a fixed
input shape `(h, w, c_in)` with the block's width as output. Timing every variant in isolation
(a small `.tflite` of that one layer) and summing the variants of a network predicts its latency
(the lookup tables of ProxylessNAS / OFA). What the converter fuses inside a network is fused in
the layer model too (a ReLU after a convolution with batch norm is the convolution's fused
activation, so the ReLU layer costs nothing on its own).

A table depends on exactly the decisions the Pixel-1 feature segment of the layer one-hot encodes
(its block width, the previous layer's block width and its own decisions; cost-model.md §4), so a
table model *is* a linear model of that layout: `tables_to_linear` writes it into `bias + kernel ·
features`, which `save_linear_cost_model` stores and `get_cost_model(path)` loads as today (the
search's batch cost stays one table gather).

    >>> catalogue = layer_catalogue(space, image_size=224, num_classes=1001)
    >>> len(catalogue.variants)                     # distinct layer models to time
    >>> bias, kernel = tables_to_linear(space, catalogue, latency_ms, bias=overhead_ms)

References: Cai et al., ProxylessNAS (ICLR 2019), latency lookup tables; Cai et al., Once-for-All
(ICLR 2020), §3.4; Zhang et al., nn-Meter (MobiSys 2021), kernel-level prediction.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tunas_keras import specs
from tunas_keras.cost_models.counts import _input_sizes
from tunas_keras.cost_models.linear import feature_segments
from tunas_keras.cost_models.tables import LayerSlot, network_slots, slot_dependencies, tabulate
from tunas_keras.schema import SearchSpace, assign

# Activations TFLite fuses into the convolution (with batch norm) before them.
FUSABLE_ACTIVATIONS = (specs.RELU, specs.RELU6)
CLASSIFIER = "Classifier"


@dataclasses.dataclass(frozen=True)
class LayerVariant:
    """One layer as the device runs it.

    Attributes:
      spec: the resolved layer spec (no `OneOf`), or `CLASSIFIER` (flatten + dense).
      input_shape: `(h, w, c_in)` entering the layer.
      filters: the block's width (the layer's output channels; the classes for the classifier).
      fused_activation: an `Activation` that follows a `Conv` and is fused into it.
    """

    spec: Any
    input_shape: tuple
    filters: int
    fused_activation: Optional[str] = None

    @property
    def key(self) -> str:
        """A stable text naming the variant (cache keys and file names derive from it)."""
        fused = f"+{self.fused_activation}" if self.fused_activation else ""
        height, width, channels = self.input_shape
        return f"{self.spec!r}{fused}@{height}x{width}x{channels}->{self.filters}"


@dataclasses.dataclass(frozen=True)
class SlotTable:
    """Which variant each joint choice of a layer's decisions runs (None: nothing runs).

    `keys[j]` belongs to the mixed-radix choice `j` of `positions` (first slowest), as in
    `tables.tabulate`.
    """

    slot: LayerSlot
    positions: tuple
    radices: tuple
    keys: tuple


@dataclasses.dataclass(frozen=True)
class LayerCatalogue:
    """Every layer variant of a space at one resolution.

    Attributes:
      space: the search space.
      image_size / num_classes: the exported networks' input size and classes.
      slots: one `SlotTable` per layer of the network walk, then one for the classifier.
      variants: key → `LayerVariant`, in first-seen order.
    """

    space: SearchSpace
    image_size: int
    num_classes: int
    slots: tuple
    variants: dict

    def network_variants(self, indices: Sequence[int]) -> list[str]:
        """The keys of the variants that the network `indices` runs, in order."""
        keys = []
        for table in self.slots:
            key = table.keys[_mixed_radix(table, indices)]
            if key is not None:
                keys.append(key)
        return keys

    def block_of(self, table: SlotTable) -> int:
        """The block index a slot table belongs to (the classifier counts with the last block)."""
        return table.slot.block_index


def _mixed_radix(table: SlotTable, indices: Sequence[int]) -> int:
    key = 0
    for position, radix in zip(table.positions, table.radices):
        key = key * radix + indices[position]
    return key


def _resolve(spec: Any, indices: Sequence[int], positions: tuple) -> Any:
    return assign(spec, [indices[position] for position in positions])


def _fuses_next(slot: LayerSlot, following: Optional[LayerSlot]) -> Optional[str]:
    """The activation of `following` when the converter fuses it into `slot`'s convolution."""
    if following is None or following.block_index != slot.block_index:
        return None
    if not isinstance(slot.spec, specs.Conv) or not isinstance(following.spec, specs.Activation):
        return None
    if following.spec.activation not in FUSABLE_ACTIVATIONS:
        return None
    # A conv without batch norm keeps its bias add; TFLite fuses the activation all the same.
    return following.spec.activation


def _runs_nothing(spec: Any) -> bool:
    if isinstance(spec, specs.Endpoint):
        return True
    return isinstance(spec, specs.Residual) and isinstance(spec.layer, specs.Zero)


def _slot_variant_function(slot, previous, following, size, image_channels, fused_into_previous) -> Callable:
    fused = _fuses_next(slot, following)
    resolved = {}

    def variant(indices: Sequence[int]) -> Optional[LayerVariant]:
        if fused_into_previous:
            return None
        choices = tuple(indices[position] for position in slot.vector.positions())
        if choices not in resolved:
            resolved[choices] = assign(slot.spec, list(choices))
        spec = resolved[choices]
        if _runs_nothing(spec):
            return None
        channels = image_channels
        if previous is not None:
            channels = _resolve(previous.block_filters, indices, previous.width.positions())
        filters = _resolve(slot.block_filters, indices, slot.width.positions())
        return LayerVariant(spec, (size[0], size[1], channels), filters, fused)

    return variant


def _enumerate(space: SearchSpace, slot: LayerSlot, positions: tuple, variant: Callable, variants: dict) -> SlotTable:
    radices = tuple(space.num_choices[position] for position in positions)
    indices, keys = [0] * space.num_decisions, []
    for combination in itertools.product(*(range(radix) for radix in radices)):
        for position, choice in zip(positions, combination):
            indices[position] = choice
        found = variant(indices)
        if found is not None:
            variants.setdefault(found.key, found)
        keys.append(None if found is None else found.key)
    return SlotTable(slot, positions, radices, tuple(keys))


@functools.lru_cache(maxsize=None)
def layer_catalogue(space: SearchSpace, image_size: int = 224, num_classes: int = 1001) -> LayerCatalogue:
    """The layer variants of every layer of `space` for `image_size`² RGB inputs and `num_classes`."""
    slots = network_slots(space)
    sizes = _input_sizes(space, (image_size, image_size, 3))
    variants, tables, fused_into_previous = {}, [], False
    for index, (slot, size) in enumerate(zip(slots, sizes)):
        previous = slots[index - 1] if index else None
        following = slots[index + 1] if index + 1 < len(slots) else None
        variant = _slot_variant_function(slot, previous, following, size, 3, fused_into_previous)
        tables.append(_enumerate(space, slot, slot_dependencies(slot), variant, variants))
        fused_into_previous = _fuses_next(slot, following) is not None
    last = slots[-1]

    def classifier(indices: Sequence[int]) -> LayerVariant:
        channels = _resolve(last.block_filters, indices, last.width.positions())
        return LayerVariant(CLASSIFIER, (1, 1, channels), num_classes)

    tables.append(_enumerate(space, last, last.width.positions(), classifier, variants))
    return LayerCatalogue(space, image_size, num_classes, tuple(tables), variants)


def network_cost(catalogue: LayerCatalogue, latency_ms: dict, indices: Sequence[int], bias: float = 0.0) -> float:
    """`bias` plus the latencies of the variants the network runs (the pure table prediction)."""
    return bias + sum(latency_ms[key] for key in catalogue.network_variants(indices))


def block_costs(catalogue: LayerCatalogue, latency_ms: dict, indices: Sequence[int]) -> np.ndarray:
    """Per block of the network, the summed latencies of its variants (the classifier with the last)."""
    totals = np.zeros([len(catalogue.space.spec.blocks)])
    for table in catalogue.slots:
        key = table.keys[_mixed_radix(table, indices)]
        if key is not None:
            totals[catalogue.block_of(table)] += latency_ms[key]
    return totals


def tables_to_linear(
    space: SearchSpace,
    catalogue: LayerCatalogue,
    latency_ms: dict,
    bias: float = 0.0,
    block_scales: Optional[Sequence[float]] = None,
) -> tuple[float, np.ndarray]:
    """The Pixel-1-layout `(bias, kernel)` whose cost equals `bias + Σ_blocks scale_b · block cost`.

    Each layer's table (the classifier's is added to the last layer's, which one-hot encodes the
    same width) fills the coefficients of that layer's feature segment; tables of layers whose
    segment is dropped (always active, cost-model.md §4.2) are constants and go to the bias.
    """
    scales = np.ones([len(space.spec.blocks)]) if block_scales is None else np.asarray(block_scales, np.float64)
    by_slot: dict[str, list] = {}
    for table in catalogue.slots:
        by_slot.setdefault(table.slot.name, []).append(table)

    def slot_value(name: str) -> Callable:
        def value(indices: Sequence[int]) -> float:
            total = 0.0
            for table in by_slot[name]:
                key = table.keys[_mixed_radix(table, indices)]
                total += 0.0 if key is None else latency_ms[key] * scales[catalogue.block_of(table)]
            return total

        return value

    kernel = np.zeros([sum(segment.size for segment in feature_segments(space))])
    kept = {segment.slot.name: segment for segment in feature_segments(space)}
    zeros = [0] * space.num_decisions
    for name in by_slot:
        segment = kept.get(name)
        if segment is None:  # Always active: a constant.
            bias += slot_value(name)(zeros)
            continue
        positions = slot_dependencies(segment.slot)
        values = tabulate(space, name, positions, slot_value(name)).table
        local = tabulate(space, name, positions, segment.local_position).table.astype(np.int64)
        kernel[segment.offset + local] = values
        if not np.allclose(kernel[segment.offset + local], values, rtol=0, atol=1e-9):
            raise ValueError(f"Internal error: the table of {name!r} is not a function of its feature.")
    return float(bias), kernel


def build_variant_model(variant: LayerVariant):
    """The batch-1 Keras model of one layer variant (the standalone builder's layers)."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    from tunas_keras.layers.common import activation_layer  # pylint: disable=import-outside-toplevel
    from tunas_keras.models import standalone  # pylint: disable=import-outside-toplevel

    inputs = keras.Input(variant.input_shape, batch_size=1, name="features")
    if variant.spec == CLASSIFIER:
        outputs = keras.layers.Flatten(name="flatten")(inputs)
        outputs = keras.layers.Dense(variant.filters, name="classifier")(outputs)
    else:
        context = standalone.BuildContext(filters=variant.filters, prefix="layer_")
        outputs = standalone.build_layer(variant.spec, inputs, context)
        if variant.fused_activation:
            outputs = activation_layer(variant.fused_activation, "layer_fused_act")(outputs)
    return keras.Model(inputs, outputs, name="layer")


def overhead_model():
    """The "empty" model: one ReLU on 8 values. Its latency is what every invocation costs."""
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    inputs = keras.Input((1, 1, 8), batch_size=1, name="features")
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(inputs), name="overhead")


def _strided(size: int, strides: int) -> int:
    return -(-size // strides)


@dataclasses.dataclass(frozen=True)
class Op:
    """One TFLite op of a layer variant, as the converter emits it (batch norm folded).

    Attributes:
      kind: one of `OP_KINDS`.
      input_shape: `(h, w, c)` of its (first) input.
      filters: output channels of "conv" and "dense".
      kernel_size / strides: of "conv" and "depthwise".
      activation: a ReLU / ReLU6 fused into a "conv" or "depthwise" (None: none).
    """

    kind: str
    input_shape: tuple
    filters: int = 0
    kernel_size: int = 1
    strides: int = 1
    activation: Optional[str] = None

    @property
    def key(self) -> str:
        height, width, channels = self.input_shape
        details = f"k{self.kernel_size}s{self.strides}" if self.kind in ("conv", "depthwise") else ""
        details += f"->{self.filters}" if self.kind in ("conv", "dense") else ""
        details += f"+{self.activation}" if self.activation else ""
        return f"{self.kind}{details}@{height}x{width}x{channels}"

    @property
    def output_shape(self) -> tuple:
        height, width, channels = self.input_shape
        if self.kind in ("conv", "depthwise"):
            channels = self.filters if self.kind == "conv" else channels
            return (_strided(height, self.strides), _strided(width, self.strides), channels)
        if self.kind == "mean":
            return (1, 1, channels)
        if self.kind == "dense":
            return (1, 1, self.filters)
        return self.input_shape

    @property
    def macs(self) -> int:
        out_h, out_w, out_c = self.output_shape
        if self.kind == "conv":
            return out_h * out_w * self.kernel_size**2 * self.input_shape[2] * out_c
        if self.kind == "depthwise":
            return out_h * out_w * self.kernel_size**2 * out_c
        if self.kind == "dense":
            return self.input_shape[2] * self.filters
        return 0

    @property
    def weights(self) -> int:
        """Parameters (kernel and bias) of a "conv", "depthwise" or "dense"; 0 for the others."""
        channels = self.input_shape[2]
        if self.kind == "conv":
            return self.kernel_size**2 * channels * self.filters + self.filters
        if self.kind == "depthwise":
            return self.kernel_size**2 * channels + channels
        if self.kind == "dense":
            return channels * self.filters + self.filters
        return 0


OP_KINDS = ("conv", "depthwise", "hard_swish", "add", "mul", "mean", "logistic", "dense")


def _fused(activation: str) -> Optional[str]:
    return activation if activation in FUSABLE_ACTIVATIONS else None


def _activation_ops(activation: str, shape: tuple) -> list:
    return [] if activation in FUSABLE_ACTIVATIONS else [Op("hard_swish", shape)]


def _bottleneck_ops(spec: specs.Bottleneck, shape: tuple, filters: int) -> list:
    inner = spec.inner_filters(shape[2])
    expand = Op("conv", shape, inner, 1, 1, _fused(spec.activation))
    ops = [expand] + _activation_ops(spec.activation, expand.output_shape)
    depthwise = Op("depthwise", expand.output_shape, 0, spec.kernel_size, spec.strides, _fused(spec.activation))
    ops += [depthwise] + _activation_ops(spec.activation, depthwise.output_shape)
    if spec.squeeze_excite:
        hidden = specs.make_divisible(inner * 0.25)
        pooled = (1, 1, inner)
        ops += [
            Op("mean", depthwise.output_shape),
            Op("conv", pooled, hidden, activation=specs.RELU),
            Op("conv", (1, 1, hidden), inner),
            Op("logistic", pooled),
            Op("mul", depthwise.output_shape),
        ]
    return ops + [Op("conv", depthwise.output_shape, filters)]


def variant_ops(variant: LayerVariant) -> list[Op]:
    """The TFLite ops a layer variant runs, in order (ReLU / ReLU6 fused, batch norm folded)."""
    spec, shape, filters = variant.spec, variant.input_shape, variant.filters
    residual = isinstance(spec, specs.Residual)
    spec = spec.layer if residual else spec
    if spec == CLASSIFIER:
        ops = [Op("dense", shape, filters)]
    elif isinstance(spec, specs.Conv):
        ops = [Op("conv", shape, filters, spec.kernel_size, spec.strides, variant.fused_activation)]
    elif isinstance(spec, specs.Activation):
        ops = _activation_ops(spec.activation, shape)
    elif isinstance(spec, specs.GlobalPool):
        ops = [Op("mean", shape)]
    elif isinstance(spec, specs.SeparableConv):
        depthwise = Op("depthwise", shape, 0, spec.kernel_size, spec.strides, _fused(spec.activation))
        ops = [depthwise] + _activation_ops(spec.activation, depthwise.output_shape)
        ops.append(Op("conv", depthwise.output_shape, filters))
    elif isinstance(spec, specs.Bottleneck):
        ops = _bottleneck_ops(spec, shape, filters)
    else:
        raise ValueError(f"Invalid layer variant: no op list for {type(spec).__name__}.")
    if residual:
        ops.append(Op("add", ops[-1].output_shape))
    return ops


def build_op_model(op: Op):
    """The batch-1 Keras model of one op (a constant second operand for "add" and "mul")."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras as keras  # pylint: disable=import-outside-toplevel

    inputs = keras.Input(op.input_shape, batch_size=1, name="features")
    if op.kind == "conv":
        outputs = keras.layers.Conv2D(op.filters, op.kernel_size, op.strides, padding="same", name="conv")(inputs)
    elif op.kind == "depthwise":
        outputs = keras.layers.DepthwiseConv2D(op.kernel_size, op.strides, padding="same", name="depthwise")(inputs)
    elif op.kind == "hard_swish":
        from tunas_keras.layers.common import hard_swish  # pylint: disable=import-outside-toplevel

        outputs = keras.layers.Activation(hard_swish, name="hard_swish")(inputs)
    elif op.kind in ("add", "mul"):
        shape = (1, *op.input_shape) if op.kind == "add" else (1, 1, 1, op.input_shape[2])
        constant = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))
        combine = tf.add if op.kind == "add" else tf.multiply
        outputs = keras.layers.Lambda(lambda tensor: combine(tensor, constant), name=op.kind)(inputs)
    elif op.kind == "mean":
        outputs = keras.layers.GlobalAveragePooling2D(keepdims=True, name="mean")(inputs)
    elif op.kind == "logistic":
        outputs = keras.layers.Activation("sigmoid", name="logistic")(inputs)
    elif op.kind == "dense":
        outputs = keras.layers.Dense(op.filters, name="dense")(keras.layers.Flatten(name="flatten")(inputs))
    else:
        raise ValueError(f"Invalid value for argument `op`. Expected a kind of {OP_KINDS}. Received: {op.kind!r}")
    if op.activation:
        outputs = keras.layers.ReLU(6.0 if op.activation == specs.RELU6 else None, name="relu")(outputs)
    return keras.Model(inputs, outputs, name="op")


@functools.lru_cache(maxsize=None)
def _cached_ops(variant: LayerVariant) -> tuple:
    return tuple(variant_ops(variant))


def catalogue_ops(catalogue: LayerCatalogue) -> dict:
    """Every distinct op (key → `Op`) of the catalogue's variants, in first-seen order."""
    ops = {}
    for variant in catalogue.variants.values():
        for op in _cached_ops(variant):
            ops.setdefault(op.key, op)
    return ops


def variant_weights(catalogue: LayerCatalogue) -> dict:
    """Parameters (millions) of every variant (batch norm folded into the convolutions' biases)."""
    return {key: sum(op.weights for op in _cached_ops(variant)) / 1e6 for key, variant in catalogue.variants.items()}


def variant_layers(catalogue: LayerCatalogue) -> dict:
    """1 for every variant: summed per block (`block_costs`), a network's active layers per block."""
    return {key: 1.0 for key in catalogue.variants}


def variant_latencies(catalogue: LayerCatalogue, unit: str, latency_ms: dict) -> dict:
    """Latency of every variant: `latency_ms` itself (unit "layer") or the sum of its ops' ("op")."""
    if unit == "layer":
        return {key: latency_ms[key] for key in catalogue.variants}
    if unit == "op":
        return {
            key: sum(latency_ms[op.key] for op in _cached_ops(variant)) for key, variant in catalogue.variants.items()
        }
    raise ValueError(f"Invalid value for argument `unit`. Expected 'layer' or 'op'. Received: unit={unit!r}")
