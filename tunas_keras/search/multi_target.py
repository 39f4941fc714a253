"""Several cost targets in one search: one controller, baseline and optimizer per target.

A search with targets T_1 … T_N (`--target_latency=60,84,110`) keeps one shared supernet and N
policies. Each step, the K architectures a replica samples are divided among the policies in
contiguous blocks of K / N: sample k is drawn from policy `k // (K / N)`, the shared weights
train on all K micro-batches, and policy i's REINFORCE update (its own zero-debiased baseline
and cross-sample Adam) sees only the samples of its block, each rewarded against its own
target, e.g. `Q + β·|T/T_i − 1|` (the same reward and β for every target). Warmup and the RL
delay are those of a single search.

With one target every method is exactly the single-policy code (the same ops on the same
random streams), so a single-target search is unchanged, bit for bit.

    >>> policies = TargetPolicies(space, targets=[60.0, 84.0, 110.0], samples_per_step=6)
    >>> policies.owner(4)                                       # sample 4 belongs to target 84
    >>> rewards = policies.reward(quality, cost)                # [6], each against its own target
    >>> stats = policies.step(samples, rewards, learning_rate)  # one dict per target

References: Bender et al., CVPR 2020, §3–§4 (one target per search); design.md §5.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import tensorflow as tf

from tunas_keras.schema import SearchSpace
from tunas_keras.search.controller import Controller, Sample
from tunas_keras.search.reinforce import Reinforce
from tunas_keras.search.rewards import DEFAULT_BETA, get_reward


def parse_targets(value, default: float, argument: str = "target_latency") -> list[float]:
    """The cost targets of a `target_latency` config value: a number, a list of numbers, or None (`default`).

    (The config coerces "60,84,110" on the command line or in a file to a list.) Errors name `argument`.

    Raises:
      ValueError: a value that is not a positive finite number, or the same target twice.
    """
    if value is None:
        return [float(default)]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        targets = [float(item) for item in items if not isinstance(item, bool)]
    except (TypeError, ValueError):
        targets = []
    if not targets or len(targets) != len(items) or not all(math.isfinite(t) and t > 0 for t in targets):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a positive number or a comma-separated list of "
            f"positive numbers (e.g. 60,84,110). Received: {value!r}"
        )
    if len(set(targets)) != len(targets):
        raise ValueError(f"Invalid value for argument `{argument}`. Expected distinct targets. Received: {value!r}")
    return targets


def target_label(target: float, units: str = "ms") -> str:
    """A short name of a target for file names and metric keys: "84ms", "60.5ms", "300M_MACs"."""
    return f"{target:g}" + re.sub(r"[^A-Za-z0-9]+", "_", units).strip("_")


class TargetPolicies:
    """One `Controller` + `Reinforce` + reward per cost target, over one search space.

    Create it under the strategy's scope (it creates the controllers' variables); call
    `sample_with_warmup`, `reward` and `step` inside `strategy.run` (or without a strategy).

    Args:
      space: the search space (shared by every policy).
      targets: the cost targets T_i, in the cost model's units.
      samples_per_step: K, the samples a replica draws per step; a multiple of `len(targets)`.
      reward: the reward's name (`tunas_keras.search.rewards.REWARDS`).
      beta: the reward's β (< 0), the same for every target.
      entropy_weight: of each policy's `Reinforce`.

    Attributes:
      controllers, reinforces, rewards: one per target, in the order of `targets`. With one
        target they are named "controller" and "reinforce" (as a single search's); else
        "controller_<i>" and "reinforce_<i>".
    """

    def __init__(
        self,
        space: SearchSpace,
        targets: Sequence[float],
        samples_per_step: int,
        reward: str = "abs",
        beta: float = DEFAULT_BETA,
        entropy_weight: float = 0.0,
    ):
        self.targets = [float(target) for target in targets]
        self.num_targets = len(self.targets)
        self.samples_per_step = int(samples_per_step)
        if self.num_targets < 1 or self.samples_per_step < 1 or self.samples_per_step % self.num_targets:
            raise ValueError(
                f"Invalid value for argument `samples_per_step`: {samples_per_step} samples per step do not divide "
                f"among {self.num_targets} target(s). Expected a positive multiple of {self.num_targets}. "
                f"Received: samples_per_step={samples_per_step!r}"
            )
        self.per_target = self.samples_per_step // self.num_targets
        self.rewards = [get_reward(reward, beta=beta, target=target) for target in self.targets]
        self.controllers, self.reinforces = [], []
        for index in range(self.num_targets):
            suffix = "" if self.num_targets == 1 else f"_{index}"
            controller = Controller(space, name="controller" + suffix)
            self.controllers.append(controller)
            self.reinforces.append(Reinforce(controller, entropy_weight=entropy_weight, name="reinforce" + suffix))

    def owner(self, index):
        """The target (policy) whose block holds sample `index` of a replica's step (int or int tensor)."""
        return index // self.per_target

    def counts(self, counts: Optional[Sequence[int]] = None) -> list[int]:
        """Samples per target: `counts` (checked: non-negative, summing to K) or K / N each."""
        counts = [self.per_target] * self.num_targets if counts is None else [int(count) for count in counts]
        if len(counts) != self.num_targets or min(counts) < 0 or sum(counts) != self.samples_per_step:
            raise ValueError(
                f"Invalid value for argument `counts`. Expected {self.num_targets} non-negative sample counts summing "
                f"to {self.samples_per_step}. Received: {counts}"
            )
        return counts

    def sample(self, seed, count: Optional[int] = None) -> tf.Tensor:
        """`count` (default K) architectures `[count, num_decisions]`, in blocks of `count / N` per target.

        Target i draws its block with the seed folded with i; with one target, exactly
        `Controller.sample(seed, count)`.
        """
        count = self.samples_per_step if count is None else int(count)
        if self.num_targets == 1:
            return self.controllers[0].sample(seed, count)
        if count % self.num_targets:
            raise ValueError(
                f"Invalid value for argument `count`. Expected a multiple of {self.num_targets}. Received: {count}"
            )
        seed = tf.cast(seed, tf.int32)
        return tf.concat(
            [
                controller.sample(tf.random.experimental.stateless_fold_in(seed, index), count // self.num_targets)
                for index, controller in enumerate(self.controllers)
            ],
            axis=0,
        )

    def sample_with_warmup(self, index, seed, op_probability=0.0, filter_probability=0.0) -> Sample:
        """Sample `index` of a replica's step, from its owner's policy (`Controller.sample_with_warmup`).

        With several targets the owner's logits are picked with a gather, so that a
        `tf.while_loop` over the K samples traces its body (the supernet's step) only once.
        """
        if self.num_targets == 1:
            return self.controllers[0].sample_with_warmup(seed, op_probability, filter_probability)
        logits = tf.gather(tf.stack([controller.padded_logits() for controller in self.controllers]), self.owner(index))
        return self.controllers[0].sample_with_warmup(seed, op_probability, filter_probability, padded_logits=logits)

    def split(self, values, counts: Optional[Sequence[int]] = None) -> list:
        """A `[K, ...]` tensor or `Sample` as one block per target (`counts` samples each)."""
        counts = self.counts(counts)
        starts = [sum(counts[:index]) for index in range(self.num_targets)]
        if isinstance(values, Sample):
            return [Sample(*(field[start : start + size] for field in values)) for start, size in zip(starts, counts)]
        return [values[start : start + size] for start, size in zip(starts, counts)]

    def reward(self, quality, cost, counts: Optional[Sequence[int]] = None) -> tf.Tensor:
        """Float32 `[K]`: each sample's reward against its own target (one target: `Reward(quality, cost)`)."""
        if self.num_targets == 1:
            return self.rewards[0](quality, cost)
        blocks = zip(self.rewards, self.split(quality, counts), self.split(cost, counts))
        return tf.concat([reward(block_quality, block_cost) for reward, block_quality, block_cost in blocks], axis=0)

    def step(self, samples, rewards, learning_rate, counts: Optional[Sequence[int]] = None) -> list:
        """One REINFORCE update per target from its own block of samples and rewards only.

        Args:
          samples: `[K, num_decisions]` indices or a `Sample` of `[K, ...]` fields.
          rewards: float32 `[K]` (`reward`).
          learning_rate: the step's RL learning rate (the same for every target).
          counts: samples per target (default K / N each). A target with 0 samples is not
            updated at all (policy, baseline and optimizer state stay as they are).

        Returns:
          One `Reinforce.step` dict per target (None for a target without samples).
        """
        if self.num_targets == 1:
            return [self.reinforces[0].step(samples, rewards, learning_rate)]
        counts = self.counts(counts)
        blocks = zip(self.reinforces, self.split(samples, counts), self.split(rewards, counts), counts)
        return [
            reinforce.step(block, block_rewards, learning_rate) if count else None
            for reinforce, block, block_rewards, count in blocks
        ]

    def reset(self) -> None:
        """Every policy back to its initial state (`Reinforce.reset`)."""
        for reinforce in self.reinforces:
            reinforce.reset()
