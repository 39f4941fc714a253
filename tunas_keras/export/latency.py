"""Host latency of `.tflite` models with LiteRT, reported with its provenance.

A latency number is only meaningful with where and how it was measured, so every result
carries: the device (host CPU model from /proc/cpuinfo, platform), the runtime (ai_edge_litert
and its version), threads, XNNPACK on/off, warm-up and run counts, the model's SHA-256 and
input shape, and the date.

    >>> result = benchmark_tflite("model.tflite", num_threads=1, warmup_runs=10, runs=50)
    >>> result["latency_ms"]["median"], result["provenance"]["device"]["cpu_model"]

`compare_latency` times several models *interleaved* (round-robin blocks of runs), so a load
change on a shared machine affects all of them alike; use it for ratios.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import time
from typing import Optional, Sequence

import numpy as np

from tunas_keras.export.tflite import make_interpreter

RUNTIME_NAME = "ai_edge_litert"
PERCENTILES = {"min": 0.0, "median": 50.0, "p90": 90.0, "max": 100.0}


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. Received: {name}={value!r}"
        )
    return value


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The host CPU's model name (the first "model name" of /proc/cpuinfo, else `platform`)."""
    try:
        with open(cpuinfo_path) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_device() -> dict:
    """Where the benchmark runs: CPU model, logical CPUs, OS platform and machine."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        # A shared machine's load distorts absolute numbers; interleaved ratios are robust to it.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        # The CPUs this process may run on (pinned with os.sched_setaffinity / taskset, or all).
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def runtime_info() -> dict:
    """The TFLite runtime used on the host."""
    return {"name": RUNTIME_NAME, "version": importlib.metadata.version("ai-edge-litert")}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def summarize_ms(times_ms: Sequence[float]) -> dict:
    """min / median / p90 / max / mean / std of per-run latencies in ms."""
    values = np.asarray(times_ms, dtype=np.float64)
    summary = {name: float(np.percentile(values, q)) for name, q in PERCENTILES.items()}
    summary.update(mean=float(values.mean()), std=float(values.std()))
    return summary


class _TimedModel:
    """One interpreter with a fixed random input, timed invoke by invoke."""

    def __init__(self, path: str, num_threads: int, use_xnnpack: bool, seed: int = 0):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                "Invalid value for argument `model_path`. Expected an existing .tflite file. "
                f"Received: model_path={path!r}"
            )
        with open(path, "rb") as handle:
            self.interpreter = make_interpreter(handle.read(), num_threads=num_threads, use_xnnpack=use_xnnpack)
        detail = self.interpreter.get_input_details()[0]
        self.input_shape = [int(size) for size in detail["shape"]]
        self.input_dtype = np.dtype(detail["dtype"]).name
        rng = np.random.default_rng(seed)
        if np.issubdtype(detail["dtype"], np.integer):
            info = np.iinfo(detail["dtype"])
            value = rng.integers(info.min, info.max, size=self.input_shape, endpoint=True)
        else:
            value = rng.normal(size=self.input_shape)
        self.interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))

    def run(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter_ns()
            self.interpreter.invoke()
            times.append((time.perf_counter_ns() - start) / 1e6)
        return times


def _provenance(path: str, timed: _TimedModel, num_threads: int, use_xnnpack: bool, warmup_runs: int, runs: int):
    return {
        "device": host_device(),
        "runtime": runtime_info(),
        "num_threads": num_threads,
        "xnnpack": use_xnnpack,
        "warmup_runs": warmup_runs,
        "runs": runs,
        "model_path": os.path.abspath(path),
        "model_sha256": file_sha256(path),
        "model_size_bytes": os.path.getsize(path),
        "input_shape": timed.input_shape,
        "input_dtype": timed.input_dtype,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def benchmark_tflite(
    model_path: str,
    num_threads: int = 1,
    warmup_runs: int = 10,
    runs: int = 50,
    use_xnnpack: bool = True,
) -> dict:
    """Times `runs` invocations of a `.tflite` after `warmup_runs`, on the host with LiteRT.

    Args:
      model_path: the `.tflite` file.
      num_threads: interpreter (and XNNPACK) threads.
      warmup_runs: untimed runs first (allocation, caches, XNNPACK packing).
      runs: timed runs, one `invoke()` each, on a fixed random input.
      use_xnnpack: False uses the builtin kernels without the default XNNPACK delegate.

    Returns:
      `{"latency_ms": {"min", "median", "p90", "max", "mean", "std"}, "times_ms": [...],
      "provenance": {...}}`.
    """
    _check_count(num_threads, "num_threads", 1)
    _check_count(warmup_runs, "warmup_runs", 0)
    _check_count(runs, "runs", 1)
    timed = _TimedModel(model_path, num_threads, use_xnnpack)
    timed.run(warmup_runs)
    times = timed.run(runs)
    return {
        "latency_ms": summarize_ms(times),
        "times_ms": times,
        "provenance": _provenance(model_path, timed, num_threads, use_xnnpack, warmup_runs, runs),
    }


def compare_latency(
    model_paths: dict[str, str],
    num_threads: int = 1,
    warmup_runs: int = 10,
    rounds: int = 20,
    runs_per_round: int = 5,
    use_xnnpack: bool = True,
    baseline: Optional[str] = None,
) -> dict:
    """Times several models interleaved: each round runs a block of every model, order rotating.

    Args:
      model_paths: name → `.tflite` path.
      rounds / runs_per_round: `rounds · runs_per_round` timed runs per model.
      baseline: the name the ratios are relative to (default: the last one).

    Returns:
      `{"models": {name: {"latency_ms": ..., "provenance": ...}}, "ratio_median": {name: median /
      baseline median}, "ratio_per_round": {name: [min, median, max] of the per-round ratios}}`.
    """
    if not model_paths:
        raise ValueError("Invalid value for argument `model_paths`. Expected at least one model. Received: {}")
    names = list(model_paths)
    baseline = baseline or names[-1]
    if baseline not in model_paths:
        raise ValueError(f"Invalid value for argument `baseline`. Expected one of {names}. Received: {baseline!r}")
    _check_count(rounds, "rounds", 1)
    _check_count(runs_per_round, "runs_per_round", 1)
    timed = {name: _TimedModel(path, num_threads, use_xnnpack) for name, path in model_paths.items()}
    for model in timed.values():
        model.run(warmup_runs)
    times = {name: [] for name in names}
    round_medians = {name: [] for name in names}
    for round_index in range(rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            block = timed[name].run(runs_per_round)
            times[name] += block
            round_medians[name].append(float(np.median(block)))
    runs = rounds * runs_per_round
    models = {
        name: {
            "latency_ms": summarize_ms(times[name]),
            "provenance": _provenance(model_paths[name], timed[name], num_threads, use_xnnpack, warmup_runs, runs),
        }
        for name in names
    }
    base = models[baseline]["latency_ms"]["median"]
    per_round = {name: np.asarray(round_medians[name]) / np.asarray(round_medians[baseline]) for name in names}
    return {
        "baseline": baseline,
        "models": models,
        "ratio_median": {name: models[name]["latency_ms"]["median"] / base for name in names},
        "ratio_per_round": {
            name: [float(r.min()), float(np.median(r)), float(r.max())] for name, r in per_round.items()
        },
    }
