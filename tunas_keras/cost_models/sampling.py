"""Uniform random architectures, optionally restricted to a cost range (random-search baseline).

Every decision is drawn independently and uniformly (as the controller's initial policy and the
reference random-search tool do); samples outside `[min_cost, max_cost]` are rejected.

References: Bender et al., CVPR 2020, §5.1 (random search baseline: T0 ± 1 ms).
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from tunas_keras import specs
from tunas_keras.cost_models.base import CostModel
from tunas_keras.cost_models.lookup import get_cost_model
from tunas_keras.schema import SearchSpace

DRAW_BATCH = 4096
# The float32 batch costs pre-select candidates; each candidate is then checked in float64.
PRESELECT_MARGIN = 1e-2


def extreme_indices(space: SearchSpace) -> tuple[tuple, tuple]:
    """`(smallest, largest)` index tuples of `space`.

    Smallest: every skippable layer skipped, every other decision at its first choice. Largest:
    nothing skipped, every other decision at its last choice (largest kernel, expansion, width, SE).
    """
    smallest, largest = [], []
    for decision in space.decisions:
        skips = [index for index, choice in enumerate(decision.choices) if isinstance(choice, specs.Zero)]
        smallest.append(skips[0] if skips else 0)
        largest.append(0 if skips else decision.num_choices - 1)
    return tuple(smallest), tuple(largest)


def uniform_indices(space: SearchSpace, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` uniform architectures, int32 `[count, num_decisions]`."""
    return np.stack([rng.integers(0, choices, size=count) for choices in space.num_choices], axis=1).astype(np.int32)


def sample_architectures(
    space: SearchSpace,
    cost_model: Union[str, CostModel],
    num_samples: int,
    min_cost: Optional[float] = None,
    max_cost: Optional[float] = None,
    seed: int = 0,
    max_draws: int = 10_000_000,
) -> list[dict]:
    """Uniform architectures of `space` whose cost lies in `[min_cost, max_cost]`.

    Args:
      space: the search space.
      cost_model: a `CostModel` of `space` or anything `get_cost_model` accepts.
      num_samples: how many architectures to return.
      min_cost: lower bound (inclusive), or None.
      max_cost: upper bound (inclusive), or None.
      seed: seed of the numpy generator (same seed, same list).
      max_draws: give up (ValueError) after drawing this many candidates.

    Returns:
      A list of `Architecture.to_dict()` dicts with an added `"cost"` (float64).
    """
    model = get_cost_model(cost_model, space)
    if num_samples < 0:
        raise ValueError(
            f"Invalid value for argument `num_samples`. Expected >= 0. Received: num_samples={num_samples}"
        )
    low = -np.inf if min_cost is None else float(min_cost)
    high = np.inf if max_cost is None else float(max_cost)
    if low > high:
        raise ValueError(
            f"Invalid cost range. Expected min_cost <= max_cost. Received: min_cost={min_cost}, max_cost={max_cost}"
        )
    rng = np.random.default_rng(seed)
    samples, drawn = [], 0
    while len(samples) < num_samples:
        if drawn >= max_draws:
            raise ValueError(
                f"Only {len(samples)} of {num_samples} architectures with cost in [{low}, {high}] "
                f"{model.units} after {drawn} draws; widen the range or raise `max_draws`."
            )
        batch = uniform_indices(space, rng, DRAW_BATCH)
        drawn += DRAW_BATCH
        approximate = model.batch_cost(batch).numpy()
        for row in np.flatnonzero((approximate >= low - PRESELECT_MARGIN) & (approximate <= high + PRESELECT_MARGIN)):
            architecture = space.architecture(batch[row].tolist())
            cost = model.cost(architecture)
            if low <= cost <= high and len(samples) < num_samples:
                samples.append({**architecture.to_dict(), "cost": cost})
    return samples
