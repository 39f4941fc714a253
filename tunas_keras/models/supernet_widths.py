"""Widths that depend on decisions, and the per-call state the supernet's ops read them from.

A width that depends on decisions is a `Combination`: one candidate value per combination of
the choices of some decisions (e.g. a bottleneck's inner width depends on the input block's
`filters` and on the layer's `expansion`). Its channel mask is linear in each decision mask:

    m[c] = sum_k w_k · [c < value_k],   w = outer product of the decisions' masks (flattened)

so one-hot masks select exactly the chosen width and fractional masks also work. Its *count*
(for the "slice" execution) is the largest candidate with a non-zero weight: the number of
leading channels whose mask is not zero.

`CallContext` holds what one supernet call computed from the per-decision masks (channel masks,
counts, op selections) and how the ops should run (execution mode, one-hot promise). Ops read
widths through it: `context.mask(width)`, `context.channels(width, gate)`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tunas_keras.specs import squeeze_excite_filters

EXECUTION_MODES = ("mask", "slice")


@dataclasses.dataclass(frozen=True)
class Combination:
    """A quantity that depends on some decisions: one value per combination of their choices.

    Attributes:
      factors: positions of the decisions it depends on (in `space.decisions`).
      shape: their numbers of choices.
      values: for widths, the width of each combination (row-major over `shape`).
    """

    factors: tuple = ()
    shape: tuple = ()
    values: tuple = ()

    @property
    def key(self) -> str:
        return f"{self.factors}:{self.values}"

    @property
    def max_value(self) -> int:
        return max(self.values)

    def weights(self, masks: Sequence[tf.Tensor]) -> tf.Tensor:
        """Outer product of the factors' masks, flattened (row-major); `[1.]` when constant."""
        if not self.factors:
            return tf.ones([1], tf.float32)
        result = masks[self.factors[0]]
        for factor in self.factors[1:]:
            result = tf.reshape(result[:, None] * masks[factor][None, :], [-1])
        return result

    def channel_mask(self, masks: Sequence[tf.Tensor]) -> tf.Tensor:
        """`(max_value,)` float32: the weighted sum of the k-of-n masks of the candidate widths."""
        if not self.factors:
            return tf.ones([self.values[0]], tf.float32)
        table = np.arange(self.max_value)[:, None] < np.asarray(self.values)[None, :]  # [channel, candidate]
        return tf.linalg.matvec(tf.constant(table, tf.float32), self.weights(masks))

    def count(self, masks: Sequence[tf.Tensor]):
        """The largest candidate width with a non-zero weight (int32 scalar; a Python int if constant)."""
        if not self.factors:
            return int(self.values[0])
        values = tf.constant(self.values, tf.int32)
        return tf.reduce_max(tf.where(self.weights(masks) > 0, values, 0))

    def index(self, indices: Sequence[int]) -> int:
        """The flat combination index of an architecture's `indices`."""
        if not self.factors:
            return 0
        return int(np.ravel_multi_index([indices[factor] for factor in self.factors], self.shape))

    def value(self, indices: Sequence[int]) -> int:
        return self.values[self.index(indices)]

    def mapped(self, function) -> "Combination":
        """The same dependence with every value passed through `function`."""
        return Combination(self.factors, self.shape, tuple(function(value) for value in self.values))

    def times(self, factor: Optional[int], num_choices: int, function) -> "Combination":
        """A new width depending also on decision `factor`: `function(value, choice_index)`."""
        if factor is None:
            return self.mapped(lambda value: function(value, 0))
        values = tuple(function(value, choice) for value in self.values for choice in range(num_choices))
        return Combination(self.factors + (factor,), self.shape + (num_choices,), values)


def constant_width(value: int) -> Combination:
    return Combination(values=(int(value),))


def squeeze_excite_width(inner: Combination) -> Combination:
    """Hidden width of the SE module, `specs.squeeze_excite_filters` of the CHOSEN inner width."""
    return inner.mapped(squeeze_excite_filters)


# A branch with weight 0 still runs in the "slice" execution (no control flow), on one channel:
# convolutions refuse zero-sized kernels. Its output is multiplied by 0 and padded away.
INACTIVE_CHANNELS = 1


@dataclasses.dataclass(frozen=True)
class CallContext:
    """What one supernet call computed from the masks, and how its ops run.

    Attributes:
      masks: `{width key: (max_value,) float32 channel mask}`; None for constant widths and in
        the "slice" execution (nothing to multiply there).
      selections: `{selection key: weights of an op decision's branches}`.
      execution: `"mask"` (every tensor at its full width, masked channels zero: static shapes,
        XLA) or `"slice"` (tensors cut to the active channels, branches with weight 0 to
        `INACTIVE_CHANNELS`: compute follows the sampled child). "slice" takes each channel
        mask as its support: filter masks must be one-hot (a sampled width, or the largest under
        filter warmup, as the search makes them); fractional filter masks need "mask".
      one_hot: the caller promises one-hot op masks (kernel-size choices then run one merged
        branch; see `tunas_keras.layers.choice`).
      counts: `{width key: active channel count}` ("slice" only).
    """

    masks: dict
    selections: dict
    execution: str = "mask"
    one_hot: bool = False
    counts: Optional[dict] = None
    _gated: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def create(cls, widths: dict, selections: dict, masks: Sequence[tf.Tensor], execution: str, one_hot: bool):
        if execution not in EXECUTION_MODES:
            raise ValueError(
                f"Invalid value for argument `execution`. Expected one of {EXECUTION_MODES}. Received: {execution!r}"
            )
        slicing = execution == "slice"
        counts = {key: width.count(masks) for key, width in widths.items()} if slicing else None
        return cls(
            # A constant width masks nothing, and a sliced tensor keeps exactly its active
            # channels: None lets the layers skip the multiplication by the mask.
            masks={
                key: None if slicing or not width.factors else width.channel_mask(masks)
                for key, width in widths.items()
            },
            selections={key: selection.weights(masks) for key, selection in selections.items()},
            execution=execution,
            one_hot=bool(one_hot),
            counts=counts,
        )

    @property
    def static_shapes(self) -> bool:
        return self.execution == "mask"

    def mask(self, width: Combination) -> Optional[tf.Tensor]:
        """The channel mask of `width` (None for a constant width: every channel active)."""
        return self.masks[width.key]

    def channels(self, width: Combination, gate=None):
        """The channel count a tensor of `width` has under this call (None: the full width, static)."""
        if self.counts is None:
            return None
        count = self.counts[width.key]
        if gate is None:
            return count
        key = (width.key, id(gate))  # computed once per width and branch within this call
        if key not in self._gated:
            self._gated[key] = (
                gate,
                tf.where(gate > 0, count, INACTIVE_CHANNELS),
            )  # keeps `gate` alive: ids stay unique
        return self._gated[key][1]
