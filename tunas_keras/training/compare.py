"""The paper's comparison (Table 1 / Figure 1): searched architectures vs random search.

`compare` tabulates existing run directories; `run_comparison` runs the whole comparison
(N searches, M random architectures within T0 ± 1 %, standalone training of every one, the
test-split table with the expected best-of-N random-search curve, and the plot), resumably.

Inputs of `compare` are run directories: standalone training runs of searched architectures (each with
`train_result.json`, `--protocol=valid`) and random searches (each with `summary.json`). The
table gives, per method, mean ± std over repeated runs of validation accuracy and cost; the
plot shows every random architecture as a point and marks the searched ones.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

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


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    return pyplot


def _save_png(pyplot, figure, path: str) -> None:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())


def _scatter_methods(axis, searched: list, random_points: list, key: str, target=None) -> None:
    """Random architectures as points, searched ones as stars, T0 as a dashed line (accuracy `key`)."""
    axis.scatter([p["cost"] for p in random_points], [p[key] for p in random_points], s=18, alpha=0.6, label="random")
    axis.scatter(
        [p["cost"] for p in searched],
        [p[key] for p in searched],
        s=120,
        marker="*",
        color="tab:red",
        label="TuNAS search",
    )
    if target is not None:
        axis.axvline(target, color="k", ls="--", lw=1, label="target T0")


def write_plot(path: str, searched: list, random_points: list, random_best: list, target: float = None) -> None:
    """Accuracy vs cost: random architectures as points, searched ones marked (atomic PNG)."""
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=(7, 5))
    _scatter_methods(axis, searched, random_points, "top1", target)
    axis.scatter(
        [p["cost"] for p in random_best],
        [p["top1"] for p in random_best],
        s=60,
        marker="s",
        facecolors="none",
        edgecolors="tab:blue",
        label="random search best",
    )
    axis.set(xlabel="simulated latency (ms)", ylabel="validation top-1", title="Search vs random search")
    axis.legend()
    _save_png(pyplot, figure, path)


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


# ---------------------------------------------------------------------------------------------
# The whole comparison as one resumable run (`tools/compare.py --num_searches=N --num_random=M`).


@dataclasses.dataclass
class ComparisonPlan:
    """What `run_comparison` runs: N searches (seeds `seed` ... `seed + N - 1`) and M random
    architectures within T0 ± `tolerance_percent` %, every one trained with `train` (a
    `TrainConfig` recipe; its data fields are the search's) and reported on the test split."""

    search: Any  # SearchConfig
    train: Any  # TrainConfig
    num_searches: int = 5
    num_random: int = 20
    tolerance_percent: float = 1.0
    output_dir: str = "runs/comparison"
    resamples: int = 2000


DATA_FIELDS = ("dataset", "data_dir", "held_out_fraction", "image_size", "zero_init_residual")


def _train_config(plan: ComparisonPlan, model_dir: str, **source):
    values = {**dataclasses.asdict(plan.train), **{name: getattr(plan.search, name) for name in DATA_FIELDS}}
    values.update(source, model_dir=model_dir, protocol="valid", architecture=source.get("architecture"))
    return type(plan.train)(**values)


def _test_accuracy(train_dir: str, config) -> float:
    """Top-1 on the test split of a finished training run (cached in `test_result.json`)."""
    from tunas_keras.export.sources import build_export_model, resolve_architecture  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.search_task import dataset_from_config  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.standalone_task import evaluate  # pylint: disable=import-outside-toplevel

    path = os.path.join(train_dir, "test_result.json")
    if os.path.isfile(path):
        return _read_json(path)["top1"]
    data = dataset_from_config(config)
    architecture = resolve_architecture(config.architecture, config.indices, config.space, config.reference)
    weights = os.path.join(train_dir, "model.weights.h5")
    model = build_export_model(architecture, data.num_classes, config.image_size, weights=weights)
    metrics = evaluate(model, data, "test", config.batch_size)
    write_atomic(path, json.dumps(metrics, indent=2))
    return metrics["top1"]


def _train_and_test(config) -> dict:
    """Trains (or resumes, or reads) one standalone run; `{valid_top1, test_top1}`."""
    from tunas_keras.training.train import run_training  # pylint: disable=import-outside-toplevel

    result_path = os.path.join(config.model_dir, "train_result.json")
    result = _read_json(result_path) if os.path.isfile(result_path) else run_training(config)
    return {"valid_top1": result["top1"], "test_top1": _test_accuracy(config.model_dir, config)}


def _run_searches(plan: ComparisonPlan) -> list:
    from tunas_keras.training.search import run_search  # pylint: disable=import-outside-toplevel

    rows = []
    for number in range(plan.num_searches):
        search_dir = os.path.join(plan.output_dir, "searches", f"seed_{plan.search.seed + number}")
        path = os.path.join(search_dir, "architecture.json")
        if not os.path.isfile(path):
            run_search(dataclasses.replace(plan.search, seed=plan.search.seed + number, model_dir=search_dir))
        found = _read_json(path)
        train_dir = os.path.join(plan.output_dir, "searched", f"seed_{plan.search.seed + number}")
        scores = _train_and_test(_train_config(plan, train_dir, architecture=path))
        rows.append({"run": train_dir, "indices": found["indices"], "cost": found["cost"], **scores})
    return rows


def _run_random(plan: ComparisonPlan, target: float) -> list:
    from tunas_keras.training.random_search import RandomSearchConfig, run_random_search  # pylint: disable=import-outside-toplevel

    own = {"space", "target_latency", "tolerance", "cost_model", "num_samples", "model_dir", "progress_bar"}
    fields = {field.name for field in dataclasses.fields(RandomSearchConfig)} - own
    values = {name: value for name, value in dataclasses.asdict(_train_config(plan, "")).items() if name in fields}
    random_config = RandomSearchConfig(
        **values,
        space=plan.search.space,
        target_latency=target,
        tolerance=target * plan.tolerance_percent / 100,
        cost_model=plan.search.cost_model,
        num_samples=plan.num_random,
        model_dir=os.path.join(plan.output_dir, "random"),
        progress_bar=False,
    )
    summary = run_random_search(random_config)
    rows = []
    for row in summary["models"]:
        train_dir = os.path.join(random_config.model_dir, f"model_{row['model']:03d}")
        indices = ":".join(map(str, row["indices"]))
        config = _train_config(plan, train_dir, indices=indices, space=plan.search.space)
        rows.append({"run": train_dir, "indices": row["indices"], "cost": row["cost"], **_train_and_test(config)})
    return rows


def expected_best_of_n(valid: list, test: list, resamples: int = 2000, seed: int = 0) -> list:
    """Random search with N = 1 ... len(valid) models, by resampling: the test accuracy of the
    validation-best of N models drawn without replacement; `[(N, mean, std)]` over `resamples` draws."""
    valid, test = np.asarray(valid, float), np.asarray(test, float)
    rng = np.random.default_rng(seed)
    curve = []
    for size in range(1, len(valid) + 1):
        picks = np.array([rng.choice(len(valid), size, replace=False) for _ in range(resamples)])
        best = picks[np.arange(resamples), np.argmax(valid[picks], axis=1)]
        curve.append((size, float(test[best].mean()), float(test[best].std())))
    return curve


def _mean_se(values: list) -> str:
    values = np.asarray(values, dtype=float)
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{values.mean():.4f} ± {error:.4f}"


def comparison_report(searched: list, random_rows: list, curve: list, target: float) -> str:
    """Markdown: mean ± standard error per method (test and valid top-1, cost) and the best-of-N curve."""
    lines = [
        f"T0 = {target:.2f}; mean ± standard error; test = a split neither the search nor model selection saw.",
        "",
        "| method | runs | test top-1 | valid top-1 | cost |",
        "|---|---|---|---|---|",
    ]
    for name, rows in (("TuNAS search", searched), ("random architecture (N = 1)", random_rows)):
        if rows:
            lines.append(
                f"| {name} | {len(rows)} | {_mean_se([r['test_top1'] for r in rows])} | "
                f"{_mean_se([r['valid_top1'] for r in rows])} | {_mean_se([r['cost'] for r in rows])} |"
            )
    if curve:
        lines += ["", "Random search, expected test top-1 of the validation-best of N (resampled):", ""]
        lines += ["| N | " + " | ".join(str(n) for n, _, _ in curve) + " |", "|---" * (len(curve) + 1) + "|"]
        lines.append("| test top-1 | " + " | ".join(f"{mean:.4f}" for _, mean, _ in curve) + " |")
    return "\n".join(lines)


def write_comparison_plot(path: str, searched: list, random_rows: list, curve: list, target: float) -> None:
    """Left: test top-1 vs cost (random points, searched stars); right: expected best-of-N random
    search against the searched architectures' mean ± standard error (atomic PNG)."""
    pyplot = _pyplot()
    figure, (scatter_axis, curve_axis) = pyplot.subplots(1, 2, figsize=(12, 4.6))
    _scatter_methods(scatter_axis, searched, random_rows, "test_top1", target)
    scatter_axis.set(xlabel="cost (simulated latency, ms)", ylabel="test top-1", title="accuracy vs cost")
    scatter_axis.legend()
    if curve:
        sizes, means, stds = (np.asarray(column) for column in zip(*curve))
        curve_axis.plot(sizes, means, marker="o", label="random search: best of N on valid")
        curve_axis.fill_between(sizes, means - stds, means + stds, alpha=0.2)
    if searched:
        values = np.asarray([r["test_top1"] for r in searched])
        error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        curve_axis.axhline(values.mean(), color="tab:red", label=f"TuNAS search (mean of {len(values)})")
        curve_axis.axhspan(values.mean() - error, values.mean() + error, color="tab:red", alpha=0.15)
    curve_axis.set(xlabel="N (random models trained)", ylabel="expected test top-1", title="best-of-N random search")
    curve_axis.legend()
    _save_png(pyplot, figure, path)


def run_comparison(plan: ComparisonPlan) -> dict:
    """Runs (or resumes) the whole comparison; writes `comparison.json`, `comparison.md`, `comparison.png`.

    Every stage resumes: a finished search (architecture.json), training (train_result.json) or
    test evaluation (test_result.json) is read back, an unfinished one resumes from its checkpoint.
    """
    import search_spaces  # pylint: disable=import-outside-toplevel

    target = plan.search.target_latency or search_spaces.get_search_space(plan.search.space).target_latency
    os.makedirs(plan.output_dir, exist_ok=True)
    searched = _run_searches(plan)
    random_rows = _run_random(plan, target) if plan.num_random else []
    curve = (
        expected_best_of_n(
            [r["valid_top1"] for r in random_rows], [r["test_top1"] for r in random_rows], plan.resamples
        )
        if random_rows
        else []
    )
    report = comparison_report(searched, random_rows, curve, target)
    result = {"target_latency": target, "searched": searched, "random": random_rows, "best_of_n": curve}
    write_atomic(os.path.join(plan.output_dir, "comparison.json"), json.dumps(result, indent=2))
    write_atomic(os.path.join(plan.output_dir, "comparison.md"), report + "\n")
    write_comparison_plot(os.path.join(plan.output_dir, "comparison.png"), searched, random_rows, curve, target)
    return {**result, "report": report}
