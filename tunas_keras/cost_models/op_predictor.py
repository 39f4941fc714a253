"""Per-op latency predictors over the op's shape (the nn-Meter idea), for ops that were not timed.

When a space has more distinct ops than the measuring budget allows, a sample of them is timed
and the rest predicted. Ops are grouped by kind, kernel and stride (`op_group`; e.g. a 7×7
depthwise convolution may run a different kernel than a 5×5 one), and within a group the
latency is a non-negative combination of shape features: a constant (dispatch), the MACs, the
values read and written, and the same with the channels rounded up to 16 and 32 (SIMD tiles,
which make 40 channels cost nearly what 48 cost). The fit minimises the *relative* squared
error. A group with too few samples borrows the fit of its kind.

    >>> sample = sample_ops(ops, budget=600, seed=0)          # key -> Op in, keys out
    >>> predictor = OpPredictor.fit([ops[key] for key in sample], [latency_ms[key] for key in sample])
    >>> predictor.predict(ops[other_key])

References: Zhang et al., nn-Meter (MobiSys 2021): kernel-level latency predictors fitted on
sampled kernel configurations.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tunas_keras.cost_models.layer_table import Op

TILES = (16, 32)
MIN_SAMPLES_PER_GROUP = 12


def op_group(op: Op) -> str:
    """The kind, with kernel and stride for convolutions ("depthwise7x7/2", "conv1x1/1", "add")."""
    if op.kind in ("conv", "depthwise"):
        return f"{op.kind}{op.kernel_size}x{op.kernel_size}/{op.strides}"
    return op.kind


def _padded(channels: int, tile: int) -> float:
    return float(-(-channels // tile) * tile) / channels


def op_features(op: Op) -> np.ndarray:
    """[1, MACs, inputs, outputs] and, per tile of `TILES`, the same with padded channels."""
    height, width, channels = op.input_shape
    out_height, out_width, out_channels = op.output_shape
    inputs, outputs, macs = float(height * width * channels), float(out_height * out_width * out_channels), op.macs
    features = [1.0, float(macs), inputs, outputs]
    for tile in TILES:
        pad_in, pad_out = _padded(channels, tile), _padded(out_channels, tile)
        features += [macs * pad_in * pad_out, inputs * pad_in, outputs * pad_out]
    return np.asarray(features)


def _fit_group(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-negative weights minimising the relative squared error (columns scaled for conditioning)."""
    from scipy.optimize import nnls  # pylint: disable=import-outside-toplevel

    scale = np.abs(features).max(axis=0)
    scale[scale == 0] = 1.0
    weights, _ = nnls((features / scale) / targets[:, None], np.ones_like(targets), maxiter=50 * features.shape[1])
    return weights / scale


@dataclasses.dataclass
class OpPredictor:
    """Fitted weights per op group (and per kind, the fallback)."""

    weights: dict

    @classmethod
    def fit(cls, ops: Sequence[Op], latency_ms: Sequence[float]) -> "OpPredictor":
        """Fits every group with at least `MIN_SAMPLES_PER_GROUP` samples and every kind.

        Raises:
          ValueError: fewer ops than latencies, or a non-positive latency.
        """
        latency = np.asarray(latency_ms, np.float64)
        if len(ops) != len(latency) or not len(ops) or np.any(latency <= 0):
            raise ValueError(
                f"Invalid op samples. Expected as many positive latencies as ops (> 0). "
                f"Received: {len(ops)} ops, {len(latency)} latencies, min={latency.min(initial=0)}"
            )
        weights = {}
        for name, grouping in (("kind", lambda op: op.kind), ("group", op_group)):
            groups: dict[str, list] = {}
            for index, op in enumerate(ops):
                groups.setdefault(grouping(op), []).append(index)
            for group, members in groups.items():
                if name == "kind" or len(members) >= MIN_SAMPLES_PER_GROUP:
                    features = np.stack([op_features(ops[index]) for index in members])
                    weights[(name, group)] = _fit_group(features, latency[members])
        return cls(weights)

    def predict(self, op: Op) -> float:
        """Predicted latency (ms) of `op`.

        Raises:
          ValueError: no op of this kind was in the fitted sample.
        """
        weights = self.weights.get(("group", op_group(op)), self.weights.get(("kind", op.kind)))
        if weights is None:
            raise ValueError(
                f"Invalid op {op.key!r}: no op of kind {op.kind!r} was sampled, so none can be "
                "predicted. Expected a sample with every kind (see `sample_ops`)."
            )
        return float(op_features(op) @ weights)


def _bucket(op: Op) -> tuple:
    """Channels modulo the largest tile: ops of a group that the padded features tell apart."""
    return (op.input_shape[2] % TILES[-1], op.output_shape[2] % TILES[-1])


def _spread(members: list, ops: dict, rng: np.random.Generator) -> list:
    """`members` shuffled, then reordered round-robin over their buckets (every bucket early)."""
    buckets: dict[tuple, list] = {}
    for index in rng.permutation(len(members)):
        buckets.setdefault(_bucket(ops[members[index]]), []).append(members[index])
    queues = list(buckets.values())
    ordered = []
    while queues:
        ordered += [queue.pop(0) for queue in queues]
        queues = [queue for queue in queues if queue]
    return ordered


def sample_ops(ops: dict, budget: int, seed: int = 0) -> list[str]:
    """`budget` keys of `ops` (key → `Op`; one per group at least), deterministic for a seed (all
    keys if `budget` covers them).

    Every group first gets `MIN_SAMPLES_PER_GROUP` ops (fewer if the budget is too small; all if it
    has fewer), spread over the channel residues that the padded features distinguish; the rest of
    the budget is uniform.
    """
    keys = list(ops)
    if budget >= len(keys):
        return keys
    rng = np.random.default_rng([seed, 3])
    groups: dict[str, list] = {}
    for key in keys:
        groups.setdefault(op_group(ops[key]), []).append(key)
    chosen, minimum = [], max(1, min(MIN_SAMPLES_PER_GROUP, budget // len(groups)))
    for members in groups.values():
        chosen += _spread(members, ops, rng)[:minimum]
    taken = set(chosen)
    rest = [key for key in keys if key not in taken]
    extra = min(max(0, budget - len(chosen)), len(rest))
    return chosen + [rest[index] for index in rng.choice(len(rest), extra, replace=False)]
