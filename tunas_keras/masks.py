"""Per-decision masks: the format in which the controller hands an architecture to the supernet.

An architecture of a space with D decisions is passed to the supernet as a list of D float32
vectors; vector d has one entry per choice of decision d. A sampled architecture gives one-hot
vectors. Op and filter warmup (paper §4.3, `WarmupDropout`) make some of them fractional:

- an *op decision* (kernel size, squeeze-and-excite, keep/skip, ...) is computed by a
  `ChoiceBlock` as the mask-weighted sum of its branches, so the uniform vector `1/n` means
  "all ops on, averaged" (for a skippable layer: 0.5·op + 0.5·zero);
- a *filter decision* (a block's width, a bottleneck's expansion) is computed by channel
  masking; warmup replaces it by the one-hot of its largest choice.

Randomness is stateless (explicit `seed` tensors), so that a search resumed from a checkpoint
draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tunas_keras.schema import Architecture, Decision, SearchSpace

FILTER_TAGS = ("filters", "expansion")


def is_filter_decision(decision: Decision) -> bool:
    """Whether the decision is implemented by channel masking (else by a `ChoiceBlock`)."""
    return decision.tag in FILTER_TAGS


def one_hot_masks(space: SearchSpace, indices) -> list:
    """One-hot masks of an architecture.

    Args:
      space: the search space.
      indices: an `Architecture`, a sequence of ints or an int tensor of shape `[num_decisions]`.

    Returns:
      A list of `space.num_decisions` float32 tensors of shapes `[num_choices]`.
    """
    if isinstance(indices, Architecture):
        indices = space.validate_indices(indices.indices)
    elif not tf.is_tensor(indices):
        indices = space.validate_indices(indices)
    indices = tf.convert_to_tensor(indices, tf.int32)
    return [tf.one_hot(indices[position], count, dtype=tf.float32) for position, count in enumerate(space.num_choices)]


def uniform_masks(space: SearchSpace) -> list:
    """Every op decision averaged and every filter decision at its largest choice (full warmup)."""
    return [_warm_mask(decision) for decision in space.decisions]


def _warm_mask(decision: Decision) -> tf.Tensor:
    count = decision.num_choices
    if is_filter_decision(decision):
        return tf.one_hot(count - 1, count, dtype=tf.float32)
    return tf.fill([count], 1.0 / count)


class WarmupDropout(tf.Module):
    """Op and filter warmup (paper §4.3) applied to a list of per-decision masks.

    With probability `op_probability` each op decision (independently) is replaced by the
    uniform average of its choices; with probability `filter_probability` each filter decision
    is replaced by its largest choice. The schedule (p decaying 1 → 0 over the first 25 % of the
    search) is supplied by the caller each step.

    Args:
      space: the search space whose masks are transformed.

    References: Bender et al., CVPR 2020, §4.3 ("Op and filter warmup").
    """

    def __init__(self, space: SearchSpace, name: str = "warmup_dropout"):
        super().__init__(name=name)
        self.space = space
        self._is_filter = [is_filter_decision(decision) for decision in space.decisions]
        self._warm_padded = pad_masks(space, [_warm_mask(decision) for decision in space.decisions])

    def __call__(self, masks: Sequence[tf.Tensor], op_probability, filter_probability, seed) -> list:
        """Returns the masks with warmup replacements.

        Args:
          masks: `num_decisions` float32 vectors (usually one-hot).
          op_probability: scalar in [0, 1].
          filter_probability: scalar in [0, 1].
          seed: int32 tensor of shape [2] for the stateless draws.
        """
        return self.replace(masks, op_probability, filter_probability, seed)[0]

    def replace(self, masks: Sequence[tf.Tensor], op_probability, filter_probability, seed) -> tuple:
        """As `__call__`, also returning which decisions were replaced and with what probability.

        Returns:
          `(masks, replaced, probability)`: the list of masks, bool `[num_decisions]` (drawn
          for replacement, even where the replacement equals the original mask) and float32
          `[num_decisions]` (each decision's replacement probability). The controller scores
          a warmup sample with them, as the reference does (`Controller.log_prob`).
        """
        if len(masks) != self.space.num_decisions:
            raise ValueError(
                f"Invalid value for argument `masks`. Expected {self.space.num_decisions} masks. Received: {len(masks)}"
            )
        padded, replaced, probability = self.replace_padded(
            pad_masks(self.space, masks), op_probability, filter_probability, seed
        )
        return unpad_masks(self.space, padded), replaced, probability

    def replace_padded(self, padded, op_probability, filter_probability, seed) -> tuple:
        """`replace` on the `[num_decisions, max_choices]` form (`pad_masks`): a few ops, not a few per decision.

        The same draws and values as `replace`; the returned masks are zero-padded too.
        """
        draws = tf.random.stateless_uniform([self.space.num_decisions], seed=seed)
        probability = tf.where(
            self._is_filter, tf.cast(filter_probability, tf.float32), tf.cast(op_probability, tf.float32)
        )
        replaced = draws < probability
        result = tf.where(replaced[:, None], self._warm_padded, tf.cast(padded, tf.float32))
        return result, replaced, probability


def pad_masks(space: SearchSpace, masks: Sequence[tf.Tensor]) -> tf.Tensor:
    """The list of per-decision masks as one float32 `[num_decisions, max_choices]` (zero-padded)."""
    width = max(space.num_choices)
    padded = [tf.pad(tf.cast(mask, tf.float32), [[0, width - count]]) for mask, count in zip(masks, space.num_choices)]
    return tf.stack(padded)


def padded_one_hot_masks(space: SearchSpace, indices: tf.Tensor) -> tf.Tensor:
    """`pad_masks(space, one_hot_masks(space, indices))` of an int tensor `[..., num_decisions]`, in one op."""
    return tf.one_hot(indices, max(space.num_choices), dtype=tf.float32)


def unpad_masks(space: SearchSpace, padded: tf.Tensor) -> list:
    """Inverse of `pad_masks`: `[num_decisions, max_choices]` -> list of `[num_choices]` masks.

    One gather of the valid entries and one split (not a slice per decision: this runs in every
    traced search step, where each op costs tracing time).
    """
    width = max(space.num_choices)
    valid = [position * width + choice for position, count in enumerate(space.num_choices) for choice in range(count)]
    return tf.split(tf.gather(tf.reshape(padded, [-1]), valid), space.num_choices)
