"""Phone latency: push a `.tflite` with `adb` and run TFLite's `benchmark_model` on the device.

This is the standard way to time a model on a Pixel. It is kept thin: `build_adb_commands`
builds the command lists (tested), `parse_benchmark_model_output` reads the tool's report
(tested on a recorded sample), and `run_adb_benchmark` runs the commands through an injectable
`runner` (default `subprocess.run`). `benchmark_model` itself must already be on the phone
(built from tensorflow/lite/tools/benchmark or downloaded as the prebuilt
`android_aarch64_benchmark_model`, then `adb push ... /data/local/tmp/ && adb shell chmod +x`).

    >>> commands = build_adb_commands("model.tflite", num_threads=1, runs=50)
    >>> result = run_adb_benchmark("model.tflite", num_threads=1)
    >>> result["latency_ms"]["avg"]
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import subprocess
from typing import Callable, Optional

from tunas_keras.export.latency import file_sha256

DEVICE_DIR = "/data/local/tmp"
BENCHMARK_BINARY = DEVICE_DIR + "/benchmark_model"
DEVICE_PROPERTIES = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "soc": "ro.soc.model",
    "android_version": "ro.build.version.release",
    "build_fingerprint": "ro.build.fingerprint",
}

_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}"
)
_STATS = re.compile(r"count=\d+(?: [a-z0-9]+=[-+0-9.eE]+)+")
_FIELD = re.compile(rf"([a-z0-9]+)={_NUMBER}")
_INIT_SESSION = re.compile(rf"Initialized session in {_NUMBER}\s*ms")
_MEMORY = re.compile(rf"Memory footprint delta from the start of the tool \(MB\): init={_NUMBER} overall={_NUMBER}")
_PEAK_MEMORY = re.compile(rf"peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}", re.IGNORECASE)


def define_adb_flags(flags, module_name: Optional[str] = None) -> None:
    """The `--adb` flags shared by the command-line tools (absl `flags` module).

    `module_name`: the module the flags are listed under in `--help` (a tool passes
    `sys.argv[0]`, absl's name for the main module); default: this module (`--helpfull`).
    """
    names = {"module_name": module_name} if module_name else {}
    flags.DEFINE_boolean(
        "adb", False, "Time on an Android phone with adb + benchmark_model instead of this host.", **names
    )
    flags.DEFINE_string("adb_serial", None, "adb -s serial (with several phones attached).", **names)
    flags.DEFINE_string("benchmark_binary", BENCHMARK_BINARY, "benchmark_model path on the phone.", **names)
    flags.DEFINE_string("device_dir", DEVICE_DIR, "Where models are pushed on the phone.", **names)


def adb_options(flag_values) -> dict:
    """`serial`, `device_dir`, `benchmark_binary` of `define_adb_flags` for `run_adb_benchmark`."""
    return {
        "serial": flag_values.adb_serial,
        "device_dir": flag_values.device_dir,
        "benchmark_binary": flag_values.benchmark_binary,
    }


@dataclasses.dataclass(frozen=True)
class AdbCommands:
    """The command lists of one phone benchmark, in the order they run."""

    push: list
    device_properties: dict
    benchmark: list


def _adb_prefix(adb: str, serial: Optional[str]) -> list:
    return [adb, "-s", serial] if serial else [adb]


def build_adb_commands(
    model_path: str,
    num_threads: int = 1,
    warmup_runs: int = 1,
    runs: int = 50,
    use_xnnpack: bool = True,
    serial: Optional[str] = None,
    device_dir: str = DEVICE_DIR,
    benchmark_binary: str = BENCHMARK_BINARY,
    adb: str = "adb",
    cpu_mask: Optional[str] = None,
) -> AdbCommands:
    """The `adb push`, `getprop` and `benchmark_model` command lists (nothing is run).

    Args:
      model_path: the local `.tflite`.
      num_threads / warmup_runs / runs / use_xnnpack: `benchmark_model`'s `--num_threads`,
        `--warmup_runs`, `--num_runs`, `--use_xnnpack`.
      serial: `adb -s` serial when several phones are attached.
      device_dir: where the model is pushed on the phone.
      benchmark_binary: the `benchmark_model` path on the phone.
      adb: the adb executable.
      cpu_mask: run `benchmark_model` under `taskset <cpu_mask>` (hexadecimal, e.g. "f0": CPUs 4-7).
    """
    for name, value, minimum in (("num_threads", num_threads, 1), ("warmup_runs", warmup_runs, 0), ("runs", runs, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"Invalid value for argument `{name}`. Expected an int >= {minimum}. Received: {value!r}")
    if not str(model_path).endswith(".tflite"):
        raise ValueError(
            f"Invalid value for argument `model_path`. Expected a '.tflite' file. Received: model_path={model_path!r}"
        )
    prefix = _adb_prefix(adb, serial)
    device_model = f"{device_dir.rstrip('/')}/{os.path.basename(model_path)}"
    if cpu_mask is not None and not re.fullmatch(r"[0-9a-fA-F]+", str(cpu_mask)):
        raise ValueError(
            f"Invalid value for argument `cpu_mask`. Expected a hexadecimal mask like 'f0'. "
            f"Received: cpu_mask={cpu_mask!r}"
        )
    pinning = ["taskset", str(cpu_mask)] if cpu_mask is not None else []
    benchmark = prefix + [
        "shell",
        *pinning,
        benchmark_binary,
        f"--graph={device_model}",
        f"--num_threads={num_threads}",
        f"--warmup_runs={warmup_runs}",
        f"--num_runs={runs}",
        f"--use_xnnpack={'true' if use_xnnpack else 'false'}",
    ]
    properties = {key: prefix + ["shell", "getprop", prop] for key, prop in DEVICE_PROPERTIES.items()}
    return AdbCommands(
        push=prefix + ["push", model_path, device_model], device_properties=properties, benchmark=benchmark
    )


def _stats_line(line: str) -> dict:
    return {key: float(value) for key, value in _FIELD.findall(line)}


def parse_benchmark_model_output(text: str) -> dict:
    """Reads `benchmark_model`'s report (any log prefix: "INFO: ", logcat "I tflite  : ", none).

    Returns:
      `{"init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us"}` from the
      "Inference timings in us" line; `"warmup"` and `"inference"`: the two
      "count=... first=... curr=... min=... max=... avg=... std=..." lines as dicts (µs; newer
      versions add p5 / median / p95); `"latency_ms"`: the timed runs' avg / min / max / std
      (and median if reported) in ms; and the memory figures in MB when present.

    Raises:
      ValueError: no "Inference timings in us" line (the run failed; the text is quoted).
    """
    summary = _SUMMARY.search(text)
    if summary is None:
        raise ValueError(
            "Invalid value for argument `text`. Expected benchmark_model output with an 'Inference timings in us: "
            f"Init: ..., Inference (avg): ...' line. Received: {text[-300:]!r}"
        )
    result = dict(
        zip(("init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us"), map(float, summary.groups()))
    )
    stats = [_stats_line(match.group(0)) for match in _STATS.finditer(text)]
    if stats:
        # The last statistics line is the timed runs; the one before it (if any) the warm-up.
        result["inference"] = stats[-1]
        if len(stats) > 1:
            result["warmup"] = stats[-2]
        timed = stats[-1]
        result["latency_ms"] = {
            key: timed[key] / 1000.0 for key in ("avg", "min", "max", "std", "median") if key in timed
        }
        result["runs"] = int(timed["count"])
    else:
        result["latency_ms"] = {"avg": result["inference_avg_us"] / 1000.0}
    for pattern, keys in (
        (_INIT_SESSION, ("init_session_ms",)),
        (_MEMORY, ("memory_init_mb", "memory_overall_mb")),
        (_PEAK_MEMORY, ("peak_memory_mb",)),
    ):
        match = pattern.search(text)
        if match:
            result.update(zip(keys, map(float, match.groups())))
    return result


def _run(runner: Callable, command: list) -> str:
    completed = runner(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"Command {' '.join(command)!r} failed ({completed.returncode}): {completed.stderr[-500:]}")
    return completed.stdout + completed.stderr  # benchmark_model logs to stderr on some builds.


def run_adb_benchmark(
    model_path: str,
    runner: Callable = subprocess.run,
    push: bool = True,
    device: Optional[dict] = None,
    **command_kwargs,
) -> dict:
    """Pushes `model_path`, runs `benchmark_model` on the phone and parses its report.

    Args:
      model_path: the local `.tflite`.
      runner: `subprocess.run`-compatible callable (tests pass a fake).
      push: False skips `adb push` (the model is already on the phone, e.g. a later round).
      device: the phone's properties from an earlier call (skips the `getprop` calls).
      **command_kwargs: see `build_adb_commands`.

    Returns:
      `parse_benchmark_model_output(...)` plus `"provenance"` (phone properties, runtime
      "tflite benchmark_model", threads, xnnpack, warm-up and run counts, SHA-256, date) and
      `"command"`.
    """
    if not os.path.isfile(model_path):
        raise FileNotFoundError(
            "Invalid value for argument `model_path`. Expected an existing .tflite file. "
            f"Received: model_path={model_path!r}"
        )
    commands = build_adb_commands(model_path, **command_kwargs)
    if push:
        _run(runner, commands.push)
    if device is None:
        device = {key: _run(runner, command).strip() for key, command in commands.device_properties.items()}
    result = parse_benchmark_model_output(_run(runner, commands.benchmark))
    flags = dict(argument.lstrip("-").split("=", 1) for argument in commands.benchmark if argument.startswith("--"))
    binary = command_kwargs.get("benchmark_binary", BENCHMARK_BINARY)
    result["provenance"] = {
        "device": device,
        "runtime": {"name": "tflite benchmark_model", "binary": binary},
        "cpu_mask": command_kwargs.get("cpu_mask"),
        "num_threads": int(flags["num_threads"]),
        "xnnpack": flags["use_xnnpack"] == "true",
        "warmup_runs": int(flags["warmup_runs"]),
        "runs": int(flags["num_runs"]),
        "model_path": os.path.abspath(model_path),
        "model_sha256": file_sha256(model_path),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    result["command"] = commands.benchmark
    return result
