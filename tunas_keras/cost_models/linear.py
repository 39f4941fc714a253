"""Linear cost models over one-hot features: the simulated Pixel-1 latency model of TuNAS.

`cost = bias + kernel · f(architecture)` where `f` is the 0/1 feature vector of cost-model.md
§4, derived generically from the space's spec: per layer, the layer vector `v` (concatenation
over a decision's options, Kronecker product over a record's fields), then the segment
`W_B ⊗ P ⊗ v` (block width, previous layer's block width, layer vector); segments of length 1
are dropped and the rest concatenated. Feature lengths: 144 (`proxyless`), 5983
(`proxyless_enlarged`), 29068 (`mobilenet_v3_like`).

Coefficient files (the bundled `tunas_keras/data/pixel1_cost_model.json`, or files written by
`save_linear_cost_model`, e.g. fitted to on-device measurements) have the layout
`{"spaces": {reference_space_name: {"bias": float, "kernel": [floats]}}, ...provenance}`.
Values are float32 numbers written as decimals that round-trip exactly.

References: Bender et al., CVPR 2020, §5 and Appendix (simulated Pixel-1 latency).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import tempfile
from typing import Sequence, Union

import numpy as np

from tunas_keras.cost_models.base import register_cost_model
from tunas_keras.cost_models.tables import (
    LayerSlot,
    TableSegment,
    TabulatedCostModel,
    network_slots,
    slot_dependencies,
    tabulate,
)
from tunas_keras.schema import Architecture, SearchSpace

PIXEL1_PATH = pathlib.Path(__file__).resolve().parent.parent / "data" / "pixel1_cost_model.json"


@dataclasses.dataclass(frozen=True)
class FeatureSegment:
    """One segment of the feature vector: `W_B ⊗ P ⊗ v` of one layer (cost-model.md §4.2)."""

    slot: LayerSlot
    offset: int
    num_outputs: int  # n_out: width choices of the layer's block
    num_inputs: int  # n_in: width choices of P (1 for the first layer)
    layer_length: int  # L

    @property
    def size(self) -> int:
        return self.num_outputs * self.num_inputs * self.layer_length

    def local_position(self, indices: Sequence[int]) -> int:
        """`(w_out * n_in + w_in) * L + l`: the active entry inside the segment."""
        slot = self.slot
        width_in = slot.previous_width.active_entry(indices) if slot.previous_width is not None else 0
        width_out = slot.width.active_entry(indices)
        return (width_out * self.num_inputs + width_in) * self.layer_length + slot.vector.active_entry(indices)


@functools.lru_cache(maxsize=None)
def feature_segments(space: SearchSpace) -> tuple[FeatureSegment, ...]:
    """The segments of the feature vector of `space`, with their offsets."""
    segments, offset = [], 0
    for slot in network_slots(space):
        num_inputs = slot.previous_width.length if slot.previous_width is not None else 1
        segment = FeatureSegment(slot, offset, slot.width.length, num_inputs, slot.vector.length)
        if segment.size == 1:  # a segment that is always [1] carries no information
            continue
        segments.append(segment)
        offset += segment.size
    return tuple(segments)


def num_features(space: SearchSpace) -> int:
    """Length of the feature vector (and of a linear model's kernel) for `space`."""
    return sum(segment.size for segment in feature_segments(space))


def active_features(space: SearchSpace, architecture: Union[Architecture, Sequence[int]]) -> list[int]:
    """Positions of the 1s of the feature vector (one per segment)."""
    indices = architecture.indices if isinstance(architecture, Architecture) else architecture
    indices = space.validate_indices(indices)
    return [segment.offset + segment.local_position(indices) for segment in feature_segments(space)]


def features(space: SearchSpace, architecture: Union[Architecture, Sequence[int]]) -> np.ndarray:
    """The 0/1 float32 feature vector of cost-model.md §4."""
    vector = np.zeros([num_features(space)], np.float32)
    vector[active_features(space, architecture)] = 1.0
    return vector


def reachable_features(space: SearchSpace) -> np.ndarray:
    """Boolean mask of the features that some architecture can activate."""
    mask = np.zeros([num_features(space)], bool)
    for segment in feature_segments(space):
        table = tabulate(space, "", slot_dependencies(segment.slot), segment.local_position)
        mask[segment.offset + table.table.astype(np.int64)] = True
    return mask


class LinearCostModel(TabulatedCostModel):
    """`bias + kernel · features(architecture)` (a float32 kernel, summed in float64 by `cost`).

    Args:
      space: the search space.
      bias: the constant term.
      kernel: one coefficient per feature (`num_features(space)` of them).
      name: the cost model's name.
      units: units of the cost (default milliseconds).
      provenance: free-form description of where the coefficients come from.
    """

    def __init__(
        self, space: SearchSpace, bias: float, kernel, name: str = "linear", units: str = "ms", provenance=None
    ):
        kernel = np.asarray(kernel, np.float32)
        expected = num_features(space)
        if kernel.shape != (expected,):
            raise ValueError(
                f"Invalid value for argument `kernel`. Expected {expected} coefficients for search space "
                f"{space.name!r}. Received: shape={kernel.shape}"
            )
        self.kernel = kernel
        self.provenance = dict(provenance or {})
        coefficients = kernel.astype(np.float64)
        segments = [
            TableSegment(
                segment.slot.name,
                table.positions,
                table.radices,
                coefficients[segment.offset + table.table.astype(np.int64)],
            )
            for segment in feature_segments(space)
            for table in [tabulate(space, segment.slot.name, slot_dependencies(segment.slot), segment.local_position)]
        ]
        super().__init__(space, name, units, float(np.float32(bias)), segments)

    def features(self, architecture) -> np.ndarray:
        return features(self.space, self.validate(architecture))


def _read_spaces(path: Union[str, os.PathLike]) -> dict:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Invalid cost model file {str(path)!r}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("spaces"), dict):
        raise ValueError(
            f"Invalid cost model file {str(path)!r}. Expected a JSON object with a 'spaces' object. "
            f"Received keys: {sorted(data) if isinstance(data, dict) else type(data).__name__}"
        )
    return data


def load_linear_cost_model(path: Union[str, os.PathLike], space: SearchSpace, name: str = None) -> LinearCostModel:
    """Loads the coefficients of `space` (by its reference name) from a JSON coefficient file."""
    data = _read_spaces(path)
    entry = data["spaces"].get(space.reference_name)
    if entry is None:
        raise ValueError(
            f"Invalid cost model file {str(path)!r}: no coefficients for search space {space.name!r}. Expected a "
            f"key {space.reference_name!r} in 'spaces'. Received: {sorted(data['spaces'])}"
        )
    provenance = {key: value for key, value in data.items() if key != "spaces"}
    name = name or pathlib.Path(path).stem
    return LinearCostModel(space, entry["bias"], entry["kernel"], name=name, provenance=provenance)


def save_linear_cost_model(path: Union[str, os.PathLike], space: SearchSpace, bias: float, kernel, provenance: dict):
    """Writes (or adds `space` to) a coefficient file, atomically (temporary file + rename).

    Other spaces already in the file are kept. Coefficients are stored as float32 values
    written as the shortest decimal that round-trips.

    Args:
      path: the JSON file.
      space: the search space the coefficients belong to (stored under its reference name).
      bias: the constant term.
      kernel: `num_features(space)` coefficients.
      provenance: top-level fields describing the source (device, date, measurement setup...).
    """
    model = LinearCostModel(space, bias, kernel)  # validates the kernel length
    if not isinstance(provenance, dict) or "spaces" in provenance:
        raise ValueError(
            "Invalid value for argument `provenance`. Expected a dict without a 'spaces' key. "
            f"Received: provenance={provenance!r}"
        )
    path = pathlib.Path(path)
    data = _read_spaces(path) if path.exists() else {"spaces": {}}
    data.update(provenance)
    data["spaces"][space.reference_name] = {
        "bias": float(np.float32(bias)),
        "kernel": [float(value) for value in model.kernel],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False)
    try:
        with handle:
            json.dump(data, handle)
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


@register_cost_model("pixel1")
@functools.lru_cache(maxsize=None)
def pixel1_cost_model(space: SearchSpace) -> LinearCostModel:
    """The simulated Pixel-1 latency model (ms) of the reference implementation."""
    return load_linear_cost_model(PIXEL1_PATH, space, name="pixel1")
