"""Calibrating a linear cost model to measured latencies (a phone, or this host).

Samples architectures of a search space, exports each standalone model to TFLite, times it on
the target (this host with LiteRT, or an Android phone over adb) and fits `bias + kernel · f`
with the Pixel-1 feature layout `f = linear.features(space, architecture)` by ridge regression.
The result is a coefficient file that `get_cost_model(path, space)` (and so
`tools/search.py --cost_model=path.json`) loads, with its provenance and held-out accuracy.

    >>> settings = CalibrationSettings("proxyless", image_size=224)
    >>> report = calibrate(settings, "runs/calibration", num_train=200, num_heldout=50)
    >>> report["heldout"]["spearman"], report["heldout"]["mape_percent"]

Measurements are appended to `<output_dir>/measurements.jsonl` (one fsync'ed JSON line per
architecture), so a killed calibration resumes without re-measuring; a cache made with other
`CalibrationSettings` is refused. Training and held-out architectures are measured in one
seeded shuffled order, so a load change on a shared machine affects both sets alike.

References: Bender et al., CVPR 2020, §5 and Appendix (a linear latency model over one-hot
features, fitted to on-device measurements).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging
import os
import subprocess
import tempfile
import time
from typing import Callable, Optional

import numpy as np
import tf_keras as keras

import search_spaces
from tunas_keras.cost_models.linear import features, load_linear_cost_model, pixel1_cost_model
from tunas_keras.cost_models.linear import save_linear_cost_model
from tunas_keras.cost_models.sampling import extreme_indices, uniform_indices
from tunas_keras.export import adb, latency, sources, tflite
from tunas_keras.schema import Architecture
from tunas_keras.training.trainer import prepare_model_dir, write_atomic

TARGETS = ("host", "adb")
STATISTICS = ("min", "median", "mean")
CACHE_NAME = "measurements.jsonl"
REPORT_NAME = "calibration_report.json"
PLOT_NAME = "calibration.png"
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CV_FOLDS = 5

Measure = Callable[[Architecture], dict]


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. Received: {name}={value!r}"
        )


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """What a measurement depends on; a cache made with other settings is refused.

    Attributes:
      space: a search space name (`search_spaces.get_search_space`).
      image_size / num_classes: input resolution and classifier size of the exported models.
      quantization: a key of `tflite.QUANTIZATIONS`.
      num_threads: interpreter threads.
      use_xnnpack: whether the XNNPACK delegate is used.
      target: "host" (LiteRT here) or "adb" (`benchmark_model` on a phone).
    """

    space: str = "proxyless"
    image_size: int = 224
    num_classes: int = 1001
    quantization: str = "none"
    num_threads: int = 1
    use_xnnpack: bool = True
    target: str = "host"

    def __post_init__(self):
        object.__setattr__(self, "space", search_spaces.get_search_space(self.space).name)
        for name, minimum in (("image_size", 1), ("num_classes", 1), ("num_threads", 1)):
            _check_int(name, getattr(self, name), minimum)
        tflite.get_quantization(self.quantization)
        if self.target not in TARGETS:
            raise ValueError(
                f"Invalid value for argument `target`. Expected one of {TARGETS}. Received: target={self.target!r}"
            )


def calibration_architectures(space, num_train: int, num_heldout: int, seed: int, include_extremes: bool = True):
    """Deterministic, duplicate-free training and held-out index lists.

    Each list is drawn row by row from its own stream (`seed`, 0 / 1), so asking for more
    architectures later keeps the earlier ones (and their cached measurements).
    """
    train = list(extreme_indices(space)) if include_extremes else []
    seen, lists = set(train), []
    for stream, count in ((0, num_train), (1, num_heldout)):
        rng, drawn = np.random.default_rng([seed, stream]), []
        while len(drawn) < count:
            indices = tuple(int(index) for index in uniform_indices(space, rng, 1)[0])
            if indices not in seen:
                seen.add(indices)
                drawn.append(indices)
        lists.append(drawn)
    return train + lists[0], lists[1]


def read_cache(path: str, settings: CalibrationSettings) -> dict:
    """The cached measurements `{indices: record}`; a truncated last line is dropped (with a warning).

    Raises:
      ValueError: a line is not JSON, or was measured with other settings (the setting is named).
    """
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as handle:
        data = handle.read()
    *lines, tail = data.split(b"\n")
    if tail:  # A run killed mid-write; cut the partial line so that the next append starts clean.
        logging.warning("Dropping a truncated last line of the measurement cache %s: %r", path, tail[:80])
        os.truncate(path, len(data) - len(tail))
    expected, records = dataclasses.asdict(settings), {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"Invalid measurement cache {path!r}: line {number} is not JSON ({error}).") from error
        for key, value in expected.items():
            if record["settings"].get(key) != value:
                raise ValueError(
                    f"Invalid value for argument `{key}`. Expected {key}={record['settings'].get(key)!r} as in the "
                    f"measurement cache {path!r} (or another output directory). Received: {key}={value!r}"
                )
        records[tuple(record["indices"])] = record
    return records


def _append(path: str, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def export_architecture(architecture: Architecture, output_path: str, settings: CalibrationSettings) -> str:
    """Writes the `.tflite` of `architecture`'s standalone model (no parity check: only latency matters)."""
    model = sources.build_export_model(architecture, num_classes=settings.num_classes, image_size=settings.image_size)
    representative = None
    if tflite.get_quantization(settings.quantization).needs_representative_images:
        # Latency does not depend on the calibration values: synthetic images avoid needing a dataset.
        representative = tflite.fixed_parity_images(tflite.model_input_shape(model))
    content = tflite.convert_to_tflite(model, settings.quantization, representative)
    keras.backend.clear_session()  # Hundreds of models in one process: drop the old graphs.
    write_atomic(output_path, content)
    return output_path


def make_measure(
    settings: CalibrationSettings, warmup_runs: int = 10, runs: int = 50, adb_options: Optional[dict] = None,
    runner: Callable = subprocess.run,
) -> Measure:
    """`measure(architecture)` → `{"latency_ms": {"min", "median", "p90", "mean"}, "provenance"}`.

    Exports to a temporary directory (deleted afterwards) and times on `settings.target`;
    `adb_options` (`serial`, `device_dir`, `benchmark_binary`) and `runner` go to `adb.run_adb_benchmark`.
    """
    _check_int("warmup_runs", warmup_runs, 0)
    _check_int("runs", runs, 1)

    def measure(architecture: Architecture) -> dict:
        with tempfile.TemporaryDirectory(prefix="calibration_") as workdir:
            path = export_architecture(architecture, os.path.join(workdir, "model.tflite"), settings)
            if settings.target == "adb":
                result = adb.run_adb_benchmark(
                    path, runner=runner, num_threads=settings.num_threads, warmup_runs=warmup_runs, runs=runs,
                    use_xnnpack=settings.use_xnnpack, **(adb_options or {}),
                )
            else:
                result = latency.benchmark_tflite(path, settings.num_threads, warmup_runs, runs, settings.use_xnnpack)
        times = result["latency_ms"]  # benchmark_model reports "avg" and (newer builds) "median", no p90.
        summary = {"min": times.get("min"), "median": times.get("median"), "p90": times.get("p90"),
                   "mean": times.get("mean", times.get("avg"))}
        return {"latency_ms": summary, "provenance": result["provenance"]}

    return measure


def measure_architectures(space, planned: list, settings, cache_path: str, measure: Measure, seed: int = 0,
                          progress: Optional[Callable[[str], None]] = print) -> dict:
    """Measures every planned architecture not yet in the cache (seeded shuffled order); returns all records."""
    records = read_cache(cache_path, settings)
    missing = [indices for indices in dict.fromkeys(planned) if indices not in records]
    for count, position in enumerate(np.random.default_rng([seed, 2]).permutation(len(missing)), 1):
        indices, start = missing[position], time.perf_counter()
        result = measure(space.architecture(indices))
        record = {
            "settings": dataclasses.asdict(settings),
            "indices": list(indices),
            **result["latency_ms"],
            "model_sha256": result["provenance"].get("model_sha256"),
            "seconds": time.perf_counter() - start,
            "provenance": result["provenance"],
        }
        _append(cache_path, record)
        records[indices] = record
        if progress:
            times = "  ".join(f"{key}={value:.3f}" for key, value in result["latency_ms"].items() if value is not None)
            progress(f"[{count}/{len(missing)}] {':'.join(map(str, indices))}  {times} ms  ({record['seconds']:.1f} s)")
    return records


def _ridge_path(feature_matrix, targets, l2_values) -> list[tuple[float, np.ndarray]]:
    """`(bias, kernel)` minimising `mean((y - b - X w)^2) + l2 * |w|^2` for each `l2` (bias unregularised).

    One thin SVD of the centred features serves every `l2`, with as many features as samples or
    more (the larger spaces have 5983 / 29068 features). Features constant over the samples (never
    or always active) get weight exactly 0: the bias carries them.
    """
    matrix, targets = np.asarray(feature_matrix, np.float64), np.asarray(targets, np.float64)
    mean_features, mean_target = matrix.mean(axis=0), targets.mean()
    left, singular, right = np.linalg.svd(matrix - mean_features, full_matrices=False)
    projected, constant = left.T @ (targets - mean_target), np.ptp(matrix, axis=0) == 0
    solutions = []
    for l2 in l2_values:
        kernel = right.T @ (singular / (singular**2 + l2 * len(targets)) * projected)
        kernel[constant] = 0.0
        solutions.append((float(mean_target - mean_features @ kernel), kernel))
    return solutions


def fit_ridge(feature_matrix, targets, l2: float) -> tuple[float, np.ndarray]:
    """Ridge regression with an unregularised bias: `(bias, kernel)` (see `_ridge_path`)."""
    return _ridge_path(feature_matrix, targets, [l2])[0]


def choose_l2(feature_matrix, targets, grid=L2_GRID, folds: int = CV_FOLDS, seed: int = 0) -> tuple[float, dict]:
    """The `l2` of `grid` with the lowest k-fold cross-validated MAPE, and every value's MAPE (%)."""
    matrix, targets = np.asarray(feature_matrix, np.float64), np.asarray(targets, np.float64)
    assignment = np.random.default_rng(seed).permutation(len(targets)) % min(folds, len(targets))
    errors = {l2: [] for l2 in grid}
    for fold in np.unique(assignment):
        test = assignment == fold
        for l2, (bias, kernel) in zip(grid, _ridge_path(matrix[~test], targets[~test], grid)):
            errors[l2].append(np.abs(bias + matrix[test] @ kernel - targets[test]) / targets[test])
    scores = {l2: float(np.mean(np.concatenate(values)) * 100) for l2, values in errors.items()}
    return min(grid, key=scores.get), scores


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata, which is not a dependency)."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, ranks) / counts)[inverse]


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    if len(first) < 2 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(np.corrcoef(first, second)[0, 1])


def spearman(first, second) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    return _correlation(_ranks(first), _ranks(second))


def regression_metrics(predicted, measured) -> dict:
    """Spearman / Pearson correlation, MAPE and max |% error| (of the measured value), RMSE (ms)."""
    predicted, measured = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    percent = 100 * np.abs(predicted - measured) / measured
    return {
        "count": int(len(measured)),
        "spearman": spearman(predicted, measured),
        "pearson": _correlation(predicted, measured),
        "mape_percent": float(percent.mean()),
        "max_abs_percent_error": float(percent.max()),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
    }


def write_plot(path: str, sets: dict, title: str) -> None:
    """Predicted vs measured scatter, one marker per set (`{name: (predicted, measured)}`), with y = x."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    figure = Figure(figsize=(5.5, 5.0))
    axes = figure.subplots()
    for (name, (predicted, measured)), marker in zip(sets.items(), ("o", "^", "s", "x")):
        axes.scatter(measured, predicted, marker=marker, s=18, alpha=0.7, label=f"{name} ({len(measured)})")
    values = np.concatenate([np.concatenate(pair) for pair in sets.values()])
    limits = [values.min() * 0.95, values.max() * 1.05]
    axes.plot(limits, limits, "k--", linewidth=1, label="y = x")
    axes.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", title=title, xlim=limits, ylim=limits)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


def _dataset(space, planned: list, records: dict, statistic: str):
    rows = [indices for indices in planned if indices in records]
    values = [records[indices].get(statistic) for indices in rows]
    if any(value is None for value in values):
        recorded = sorted(key for key in STATISTICS if records[rows[0]].get(key) is not None)
        raise ValueError(f"Invalid value for argument `statistic`. Expected one that the target recorded: {recorded}. "
                         f"Received: statistic={statistic!r}")
    matrix = np.stack([features(space, row) for row in rows]) if rows else np.zeros([0, 0], np.float32)
    return rows, matrix.astype(np.float64), np.asarray(values, np.float64)


def fit_cost_model(space, train: list, heldout: list, records: dict, statistic: str, l2: Optional[float], seed: int):
    """Fits on the measured training architectures and evaluates on the held-out ones.

    Returns:
      `(report, bias, kernel)`: the metrics (also of the Pixel-1 model, as a reference), and the
      float32 coefficients as the file stores them (the metrics are of these).
    """
    train_set = _dataset(space, train, records, statistic)
    heldout_set = _dataset(space, heldout, records, statistic)
    for name, (rows, _, _) in (("num_train", train_set), ("num_heldout", heldout_set)):
        if len(rows) < 2:
            raise ValueError(f"Invalid value for argument `{name}`: only {len(rows)} of its architectures are "
                             "measured. Expected >= 2 measured (run the measurement first, without `fit_only`).")
    cross_validation = None
    if l2 is None:
        l2, cross_validation = choose_l2(train_set[1], train_set[2], seed=seed)
    bias, kernel = fit_ridge(train_set[1], train_set[2], l2)
    bias, kernel = float(np.float32(bias)), kernel.astype(np.float32)
    pixel1 = pixel1_cost_model(space)
    scores = cross_validation and {repr(value): score for value, score in cross_validation.items()}
    report = {"statistic": statistic, "l2": l2, "l2_cross_validation_mape_percent": scores, "architectures": {}}
    for name, (rows, matrix, measured) in (("train", train_set), ("heldout", heldout_set)):
        predicted = bias + matrix @ kernel.astype(np.float64)
        reference = np.asarray([pixel1.cost(space.architecture(row)) for row in rows])
        report[name] = regression_metrics(predicted, measured)
        report[f"pixel1_{name}"] = {
            "spearman": spearman(reference, measured), "pearson": _correlation(reference, measured)
        }
        report["architectures"][name] = [
            {"indices": list(row), "measured_ms": float(m), "predicted_ms": float(p), "pixel1_ms": float(r)}
            for row, m, p, r in zip(rows, measured, predicted, reference)
        ]
    return report, bias, kernel


def check_arguments(output: str, num_train, num_heldout, seed, statistic, l2, fit_only, measure_only) -> None:
    """Checks `calibrate`'s arguments (cheap; a ValueError naming the argument)."""
    _check_int("num_train", num_train, 0)
    _check_int("num_heldout", num_heldout, 2)  # A rank correlation needs two points.
    _check_int("seed", seed, 0)
    if statistic not in STATISTICS:
        raise ValueError(
            f"Invalid value for argument `statistic`. Expected one of {STATISTICS}. Received: statistic={statistic!r}"
        )
    if l2 is not None and (isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0):
        raise ValueError(f"Invalid value for argument `l2`. Expected a number > 0 or None (cross-validated). "
                         f"Received: l2={l2!r}")
    if not str(output).endswith(".json"):
        raise ValueError(
            f"Invalid value for argument `output`. Expected a path ending in '.json'. Received: output={output!r}"
        )
    if fit_only and measure_only:
        raise ValueError("Invalid arguments. Expected at most one of `fit_only` and `measure_only`. Received: both")


def _provenance(settings: CalibrationSettings, measured: dict, report: dict, fit: dict) -> dict:
    """The cost-model file's top-level fields: where, how and when it was measured and fitted."""
    return {
        "source": "tools/calibrate_cost_model.py",
        "units": "ms",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": measured.get("device"),
        "runtime": measured.get("runtime"),
        "measurement": {
            **dataclasses.asdict(settings), "statistic": report["statistic"],
            "warmup_runs": measured.get("warmup_runs"), "runs": measured.get("runs"),
        },
        "fit": {"method": "ridge", "l2": report["l2"], **fit, "num_train": report["train"]["count"],
                "num_heldout": report["heldout"]["count"]},
        "heldout_metrics": report["heldout"],
    }


def calibrate(
    settings: CalibrationSettings, output_dir: str, output: Optional[str] = None, num_train: int = 200,
    num_heldout: int = 50, seed: int = 0, statistic: str = "median", l2: Optional[float] = None,
    include_extremes: bool = True, measure: Optional[Measure] = None, fit_only: bool = False,
    measure_only: bool = False, progress: Optional[Callable[[str], None]] = print,
) -> dict:
    """Measures (resuming from the cache), fits, and writes the cost model, report and plot.

    Args:
      settings: what is measured and where.
      output_dir: holds `measurements.jsonl`, `calibration_report.json`, `calibration.png`.
      output: the cost-model file (default `<output_dir>/cost_model.json`).
      num_train / num_heldout: uniformly sampled architectures (`include_extremes` adds the
        smallest and the largest to the training set).
      seed: sampling (and measuring order, cross-validation folds) seed.
      statistic: which per-architecture latency is fitted: "min", "median" or "mean".
      l2: ridge strength relative to the mean squared error; None picks it from `L2_GRID` by
        `CV_FOLDS`-fold cross-validation on the training set.
      measure: `measure(architecture) -> {"latency_ms": {...}, "provenance": {...}}`; default
        `make_measure(settings)` (tests inject fakes).
      fit_only / measure_only: only fit the cached measurements / only measure.
      progress: called with one line per measured architecture (None: silent).

    Returns:
      The report (also written to `calibration_report.json`); `{"cache_path", "num_measured"}`
      with `measure_only`.
    """
    output = output or os.path.join(output_dir, "cost_model.json")
    check_arguments(output, num_train, num_heldout, seed, statistic, l2, fit_only, measure_only)
    prepare_model_dir(output_dir, argument="output_dir")
    space = search_spaces.get_search_space(settings.space)
    train, heldout = calibration_architectures(space, num_train, num_heldout, seed, include_extremes)
    cache_path = os.path.join(output_dir, CACHE_NAME)
    if fit_only:
        records = read_cache(cache_path, settings)
    else:
        measure = measure or make_measure(settings)
        records = measure_architectures(space, train + heldout, settings, cache_path, measure, seed, progress)
    if measure_only:
        return {"cache_path": cache_path, "num_measured": len(records)}
    report, bias, kernel = fit_cost_model(space, train, heldout, records, statistic, l2, seed)
    measured = records[tuple(report["architectures"]["train"][0]["indices"])]["provenance"]
    provenance = _provenance(settings, measured, report, {"seed": seed, "include_extremes": include_extremes})
    save_linear_cost_model(output, space, bias, kernel, provenance)
    load_linear_cost_model(output, space)  # Fail here, not in a later search, if the file does not load.
    paths = {"cost_model_path": output, "cache_path": cache_path, "plot_path": os.path.join(output_dir, PLOT_NAME),
             "report_path": os.path.join(output_dir, REPORT_NAME)}
    report = {**paths, **provenance, **report}
    sets = {name: ([a["predicted_ms"] for a in report["architectures"][name]],
                   [a["measured_ms"] for a in report["architectures"][name]]) for name in ("train", "heldout")}
    write_plot(paths["plot_path"], sets, f"{space.name} on {settings.target}, {statistic} latency")
    write_atomic(paths["report_path"], json.dumps(report, indent=2))
    return report


def format_report(report: dict) -> str:
    """A short table of the fit's and the Pixel-1 model's accuracy."""
    lines = [f"{'set':16s} {'n':>4s} {'spearman':>9s} {'pearson':>8s} {'MAPE %':>7s} {'max|%|':>7s} {'RMSE ms':>8s}"]
    for name in ("train", "heldout"):
        metrics = report[name]
        lines.append(
            f"{name:16s} {metrics['count']:4d} {metrics['spearman']:9.4f} {metrics['pearson']:8.4f} "
            f"{metrics['mape_percent']:7.2f} {metrics['max_abs_percent_error']:7.2f} {metrics['rmse_ms']:8.3f}"
        )
    for name in ("train", "heldout"):
        metrics = report[f"pixel1_{name}"]
        lines.append(f"{'pixel1 ' + name:16s} {report[name]['count']:4d} {metrics['spearman']:9.4f} "
                     f"{metrics['pearson']:8.4f}")
    lines.append(f"l2={report['l2']:g}  statistic={report['statistic']}  cost model: {report['cost_model_path']}")
    return "\n".join(lines)
