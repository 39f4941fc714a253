"""Calibrating a linear cost model to measured latencies: sampling, cache/resume, ridge fit, report."""

import json
import math
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import tunas_keras
from tunas_keras.cost_models import calibration, features, get_cost_model, load_linear_cost_model
from tunas_keras.cost_models import num_features, reachable_features
from tunas_keras.cost_models.sampling import extreme_indices

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = pathlib.Path(__file__).parent / "data"
SETTINGS = calibration.CalibrationSettings("proxyless", image_size=32, num_classes=10)


class SyntheticLatency:
    """A fake target: latency = bias + kernel · features, times (1 + 0.2 % noise); counts its calls."""

    def __init__(self, space, seed=0, noise=0.002):
        rng = np.random.default_rng(seed)
        self.space, self.noise, self.rng = space, noise, rng
        self.bias = 20.0
        self.kernel = rng.uniform(0.5, 5.0, num_features(space)) * reachable_features(space)
        self.calls = 0

    def expected(self, indices) -> float:
        return self.bias + float(features(self.space, indices) @ self.kernel)

    def __call__(self, architecture) -> dict:
        self.calls += 1
        value = self.expected(architecture.indices) * (1 + self.noise * self.rng.standard_normal())
        summary = {"min": 0.95 * value, "median": value, "p90": 1.05 * value, "mean": value}
        return {"latency_ms": summary, "provenance": {"device": {"cpu_model": "fake"}, "model_sha256": "0" * 64}}


def _read_file_coefficients(path, space):
    with open(path) as handle:
        entry = json.load(handle)["spaces"][space.reference_name]
    return entry["bias"], np.asarray(entry["kernel"], np.float64)


def test_fit_recovers_a_synthetic_linear_latency_and_resumes(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    fake = SyntheticLatency(space)
    report = calibration.calibrate(SETTINGS, str(tmp_path), num_train=200, num_heldout=50, measure=fake, progress=None)
    assert fake.calls == 252  # 200 + 50 + the smallest and the largest architecture
    assert report["heldout"]["mape_percent"] < 1.0 and report["heldout"]["spearman"] > 0.99
    assert report["train"]["count"] == 202 and report["heldout"]["count"] == 50
    assert report["l2"] in calibration.L2_GRID  # cross-validated

    # The file loads as `tools/search.py --cost_model=path.json` loads it, and predicts bias + kernel · f.
    model = get_cost_model(str(tmp_path / "cost_model.json"), "proxyless")
    bias, kernel = _read_file_coefficients(tmp_path / "cost_model.json", space)
    for entry in report["architectures"]["train"][:20]:
        expected = bias + features(space, entry["indices"]).astype(np.float64) @ kernel
        assert model.cost(space.architecture(entry["indices"])) == pytest.approx(expected, abs=1e-4)
        assert entry["predicted_ms"] == pytest.approx(expected, abs=1e-4)
    assert np.all(kernel[~reachable_features(space)] == 0)
    assert model.provenance["measurement"]["image_size"] == 32 and model.provenance["fit"]["num_heldout"] == 50
    assert (tmp_path / "calibration.png").stat().st_size > 1000
    assert json.loads((tmp_path / "calibration_report.json").read_text())["heldout"] == report["heldout"]

    resumed = SyntheticLatency(space)
    calibration.calibrate(SETTINGS, str(tmp_path), num_train=200, num_heldout=50, measure=resumed, progress=None)
    assert resumed.calls == 0
    calibration.calibrate(SETTINGS, str(tmp_path), num_train=205, num_heldout=50, l2=1e-3, measure=resumed,
                          progress=None)
    assert resumed.calls == 5  # Prefix-stable sampling: the first 200 are reused.
    assert len((tmp_path / calibration.CACHE_NAME).read_text().splitlines()) == 257


def test_truncated_cache_line_is_dropped_and_remeasured(tmp_path, caplog):
    space = tunas_keras.get_search_space("proxyless")
    calibration.calibrate(SETTINGS, str(tmp_path), num_train=3, num_heldout=2, measure=SyntheticLatency(space),
                          measure_only=True, progress=None)
    cache = tmp_path / calibration.CACHE_NAME
    text = cache.read_text()
    cache.write_text(text[: -len(text.splitlines()[-1]) // 2 - 1])  # Killed in the middle of the last line.
    fake = SyntheticLatency(space)
    report = calibration.calibrate(SETTINGS, str(tmp_path), num_train=3, num_heldout=2, l2=0.01, measure=fake,
                                   progress=None)
    assert fake.calls == 1 and "truncated" in caplog.text
    assert len(cache.read_text().splitlines()) == 7
    assert all(math.isfinite(report["heldout"][key]) for key in ("spearman", "mape_percent", "rmse_ms"))


def test_cache_made_with_other_settings_is_refused(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    calibration.calibrate(SETTINGS, str(tmp_path), num_train=1, num_heldout=2, measure=SyntheticLatency(space),
                          measure_only=True, progress=None)
    for change in ({"image_size": 64}, {"quantization": "int8"}, {"num_threads": 2}, {"target": "adb"}):
        settings = calibration.CalibrationSettings(**{**SETTINGS.__dict__, **change})
        name = next(iter(change))
        with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
            calibration.calibrate(settings, str(tmp_path), num_train=1, num_heldout=2, measure=SyntheticLatency(space))
    other_space = calibration.CalibrationSettings("proxyless_enlarged", image_size=32, num_classes=10)
    with pytest.raises(ValueError, match="`space`.*'proxyless'"):
        calibration.calibrate(other_space, str(tmp_path), num_train=1, num_heldout=2, measure=SyntheticLatency(space))


def test_bad_arguments(tmp_path):
    measure = SyntheticLatency(tunas_keras.get_search_space("proxyless"))
    cases = [
        ({"num_heldout": 1}, "`num_heldout`. Expected an int >= 2. Received: num_heldout=1"),
        ({"num_train": -1}, "`num_train`"),
        ({"statistic": "p99"}, "`statistic`. Expected one of"),
        ({"l2": 0.0}, "`l2`. Expected a number > 0"),
        ({"output": str(tmp_path / "model.txt")}, "`output`. Expected a path ending in '.json'"),
        ({"fit_only": True, "measure_only": True}, "at most one of `fit_only` and `measure_only`"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            calibration.calibrate(SETTINGS, str(tmp_path), measure=measure, **kwargs)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`output_dir`. Expected a writable directory"):
        calibration.calibrate(SETTINGS, str(tmp_path / "file" / "sub"), measure=measure)
    with pytest.raises(ValueError, match="`num_train`: only 0 of its architectures are measured"):
        calibration.calibrate(SETTINGS, str(tmp_path / "empty"), fit_only=True, include_extremes=False)
    with pytest.raises(ValueError, match="`space`"):
        calibration.CalibrationSettings("no_such_space")
    with pytest.raises(ValueError, match="`quantization`"):
        calibration.CalibrationSettings(quantization="int4")
    with pytest.raises(ValueError, match="`image_size`. Expected an int >= 1"):
        calibration.CalibrationSettings(image_size=0)
    with pytest.raises(ValueError, match="`runs`. Expected an int >= 1"):
        calibration.make_measure(SETTINGS, runs=0)


def test_sampling_is_deterministic_and_prefix_stable():
    space = tunas_keras.get_search_space("proxyless")
    train, heldout = calibration.calibration_architectures(space, 10, 5, seed=3)
    assert (train, heldout) == calibration.calibration_architectures(space, 10, 5, seed=3)
    more_train, more_heldout = calibration.calibration_architectures(space, 20, 8, seed=3)
    assert more_train[:12] == train and more_heldout[:5] == heldout
    assert len(set(more_train + more_heldout)) == 30 and train[:2] == list(extreme_indices(space))
    assert calibration.calibration_architectures(space, 10, 5, seed=4)[1] != heldout


def test_ridge_dual_form_equals_primal_and_spearman_matches_scipy():
    rng = np.random.default_rng(0)
    matrix, targets = rng.integers(0, 2, (12, 30)).astype(float), rng.normal(size=12)
    bias, kernel = calibration.fit_ridge(matrix, targets, 0.1)  # 30 features > 12 samples: the dual form
    centered = matrix - matrix.mean(0)
    primal = np.linalg.solve(centered.T @ centered + 0.1 * 12 * np.eye(30), centered.T @ (targets - targets.mean()))
    np.testing.assert_allclose(kernel, primal, atol=1e-10)
    assert bias == pytest.approx(targets.mean() - matrix.mean(0) @ primal)
    stats = pytest.importorskip("scipy.stats")
    first, second = rng.integers(0, 5, 40), rng.normal(size=40)  # with ties
    assert calibration.spearman(first, second) == pytest.approx(stats.spearmanr(first, second)[0], abs=1e-12)
    assert math.isnan(calibration.spearman([1, 1, 1], [1, 2, 3]))


def test_adb_measure_with_a_fake_phone(monkeypatch):
    report = (DATA_DIR / "benchmark_model_output.txt").read_text()

    def fake_export(architecture, output_path, settings):
        pathlib.Path(output_path).write_bytes(b"not a real model")
        return output_path

    def fake_run(command, **kwargs):
        answers = {"push": "1 file pushed.", "getprop": "Pixel", "/data/local/tmp/benchmark_model": report}
        stdout = next(value for key, value in answers.items() if key in command)
        return types.SimpleNamespace(returncode=0, stdout=stdout, stderr="")

    monkeypatch.setattr(calibration, "export_architecture", fake_export)
    settings = calibration.CalibrationSettings(target="adb")
    measure = calibration.make_measure(settings, runs=50, adb_options={"serial": "abc"}, runner=fake_run)
    result = measure(tunas_keras.reference_architecture("proxylessnas_mobile"))
    assert result["latency_ms"] == pytest.approx({"min": 71.402, "median": 72.030, "p90": None, "mean": 72.2051})
    assert result["provenance"]["device"]["model"] == "Pixel"


def test_end_to_end_with_real_exports(tmp_path):
    """The only test that exports and times real models (tiny: 32 px, 10 classes)."""
    space = tunas_keras.get_search_space("proxyless")
    measure = calibration.make_measure(SETTINGS, warmup_runs=1, runs=3)
    report = calibration.calibrate(SETTINGS, str(tmp_path), num_train=1, num_heldout=2, measure=measure, progress=None)
    path = tmp_path / "cost_model.json"
    model = load_linear_cost_model(path, space)
    bias, kernel = _read_file_coefficients(path, space)
    for entry in report["architectures"]["train"]:
        expected = bias + features(space, entry["indices"]).astype(np.float64) @ kernel
        assert model.cost(space.architecture(entry["indices"])) == pytest.approx(expected, abs=1e-4)
    for key in ("spearman", "mape_percent", "max_abs_percent_error"):
        assert math.isfinite(report["heldout"][key]) and math.isfinite(report["train"][key])
    assert report["runtime"]["name"] == "ai_edge_litert" and report["measurement"]["runs"] == 3
    records = [json.loads(line) for line in (tmp_path / calibration.CACHE_NAME).read_text().splitlines()]
    assert len(records) == 5 and all(len(record["model_sha256"]) == 64 for record in records)
    assert not list(tmp_path.glob("**/*.tflite"))  # Exports go to a deleted temporary directory.
    assert (tmp_path / "calibration.png").exists()


@pytest.mark.slow  # A fresh interpreter importing TensorFlow: ~20 s.
def test_tool_fit_only(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    calibration.calibrate(SETTINGS, str(tmp_path), num_train=150, num_heldout=10, measure=SyntheticLatency(space),
                          measure_only=True, progress=None)
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY / "tools" / "calibrate_cost_model.py"), f"--output_dir={tmp_path}",
         "--fit_only", "--image_size=32", "--num_classes=10", "--num_train=150", "--num_heldout=10"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "heldout" in completed.stdout and "pixel1 heldout" in completed.stdout
    assert get_cost_model(str(tmp_path / "cost_model.json"), "proxyless").provenance["fit"]["num_train"] == 152
