"""The TuNAS controller: one independent categorical distribution per decision.

The policy π(α) has one logits vector per decision, zero-initialised (so the initial policy
samples uniformly). A decision nested inside an option of another decision (the kernel size of
a skippable layer) only matters when that option is chosen; `log_prob` and `entropy` count it
only then, so that gradients never flow into decisions that did not affect the sampled network.

Sampling is stateless (an explicit int32 seed of shape [2]), so a search resumed from a
checkpoint draws exactly what an uninterrupted one draws.

References: Bender et al., CVPR 2020, §3 (REINFORCE over independent categoricals), §4.3
(op and filter warmup).
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np
import tensorflow as tf

from tunas_keras.masks import WarmupDropout, padded_one_hot_masks, unpad_masks
from tunas_keras.schema import Architecture, SearchSpace, decision_parents

# Logit of the padding entries of the [num_decisions, max_choices] matrix: finite (so that
# 0 * padding stays 0) and small enough that exp() underflows to exactly 0 in float32.
PADDING_LOGIT = -1e9
# A choice is active in a (warmup) mask when its weight exceeds this (as the reference).
ACTIVE_MASK_THRESHOLD = 1e-6


class Sample(NamedTuple):
    """A sampled architecture with the masks the supernet trains it with (after op / filter warmup).

    Every field may carry leading batch dimensions (e.g. `[K, ...]` for K samples).

    Attributes:
      indices: int32 `[num_decisions]`, the controller's draw.
      masks: float32 `[num_decisions, max_choices]`, the per-decision masks after warmup,
        zero-padded (`tunas_keras.masks.pad_masks`).
      replaced: bool `[num_decisions]`, the decisions that warmup replaced.
      probability: float32 `[num_decisions]`, each decision's replacement probability.
    """

    indices: tf.Tensor
    masks: tf.Tensor
    replaced: tf.Tensor
    probability: tf.Tensor


def decision_ancestors(space: SearchSpace) -> list[list[tuple[int, int]]]:
    """For each decision, every (position, choice) that must hold for it to be active."""
    parents = decision_parents(space.spec)
    ancestors = []
    for parent in parents:
        chain = []
        while parent is not None:
            chain.append(parent)
            parent = parents[parent[0]]
        ancestors.append(chain)
    return ancestors


class Controller(tf.Module):
    """Independent categorical distributions over the decisions of a search space.

    Args:
      space: the search space.
      name: module name (also prefixes the variable names).

    Example:
      >>> controller = Controller(tunas_keras.get_search_space("proxyless"))
      >>> indices = controller.sample(tf.constant([1, 2]))       # int32 [73]
      >>> controller.log_prob(indices), controller.entropy()

    References: Bender et al., CVPR 2020, §3.
    """

    def __init__(self, space: SearchSpace, name: str = "controller"):
        super().__init__(name=name)
        self.space = space
        self.num_choices = space.num_choices
        self.max_choices = max(self.num_choices)
        with self.name_scope:
            self.logits = [
                # ONLY_FIRST_REPLICA: the REINFORCE update assigns the same (all-reduced) value on
                # every replica, in replica context (legal under MirroredStrategy with it).
                tf.Variable(
                    tf.zeros([count]),
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                    name=f"logits_{position:02d}_{decision.tag}",
                )
                for position, (count, decision) in enumerate(zip(self.num_choices, space.decisions))
            ]
        self.warmup = WarmupDropout(space)
        self._valid = np.arange(self.max_choices)[None, :] < np.asarray(self.num_choices)[:, None]
        # Where each entry of the padded matrix sits in the concatenated logits (+1 padding entry).
        starts = np.cumsum([0] + list(self.num_choices[:-1]))[:, None] + np.arange(self.max_choices)[None, :]
        padded_positions = np.where(self._valid, starts, sum(self.num_choices)).reshape(-1)
        self._selection = np.zeros([sum(self.num_choices) + 1, padded_positions.size], np.float32)
        self._selection[padded_positions, np.arange(padded_positions.size)] = 1.0
        ancestors = decision_ancestors(space)
        depth = max(1, max(len(chain) for chain in ancestors))
        # Padding rows test "index 0 >= 0", which always holds.
        self._ancestor_positions = np.zeros([space.num_decisions, depth], np.int32)
        self._ancestor_choices = np.full([space.num_decisions, depth], -1, np.int32)
        for position, chain in enumerate(ancestors):
            for column, (parent, choice) in enumerate(chain):
                self._ancestor_positions[position, column] = parent
                self._ancestor_choices[position, column] = choice
        # Where each (ancestor position, choice) sits in a flattened [D, max_choices] matrix.
        self._ancestor_keys = self._ancestor_positions * self.max_choices + np.maximum(self._ancestor_choices, 0)

    def flat_logits(self) -> tf.Tensor:
        """Float32 `[sum(num_choices)]`: every decision's logits, concatenated in decision order."""
        return tf.concat(self.logits, axis=0)

    def padded_logits(self, flat_logits=None) -> tf.Tensor:
        """Float32 `[num_decisions, max_choices]`; padding entries are `PADDING_LOGIT`.

        `flat_logits`: compute it from this `flat_logits()` value (e.g. one watched by a tape).
        """
        # One concat and one matmul with a constant 0/1 selection matrix (exact: one 1 per
        # column): far fewer ops per step, forward and backward, than a pad per decision.
        flat = self.flat_logits() if flat_logits is None else flat_logits
        padded = tf.matmul(tf.concat([flat, [PADDING_LOGIT]], axis=0)[None, :], self._selection)
        return tf.reshape(padded, [len(self.num_choices), self.max_choices])

    def _padded(self, padded_logits=None) -> tf.Tensor:
        return self.padded_logits() if padded_logits is None else padded_logits

    def probabilities(self) -> list[tf.Tensor]:
        """Softmax of every decision's logits (a list of `[num_choices]` tensors)."""
        return [tf.nn.softmax(logits) for logits in self.logits]

    def sample(self, seed, batch_size: int = None, padded_logits=None) -> tf.Tensor:
        """Draws architectures, deterministically in `seed` (an int tensor of shape [2]).

        Args:
          seed: the stateless seed.
          batch_size: if given, draw that many independent architectures.
          padded_logits: draw from these `[num_decisions, max_choices]` logits (e.g. another
            controller's of the same space, chosen inside a loop) instead of this controller's.

        Returns:
          int32 `[num_decisions]`, or `[batch_size, num_decisions]` with `batch_size`.
        """
        seed = _check_seed(seed)
        count = 1 if batch_size is None else int(batch_size)
        logits = self.padded_logits() if padded_logits is None else padded_logits
        draws = tf.random.stateless_categorical(logits, count, seed=seed, dtype=tf.int32)  # [D, count]
        return draws[:, 0] if batch_size is None else tf.transpose(draws)

    def sample_masks(self, seed, op_probability=0.0, filter_probability=0.0) -> tuple[tf.Tensor, list]:
        """A sample and its per-decision masks with op / filter warmup (paper §4.3).

        Returns:
          `(indices, masks)`: the int32 `[num_decisions]` sample, and the list of float32
          `[num_choices]` masks for the supernet, in which each op decision is replaced with
          probability `op_probability` by the average of its choices and each filter decision
          with probability `filter_probability` by its largest choice.
        """
        indices, padded, _, _ = self._draw(seed, op_probability, filter_probability)
        return indices, unpad_masks(self.space, padded)

    def sample_with_warmup(self, seed, op_probability=0.0, filter_probability=0.0, padded_logits=None) -> Sample:
        """As `sample_masks` (the same draws), as a `Sample` that `log_prob` / `entropy` score.

        `padded_logits`: as in `sample` (draw from another controller's logits of this space).
        """
        return Sample(*self._draw(seed, op_probability, filter_probability, padded_logits))

    def _draw(self, seed, op_probability, filter_probability, padded_logits=None):
        sample_seed, warmup_seed = tf.unstack(tf.random.experimental.stateless_split(_check_seed(seed), 2))
        indices = self.sample(sample_seed, padded_logits=padded_logits)
        masks, replaced, probability = self.warmup.replace_padded(
            padded_one_hot_masks(self.space, indices), op_probability, filter_probability, warmup_seed
        )
        return indices, masks, replaced, probability

    def active(self, sample: Union[tf.Tensor, Sample]) -> tf.Tensor:
        """Bool `[..., num_decisions]`: whether each decision matters for `sample`.

        For indices: every choice on the path to the decision is the chosen one. For a `Sample`
        (as the reference): every choice on the path has a mask weight > 1e-6, so under op
        warmup the decisions nested in an averaged op are active too.
        """
        required = tf.constant(self._ancestor_choices)
        if isinstance(sample, Sample):
            self._check_indices(sample.indices)
            flat = tf.reshape(sample.masks, tf.concat([tf.shape(sample.masks)[:-2], [-1]], axis=0))
            on = tf.gather(flat, tf.constant(self._ancestor_keys), axis=-1) > ACTIVE_MASK_THRESHOLD  # [..., D, depth]
        else:
            indices = self._check_indices(sample)
            on = tf.gather(indices, tf.constant(self._ancestor_positions), axis=-1) == required
        return tf.reduce_all(on | (required < 0), axis=-1)

    def log_prob(self, sample: Union[tf.Tensor, Sample], padded_logits=None) -> tf.Tensor:
        """Log-probability over the active decisions: `[..., num_decisions]` (or a `Sample`) -> `[...]`.

        A `Sample` is scored as the reference scores a warmup sample: a replaced decision
        contributes `log q` (no gradient), the others `log(1 − q) + log π(choice)`, with `q` the
        replacement probability; without replacements this is the plain log-probability.
        `padded_logits`: score under these (e.g. computed inside a gradient tape from one watched
        `flat_logits()` value) instead of reading the variables.
        """
        indices = self._check_indices(sample.indices if isinstance(sample, Sample) else sample)
        log_probs = tf.nn.log_softmax(self._padded(padded_logits))  # [D, C]
        one_hot = tf.one_hot(indices, self.max_choices)  # [..., D, C]
        selected = tf.reduce_sum(one_hot * log_probs, axis=-1)  # [..., D]
        if isinstance(sample, Sample):
            probability = tf.cast(sample.probability, tf.float32)
            kept = tf.math.log(tf.maximum(1.0 - probability, 1e-30)) + selected
            selected = tf.where(sample.replaced, tf.math.log(tf.maximum(probability, 1e-30)), kept)
        return tf.reduce_sum(tf.where(self.active(sample), selected, 0.0), axis=-1)

    def decision_entropies(self, padded_logits=None) -> tf.Tensor:
        """Entropy of each decision's distribution, float32 `[num_decisions]` (`padded_logits`: as `log_prob`)."""
        log_probs = tf.nn.log_softmax(self._padded(padded_logits))
        probabilities = tf.where(self._valid, tf.exp(log_probs), 0.0)
        return -tf.reduce_sum(probabilities * tf.where(self._valid, log_probs, 0.0), axis=-1)

    def entropy(self, indices=None, padded_logits=None) -> tf.Tensor:
        """Entropy of the policy, counting nested decisions only where their parent is active.

        Args:
          indices: optional `[..., num_decisions]` sample or `Sample`. With it, the sum of the
            entropies of the decisions active in that sample (for a `Sample`: active in its
            warmup masks, as the reference); without it, the exact entropy of the policy,
            `sum_d P(d is active) · H_d`, where `P(d is active)` is the product of the
            probabilities of the choices on the path to `d`.
          padded_logits: as in `log_prob`.
        """
        entropies = self.decision_entropies(padded_logits)
        if indices is not None:
            return tf.reduce_sum(tf.where(self.active(indices), entropies, 0.0), axis=-1)
        probabilities = tf.where(self._valid, tf.nn.softmax(self._padded(padded_logits)), 0.0)
        flat = tf.reshape(probabilities, [-1])
        ancestors = tf.where(self._ancestor_choices >= 0, tf.gather(flat, self._ancestor_keys), 1.0)
        return tf.reduce_sum(tf.reduce_prod(ancestors, axis=-1) * entropies)

    def most_likely(self) -> tf.Tensor:
        """The argmax of every decision, int32 `[num_decisions]` (the search's final answer)."""
        return tf.stack([tf.argmax(logits, output_type=tf.int32) for logits in self.logits])

    def most_likely_architecture(self) -> Architecture:
        return self.space.architecture([int(index) for index in self.most_likely().numpy()])

    def _check_indices(self, indices) -> tf.Tensor:
        indices = tf.convert_to_tensor(indices)
        if not indices.dtype.is_integer or indices.shape.rank is None or indices.shape.rank < 1:
            raise ValueError(
                "Invalid value for argument `indices`. Expected an int tensor of shape "
                f"[..., {self.space.num_decisions}]. "
                f"Received: dtype={indices.dtype.name}, shape={indices.shape}"
            )
        if indices.shape[-1] != self.space.num_decisions:
            raise ValueError(
                "Invalid value for argument `indices`. Expected an int tensor of shape "
                f"[..., {self.space.num_decisions}]. "
                f"Received: shape={indices.shape}"
            )
        return tf.cast(indices, tf.int32)


def _check_seed(seed) -> tf.Tensor:
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape != (2,):
        raise ValueError(
            "Invalid value for argument `seed`. Expected an int tensor of shape [2]. "
            f"Received: dtype={seed.dtype.name}, shape={seed.shape}"
        )
    return tf.cast(seed, tf.int32)
