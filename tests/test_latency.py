"""Host latency (LiteRT) with provenance, interleaved comparison, and the adb / benchmark_model path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tf_keras as keras

from tunas_keras.export import adb, latency, tflite

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROVENANCE_FIELDS = {
    "device",
    "runtime",
    "num_threads",
    "xnnpack",
    "warmup_runs",
    "runs",
    "model_sha256",
    "input_shape",
    "date",
}


def _small_model(width: int) -> keras.Model:
    images = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(images)
    features = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(features)
    features = keras.layers.GlobalAveragePooling2D()(features)
    return keras.Model(images, keras.layers.Dense(10)(features))


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    paths = {}
    for name, width in (("small", 8), ("large", 64)):
        paths[name] = tflite.export_tflite(_small_model(width), str(directory / f"{name}.tflite")).model_path
    return paths


@pytest.mark.parametrize("use_xnnpack", [True, False])
def test_benchmark_reports_latency_and_provenance(model_paths, use_xnnpack):
    result = latency.benchmark_tflite(
        model_paths["small"], num_threads=1, warmup_runs=2, runs=7, use_xnnpack=use_xnnpack
    )
    summary = result["latency_ms"]
    assert len(result["times_ms"]) == 7
    assert 0 < summary["min"] <= summary["median"] <= summary["p90"] <= summary["max"]
    assert summary["min"] == pytest.approx(min(result["times_ms"]))
    provenance = result["provenance"]
    assert PROVENANCE_FIELDS <= set(provenance)
    assert provenance["device"]["cpu_model"] and provenance["device"]["platform"]
    assert provenance["runtime"]["name"] == "ai_edge_litert" and provenance["runtime"]["version"]
    assert provenance["xnnpack"] is use_xnnpack and provenance["num_threads"] == 1
    assert (provenance["warmup_runs"], provenance["runs"]) == (2, 7)
    assert provenance["input_shape"] == [1, 32, 32, 3]
    with open(model_paths["small"], "rb") as handle:
        assert provenance["model_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    json.dumps(result)  # JSON-serialisable as is


def test_xnnpack_off_uses_builtin_kernels(model_paths):
    with open(model_paths["small"], "rb") as handle:
        content = handle.read()
    on = tflite.make_interpreter(content, use_xnnpack=True)
    off = tflite.make_interpreter(content, use_xnnpack=False)
    on_ops = [op["op_name"] for op in on._get_ops_details()]  # pylint: disable=protected-access
    off_ops = [op["op_name"] for op in off._get_ops_details()]  # pylint: disable=protected-access
    assert "DELEGATE" in on_ops and "DELEGATE" not in off_ops


def test_compare_latency_interleaves_and_ranks(model_paths):
    result = latency.compare_latency(
        model_paths, num_threads=1, warmup_runs=2, rounds=6, runs_per_round=3, baseline="small"
    )
    assert result["ratio_median"]["small"] == 1.0
    assert result["models"]["large"]["provenance"]["runs"] == 18
    # 8x the channels costs more even on a loaded machine; the per-round ratios bracket the median one.
    assert result["ratio_median"]["large"] > 1.0
    low, middle, high = result["ratio_per_round"]["large"]
    assert low <= middle <= high


def test_cpu_model_reads_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n")
    assert latency.cpu_model(str(cpuinfo)) == "AMD EPYC 7B13 64-Core Processor"
    assert latency.cpu_model(str(tmp_path / "missing"))  # falls back to `platform`


def test_bad_benchmark_inputs(tmp_path, model_paths):
    with pytest.raises(FileNotFoundError, match=r"argument `model_path`.*Received: model_path='.*nope.tflite'"):
        latency.benchmark_tflite(str(tmp_path / "nope.tflite"))
    with pytest.raises(ValueError, match=r"argument `runs`. Expected an int >= 1. Received: runs=0"):
        latency.benchmark_tflite(model_paths["small"], runs=0)
    with pytest.raises(ValueError, match=r"argument `num_threads`. Expected an int >= 1. Received: num_threads=0"):
        latency.benchmark_tflite(model_paths["small"], num_threads=0)
    with pytest.raises(ValueError, match=r"argument `baseline`. Expected one of \['small', 'large'\]"):
        latency.compare_latency(model_paths, baseline="other")


# ------------------------------------------------------------------------------------- adb


def test_build_adb_commands():
    commands = adb.build_adb_commands("out/model.tflite", num_threads=4, warmup_runs=3, runs=100, serial="FA6AB0301")
    assert commands.push == ["adb", "-s", "FA6AB0301", "push", "out/model.tflite", "/data/local/tmp/model.tflite"]
    assert commands.benchmark == [
        "adb",
        "-s",
        "FA6AB0301",
        "shell",
        "/data/local/tmp/benchmark_model",
        "--graph=/data/local/tmp/model.tflite",
        "--num_threads=4",
        "--warmup_runs=3",
        "--num_runs=100",
        "--use_xnnpack=true",
    ]
    assert commands.device_properties["model"] == ["adb", "-s", "FA6AB0301", "shell", "getprop", "ro.product.model"]
    plain = adb.build_adb_commands("m.tflite", use_xnnpack=False, device_dir="/sdcard/tunas/", adb="/opt/adb")
    assert plain.push == ["/opt/adb", "push", "m.tflite", "/sdcard/tunas/m.tflite"]
    assert plain.benchmark[-1] == "--use_xnnpack=false"
    with pytest.raises(ValueError, match=r"argument `runs`. Expected an int >= 1. Received: 0"):
        adb.build_adb_commands("m.tflite", runs=0)
    with pytest.raises(ValueError, match=r"argument `model_path`. Expected a '.tflite' file"):
        adb.build_adb_commands("m.pb")


def test_parse_recorded_benchmark_model_output():
    with open(os.path.join(DATA_DIR, "benchmark_model_output.txt")) as handle:
        parsed = adb.parse_benchmark_model_output(handle.read())
    assert parsed["init_us"] == 61842 and parsed["first_inference_us"] == 84213
    assert parsed["warmup_avg_us"] == pytest.approx(73902.6) and parsed["inference_avg_us"] == pytest.approx(72205.1)
    assert parsed["runs"] == 50 and parsed["warmup"]["count"] == 7
    assert parsed["inference"] == {
        "count": 50,
        "first": 72311,
        "curr": 71988,
        "min": 71402,
        "max": 75963,
        "avg": 72205.1,
        "std": 812,
        "p5": 71503,
        "median": 72030,
        "p95": 74121,
    }
    assert parsed["latency_ms"] == pytest.approx(
        {"avg": 72.2051, "min": 71.402, "max": 75.963, "std": 0.812, "median": 72.030}
    )
    assert parsed["init_session_ms"] == pytest.approx(61.842)
    assert (parsed["memory_init_mb"], parsed["memory_overall_mb"]) == pytest.approx((21.0664, 29.7031))
    assert parsed["peak_memory_mb"] == pytest.approx(34.9453)


def test_parse_older_unprefixed_output_with_exponents():
    # The line format of older builds (no log prefix, `%g` numbers), as in public outputs.
    text = (
        "count=1 curr=3512391\n\n"
        "count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798\n\n"
        "Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, "
        "Inference (avg): 2.95034e+06\n"
    )
    parsed = adb.parse_benchmark_model_output(text)
    assert parsed["inference_avg_us"] == pytest.approx(2.95034e6)
    assert parsed["latency_ms"]["avg"] == pytest.approx(2950.34) and parsed["latency_ms"]["min"] == pytest.approx(
        2727.568
    )
    with pytest.raises(ValueError, match="Expected benchmark_model output with an 'Inference timings in us"):
        adb.parse_benchmark_model_output("ERROR: Could not open '/data/local/tmp/model.tflite'.")


def test_run_adb_benchmark_with_a_fake_phone(model_paths):
    with open(os.path.join(DATA_DIR, "benchmark_model_output.txt")) as handle:
        report = handle.read()
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        answers = {"push": "1 file pushed.", "getprop": "Pixel", "/data/local/tmp/benchmark_model": report}
        stdout = next(value for key, value in answers.items() if key in command)
        return types.SimpleNamespace(returncode=0, stdout=stdout, stderr="")

    result = adb.run_adb_benchmark(model_paths["small"], runner=fake_run, num_threads=1, runs=50)
    assert calls[0][1] == "push" and calls[-1][2] == "/data/local/tmp/benchmark_model"
    assert result["latency_ms"]["avg"] == pytest.approx(72.2051)
    provenance = result["provenance"]
    assert PROVENANCE_FIELDS - {"input_shape"} <= set(provenance)
    assert provenance["device"]["model"] == "Pixel" and provenance["runs"] == 50 and provenance["xnnpack"] is True

    def failing_run(command, **kwargs):
        return types.SimpleNamespace(returncode=1, stdout="", stderr="error: no devices/emulators found")

    with pytest.raises(RuntimeError, match="no devices/emulators found"):
        adb.run_adb_benchmark(model_paths["small"], runner=failing_run)


@pytest.mark.slow  # A fresh interpreter importing TensorFlow: ~20 s here.
def test_benchmark_tool_json_output(model_paths, tmp_path):
    output = tmp_path / "latency.json"
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_ROOT, "tools", "benchmark_latency.py"),
            f"--model={model_paths['small']}",
            "--runs=5",
            "--warmup_runs=1",
            "--num_threads=2",
            f"--json_output={output}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(output.read_text())
    assert PROVENANCE_FIELDS <= set(result["provenance"]) and result["provenance"]["num_threads"] == 2
    assert np.isfinite(result["latency_ms"]["p90"])
