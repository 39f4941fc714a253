"""Where calibration items are timed: this host (LiteRT) or a phone (adb + `benchmark_model`).

Both export an item (a network, a layer variant, an op or the empty model) once to
`<model_dir>/<kind>/<hash>.tflite` (atomically; the hash covers the export settings and the
item's key, so a model directory can be shared by runs with the same export settings) and time
one block per call. The host device is pinned to CPUs with `pinned(cpus)` (the interpreter's
threads inherit the affinity); the phone's `benchmark_model` runs under `taskset`.

    >>> device = HostDevice(settings, "runs/calibration/models")
    >>> device.time(device.prepare(item), warmup_runs=3, runs=10)["median"]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from typing import Callable, Iterator, Optional

import tf_keras as keras

from tunas_keras.cost_models import layer_table
from tunas_keras.cost_models.protocol import Device, Item
from tunas_keras.export import adb, latency, sources, tflite
from tunas_keras.training.trainer import write_atomic


def parse_cpus(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """ "0", "0,2" or "2-3" → the CPU numbers (sorted); None or "" → None (no pinning).

    Raises:
      ValueError: not such a list.
    """
    if text is None or text == "":
        return None
    cpus = set()
    try:
        for part in str(text).split(","):
            low, _, high = part.strip().partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        cpus = set()
    if not cpus or min(cpus) < 0:
        raise ValueError(
            f"Invalid value for argument `cpus`. Expected CPU numbers like '0', '0,2' or '2-3'. Received: cpus={text!r}"
        )
    return tuple(sorted(cpus))


def cpu_mask(cpus: tuple[int, ...]) -> str:
    """The hexadecimal affinity mask of `taskset` (CPUs 4 and 5 → "30")."""
    return format(sum(1 << cpu for cpu in cpus), "x")


@contextlib.contextmanager
def pinned(cpus: Optional[tuple[int, ...]]) -> Iterator[None]:
    """Runs the body with this process (and the threads it starts) restricted to `cpus`."""
    if cpus is None:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("Invalid value for argument `cpus`: this platform cannot pin a process to CPUs.")
    available = os.sched_getaffinity(0)
    if not set(cpus) <= available:
        raise ValueError(
            f"Invalid value for argument `cpus`. Expected CPUs this process may use: "
            f"{sorted(available)}. Received: cpus={list(cpus)}"
        )
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, available)


def build_item_model(item: Item, settings) -> keras.Model:
    """The Keras model of an item: the standalone network, one layer, one op, or the empty model."""
    if item.kind == "network":
        return sources.build_export_model(
            item.payload, num_classes=settings.num_classes, image_size=settings.image_size
        )
    if item.kind == "layer":
        return layer_table.build_variant_model(item.payload)
    if item.kind == "op":
        return layer_table.build_op_model(item.payload)
    if item.kind == "overhead":
        return layer_table.overhead_model()
    raise ValueError(f"Invalid item kind {item.kind!r}. Expected network, layer, op or overhead.")


def export_item(item: Item, output_path: str, settings) -> str:
    """Writes the `.tflite` of `item` (no parity check: only latency matters)."""
    model = build_item_model(item, settings)
    representative = None
    if tflite.get_quantization(settings.quantization).needs_representative_images:
        # Latency does not depend on the calibration values: synthetic inputs avoid needing a dataset.
        representative = tflite.fixed_parity_images(tflite.model_input_shape(model))
    content = tflite.convert_to_tflite(model, settings.quantization, representative)
    keras.backend.clear_session()  # Thousands of models in one process: drop the old graphs.
    write_atomic(output_path, content)
    return output_path


class _ExportingDevice(Device):
    """Exports each item once under `model_dir` (kept, so rounds and resumed runs reuse it)."""

    def __init__(self, settings, model_dir: str):
        self.settings, self.model_dir = settings, model_dir
        export = (settings.image_size, settings.num_classes, settings.quantization)
        self._prefix = repr(export)

    def model_path(self, item: Item) -> str:
        digest = hashlib.sha256(f"{self._prefix}|{item.kind}|{item.key}".encode()).hexdigest()[:24]
        return os.path.join(self.model_dir, item.kind, digest + ".tflite")

    def prepare(self, item: Item) -> str:
        path = self.model_path(item)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            export_item(item, path, self.settings)
        return path


class HostDevice(_ExportingDevice):
    """This host, with LiteRT (`latency.benchmark_tflite`: threads and XNNPACK from the settings)."""

    def time(self, prepared: str, warmup_runs: int, runs: int) -> dict:
        result = latency.benchmark_tflite(
            prepared, self.settings.num_threads, warmup_runs, runs, self.settings.use_xnnpack
        )
        times = result["latency_ms"]
        return {
            "min": times["min"],
            "median": times["median"],
            "mean": times["mean"],
            "provenance": result["provenance"],
        }


class AdbDevice(_ExportingDevice):
    """A phone: each model is pushed once, then every block is one `benchmark_model` run.

    Args:
      settings: the calibration settings (threads, XNNPACK, `cpus` → `taskset` mask).
      model_dir: where the exports are kept on this machine.
      options: `serial`, `device_dir`, `benchmark_binary` for `adb.run_adb_benchmark`.
      runner: `subprocess.run`-compatible (tests pass a fake phone).
    """

    def __init__(self, settings, model_dir: str, options: Optional[dict] = None, runner: Callable = subprocess.run):
        super().__init__(settings, model_dir)
        self.options, self.runner, self._pushed, self._device = dict(options or {}), runner, set(), None

    def time(self, prepared: str, warmup_runs: int, runs: int) -> dict:
        cpus = parse_cpus(self.settings.cpus)
        result = adb.run_adb_benchmark(
            prepared,
            runner=self.runner,
            num_threads=self.settings.num_threads,
            warmup_runs=warmup_runs,
            runs=runs,
            use_xnnpack=self.settings.use_xnnpack,
            cpu_mask=cpu_mask(cpus) if cpus else None,
            push=prepared not in self._pushed,
            device=self._device,
            **self.options,
        )
        self._pushed.add(prepared)
        self._device = result["provenance"]["device"]
        times = result["latency_ms"]  # benchmark_model reports "avg" and (newer builds) "median".
        return {
            "min": times.get("min"),
            "median": times.get("median"),
            "mean": times.get("avg"),
            "provenance": result["provenance"],
        }


def make_device(
    settings, model_dir: str, adb_options: Optional[dict] = None, runner: Callable = subprocess.run
) -> Device:
    """The device of `settings.target`."""
    if settings.target == "adb":
        return AdbDevice(settings, model_dir, adb_options, runner)
    return HostDevice(settings, model_dir)
