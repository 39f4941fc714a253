"""Rewards that trade quality Q(α) against cost T(α) around a target T0 (β < 0).

With `ratio = T / T0`:

- `abs` (default): `Q + β·|ratio − 1|` — penalises both sides of the target, so one β works
  for every space (paper Finding 4).
- `mnas` (soft MnasNet reward): `Q·ratio^β` — where the search lands depends on β and on how
  quality grows with cost, so it needs a β sweep (paper Finding 5).
- `mnas_hard`: `Q` if `ratio ≤ 1` else `Q·ratio^β`.

All take and return tensors (any broadcastable shapes), so they run inside `tf.function`.

References: Bender et al., CVPR 2020, §4.2 ("Absolute value reward"); Tan et al., MnasNet, §3.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

DEFAULT_BETA = -0.10


def abs_reward(quality, cost, target, beta) -> tf.Tensor:
    """`Q + β·|T/T0 − 1|`."""
    return quality + beta * tf.abs(cost / target - 1.0)


def mnas_reward(quality, cost, target, beta) -> tf.Tensor:
    """`Q·(T/T0)^β` (MnasNet's soft constraint)."""
    return quality * tf.pow(cost / target, beta)


def mnas_hard_reward(quality, cost, target, beta) -> tf.Tensor:
    """`Q` when `T ≤ T0`, else `Q·(T/T0)^β` (MnasNet's hard constraint)."""
    ratio = cost / target
    return tf.where(ratio <= 1.0, quality, quality * tf.pow(ratio, beta))


REWARDS: dict[str, Callable] = {
    "abs": abs_reward,
    "mnas": mnas_reward,
    "mnas_hard": mnas_hard_reward,
}


class Reward:
    """A named reward with its cost target and exponent.

    Args:
      name: one of `REWARDS` ("abs", "mnas", "mnas_hard").
      target: T0 (> 0), in the cost model's units (ms for Pixel-1).
      beta: β (< 0): how strongly the cost is penalised.

    Raises:
      ValueError: unknown name, `beta >= 0` or `target <= 0`.
    """

    def __init__(self, name: str = "abs", target: float = 84.0, beta: float = DEFAULT_BETA):
        if name not in REWARDS:
            raise ValueError(
                f"Invalid value for argument `name`. Expected one of {sorted(REWARDS)}. Received: name={name!r}"
            )
        if not float(beta) < 0:
            raise ValueError(f"Invalid value for argument `beta`. Expected a negative number. Received: beta={beta!r}")
        if not float(target) > 0:
            raise ValueError(
                f"Invalid value for argument `target`. Expected a positive cost target. Received: target={target!r}"
            )
        self.name = name
        self.target = float(target)
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, target={self.target}, beta={self.beta})"

    def __call__(self, quality, cost) -> tf.Tensor:
        """Float32 rewards of (broadcastable) `quality` and `cost` tensors."""
        quality = tf.cast(quality, tf.float32)
        cost = tf.cast(cost, tf.float32)
        return REWARDS[self.name](quality, cost, tf.constant(self.target), tf.constant(self.beta))


def get_reward(name: str = "abs", target: float = 84.0, beta: float = DEFAULT_BETA) -> Reward:
    """A `Reward` by name (see `Reward` for the arguments)."""
    return Reward(name, target, beta)
