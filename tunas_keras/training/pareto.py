"""The cost-accuracy front of a search: its found architectures beside uniform children.

Under the final shared weights, every architecture a search found (one per target) and uniformly
sampled children are evaluated on the same held-out batches (`child_ranking`, exactly as the
search's validation pass); pareto.json keeps the numbers and pareto.png draws accuracy against
cost, with the non-dominated points joined, so a user sees the front the search found and how it
compares with what random architectures of the same cost reach under the same weights.

    >>> result = write_search_front(model_dir, supernet, data, cost_model, index_entries)
    >>> [(entry["target_latency"], entry["cost"], entry["accuracy"]) for entry in result["found"]]

A multi-target search writes both files at its end; `tools/rank_children.py --pareto_plot` does
it for any search directory.
"""

from __future__ import annotations

import io
import json
import os
from typing import Sequence

import numpy as np

from tunas_keras.training.child_ranking import rank_supernet_children
from tunas_keras.training.trainer import write_atomic

# What a search evaluates at its end: 24 uniform children, 4 held-out batches of 128 images.
NUM_CHILDREN = 24
NUM_BATCHES = 4
BATCH_SIZE = 128


def pareto_optimal(costs: Sequence[float], accuracies: Sequence[float]) -> np.ndarray:
    """Bool mask of the non-dominated points: no other point is at most as dear and at least as
    accurate, and strictly better in one of the two."""
    costs, accuracies = np.asarray(costs, np.float64), np.asarray(accuracies, np.float64)
    no_dearer = costs[None, :] <= costs[:, None]  # [i, j]: j costs no more than i
    no_worse = accuracies[None, :] >= accuracies[:, None]
    strictly = (costs[None, :] < costs[:, None]) | (accuracies[None, :] > accuracies[:, None])
    return ~np.any(no_dearer & no_worse & strictly, axis=1)


def front_of(ranking: dict) -> list:
    """The non-dominated entries among a ranking's found architectures and children, by cost."""
    entries = ranking["found"] + ranking["children"] + [ranking["smallest"], ranking["largest"]]
    mask = pareto_optimal([entry["cost"] for entry in entries], [entry["accuracy"] for entry in entries])
    return sorted((entry for entry, keep in zip(entries, mask) if keep), key=lambda entry: entry["cost"])


def write_pareto_plot(path: str, ranking: dict, units: str = "ms") -> None:
    """Accuracy vs cost of a ranking (`child_ranking.rank_supernet_children`) as a PNG (atomically)."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure, axis = pyplot.subplots(figsize=(8, 5.5))
    others = ranking["children"] + [ranking["smallest"], ranking["largest"]]
    axis.scatter([e["cost"] for e in others], [e["accuracy"] for e in others], c="0.6", s=18, label="uniform children")
    front = front_of(ranking)
    axis.plot([e["cost"] for e in front], [e["accuracy"] for e in front], color="0.3", lw=1, label="Pareto front")
    for index, entry in enumerate(ranking["found"]):
        color = f"C{index}"
        target = entry.get("target_latency")
        axis.scatter([entry["cost"]], [entry["accuracy"]], marker="*", s=160, color=color, zorder=3)
        if target is not None:
            axis.axvline(target, color=color, ls="--", lw=0.8)
        axis.annotate(
            f"found for {target:g} {units}" if target is not None else "found",
            (entry["cost"], entry["accuracy"]),
            textcoords="offset points",
            xytext=(6, 6),
            color=color,
        )
    axis.set(
        xlabel=f"cost ({ranking['cost_model']}, {units})",
        ylabel=f"top-1 on {ranking['num_images']} held-out images (shared weights)",
        title=f"{ranking['space']}: found architectures (stars; dashed: their targets) vs uniform children",
    )
    axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())


def write_search_front(
    model_dir: str,
    supernet,
    data,
    cost_model,
    found: Sequence[dict],
    num_children: int = NUM_CHILDREN,
    num_batches: int = NUM_BATCHES,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> dict:
    """Evaluates `found` (architectures.json entries) and uniform children under `supernet`'s
    weights; writes `model_dir`/pareto.json and pareto.png; returns the ranking with its "front"."""
    ranking = rank_supernet_children(supernet, data, cost_model, num_children, num_batches, batch_size, seed, found)
    ranking["front"] = front_of(ranking)
    write_atomic(os.path.join(model_dir, "pareto.json"), json.dumps(ranking, indent=2))
    write_pareto_plot(os.path.join(model_dir, "pareto.png"), ranking, cost_model.units)
    return ranking
