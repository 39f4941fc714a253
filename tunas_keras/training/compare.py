"""The paper's comparison (Table 1 / Figure 1): searched architectures vs random search.

Inputs are run directories: standalone training runs of searched architectures (each with
`train_result.json`, `--protocol=valid`) and random searches (each with `summary.json`). The
table gives, per method, mean ± std over repeated runs of validation accuracy and cost; the
plot shows every random architecture as a point and marks the searched ones.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from tunas_keras.cost_models import estimate_cost
from tunas_keras.schema import Architecture
from tunas_keras.training.trainer import write_atomic


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Invalid run directory: expected {path!r} to exist.")
    with open(path) as handle:
        return json.load(handle)


def load_searched(train_dirs: list, cost_model: str = "pixel1") -> list:
    """One point per trained searched architecture: {run, cost, top1}."""
    points = []
    for directory in train_dirs:
        result = _read_json(os.path.join(directory, "train_result.json"))
        architecture = Architecture.from_dict(result["architecture"])
        cost = float(estimate_cost(architecture, cost_model=cost_model))
        points.append({"run": directory, "cost": cost, "top1": result["top1"], "protocol": result["protocol"]})
    return points


def load_random(random_dirs: list) -> tuple[list, list]:
    """All random architectures as points, and the validation-best of each random search."""
    points, best = [], []
    for directory in random_dirs:
        summary = _read_json(os.path.join(directory, "summary.json"))
        points += [{"run": directory, "cost": row["cost"], "top1": row["valid_top1"]} for row in summary["models"]]
        best.append({"run": directory, "cost": summary["best"]["cost"], "top1": summary["best"]["valid_top1"]})
    return points, best


def _mean_std(values: list) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def comparison_table(searched: list, random_points: list, random_best: list) -> str:
    """A Markdown table: method, runs, accuracy mean ± std, cost mean ± std."""
    rows = [("TuNAS search", searched)]
    if random_best:
        sizes = sorted({len([p for p in random_points if p["run"] == best["run"]]) for best in random_best})
        rows.append((f"Random search (best of N={'/'.join(map(str, sizes))})", random_best))
        rows.append(("Random search (N=1: every sample)", random_points))
    lines = ["| method | runs | valid top-1 (mean ± std) | cost (mean ± std) |", "|---|---|---|---|"]
    for name, points in rows:
        if points:
            lines.append(
                f"| {name} | {len(points)} | {_mean_std([p['top1'] for p in points])} | "
                f"{_mean_std([p['cost'] for p in points])} |"
            )
    return "\n".join(lines)


def write_plot(path: str, searched: list, random_points: list, random_best: list, target: float = None) -> None:
    """Accuracy vs cost: random architectures as points, searched ones marked (atomic PNG)."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure, axis = pyplot.subplots(figsize=(7, 5))
    axis.scatter(
        [p["cost"] for p in random_points], [p["top1"] for p in random_points], s=18, alpha=0.6, label="random"
    )
    axis.scatter(
        [p["cost"] for p in random_best],
        [p["top1"] for p in random_best],
        s=60,
        marker="s",
        facecolors="none",
        edgecolors="tab:blue",
        label="random search best",
    )
    axis.scatter(
        [p["cost"] for p in searched],
        [p["top1"] for p in searched],
        s=120,
        marker="*",
        color="tab:red",
        label="TuNAS search",
    )
    if target is not None:
        axis.axvline(target, color="k", ls="--", lw=1, label="target T0")
    axis.set(xlabel="simulated latency (ms)", ylabel="validation top-1", title="Search vs random search")
    axis.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())


def compare(train_dirs: list, random_dirs: list, output_dir: str, cost_model: str = "pixel1", target=None) -> str:
    """Writes `comparison.md` and `comparison.png` into `output_dir`; returns the table."""
    if not train_dirs and not random_dirs:
        raise ValueError("Invalid arguments: expected at least one of `searched` or `random`. Received: none")
    searched = load_searched(train_dirs, cost_model)
    random_points, random_best = load_random(random_dirs)
    table = comparison_table(searched, random_points, random_best)
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(os.path.join(output_dir, "comparison.md"), table + "\n")
    write_plot(os.path.join(output_dir, "comparison.png"), searched, random_points, random_best, target)
    return table
