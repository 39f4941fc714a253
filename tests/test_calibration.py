"""Calibration: synthetic devices (tables, corrections, noise, resume), a fake phone, and one real tiny run."""

import json
import math
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tunas_keras.cost_models import calibration, devices, features, fitting, get_cost_model, layer_table, protocol
from tunas_keras.cost_models.sampling import extreme_indices

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = pathlib.Path(__file__).parent / "data"
SETTINGS = calibration.CalibrationSettings("proxyless", image_size=32, num_classes=10)
QUICK = calibration.Protocol(rounds=2, micro_rounds=2, num_anchors=2, anchor_every=10)


class SyntheticDevice(protocol.Device):
    """A device with known latencies (ms).

    An op costs `0.002 + 1e-6 MACs + 3e-6 values` (linear in the op predictor's features); a
    layer the sum of its ops; an isolated model adds `overhead`. A network costs the overhead,
    plus every block's layers scaled by `1 + 0.1 b / num_blocks` (layers run slower inside a
    network, differently per block), plus 0.4 ms: an interaction the table cannot see and the
    correction must fit. Each block's value is multiplied by `exp(noise · N(0, 1))`.
    """

    def __init__(self, space, image_size=32, num_classes=10, noise=0.0, seed=0, fail_after=None):
        self.catalogue = layer_table.layer_catalogue(space, image_size, num_classes)
        self.space, self.noise, self.rng, self.calls, self.fail_after = (
            space,
            noise,
            np.random.default_rng(seed),
            0,
            fail_after,
        )
        self.overhead = 0.01
        self.scales = 1.0 + 0.1 * np.arange(len(space.spec.blocks)) / len(space.spec.blocks)
        self.latency = {key: self.layer_ms(variant) for key, variant in self.catalogue.variants.items()}
        self.parameters = layer_table.variant_weights(self.catalogue)

    @staticmethod
    def op_ms(op) -> float:
        height, width, channels = op.input_shape
        out_height, out_width, out_channels = op.output_shape
        return 0.002 + 1e-6 * op.macs + 3e-6 * (height * width * channels + out_height * out_width * out_channels)

    def layer_ms(self, variant) -> float:
        return sum(self.op_ms(op) for op in layer_table.variant_ops(variant))

    def layer_sum(self, indices) -> float:
        return layer_table.network_cost(self.catalogue, self.latency, indices)

    def network_ms(self, indices) -> float:
        weights = layer_table.network_cost(self.catalogue, self.parameters, indices)
        layers = layer_table.network_cost(self.catalogue, layer_table.variant_layers(self.catalogue), indices)
        return (
            self.overhead
            + 0.4
            + 0.2 * weights
            + 0.01 * layers  # a cost per active layer that timing layers alone misses
            + layer_table.block_costs(self.catalogue, self.latency, indices) @ self.scales
        )

    def prepare(self, item):
        return item

    def time(self, item, warmup_runs, runs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        values = {
            "overhead": lambda: self.overhead,
            "op": lambda: self.overhead + self.op_ms(item.payload),
            "layer": lambda: self.overhead + self.layer_ms(item.payload),
            "network": lambda: self.network_ms(item.payload.indices),
        }
        value = values[item.kind]() * math.exp(self.noise * self.rng.standard_normal())
        return {
            "min": value,
            "median": 1.01 * value,
            "mean": 1.02 * value,
            "provenance": {"device": {"cpu_model": "synthetic"}, "runtime": {"name": "synthetic"}},
        }


def _calibrate(tmp_path, device, settings=SETTINGS, **kwargs):
    kwargs = {"options": QUICK, "progress": None, "device": device, **kwargs}
    return calibration.calibrate(settings, str(tmp_path), **kwargs)


def test_table_recovers_the_layer_sum_and_the_correction_the_rest(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    fake = SyntheticDevice(space)
    report = _calibrate(tmp_path, fake)
    assert report["unit"] == "layer" and report["micro"]["num_measured"] == 73
    assert report["train"]["count"] == 60 and report["heldout"]["count"] == 50  # 58 + the two extremes
    for row in report["architectures"]["train"] + report["architectures"]["heldout"]:
        assert row["table_ms"] == pytest.approx(fake.overhead + fake.layer_sum(row["indices"]), rel=1e-5)
        assert row["measured_ms"] == pytest.approx(fake.network_ms(row["indices"]), rel=1e-9)
    methods = report["methods"]
    assert methods["table"]["heldout"]["mape_percent"] > 3  # the interaction is 5-10 % of a network
    assert methods["table_corrected"]["heldout"]["mape_percent"] < 0.3
    assert methods["table_corrected"]["heldout"]["spearman"] > 0.999
    assert methods["table_corrected"]["fit"]["correction"] == "block_scale_weights_layers"  # what the device does
    assert methods["ridge"]["heldout"]["mape_percent"] > 2 * methods["table_corrected"]["heldout"]["mape_percent"]
    assert report["warnings"] == [] and not report["noisy"]

    # The written file is what `tools/search.py --cost_model=` loads; its batch cost is the table gather.
    model = get_cost_model(str(tmp_path / "cost_model.json"), "proxyless")
    rows = [row["indices"] for row in report["architectures"]["heldout"][:10]]
    batched = tf.function(model.batch_cost)(tf.constant(rows, tf.int32)).numpy()  # as inside the search step
    for row, entry, cost in zip(rows, report["architectures"]["heldout"], batched):
        assert model.cost(row) == pytest.approx(entry["table_corrected_ms"], rel=1e-5)
        assert cost == pytest.approx(entry["table_corrected_ms"], rel=1e-4)
    assert model.provenance["fit"]["method"] == "table_corrected"
    assert model.provenance["measurement"]["protocol"]["rounds"] == 2
    for method in calibration.METHODS:
        assert (
            get_cost_model(str(tmp_path / f"cost_model_{method}.json"), "proxyless").provenance["fit"]["method"]
            == method
        )
    assert (tmp_path / calibration.PLOT_NAME).stat().st_size > 1000
    assert json.loads((tmp_path / calibration.REPORT_NAME).read_text())["heldout"] == report["heldout"]
    micro = json.loads((tmp_path / calibration.MICRO_NAME).read_text())
    assert micro["overhead_ms"] == pytest.approx(fake.overhead) and len(micro["latency_ms"]) == 73
    assert "no noise warnings" in calibration.format_report(report)


def test_sampled_ops_and_predictor_rebuild_the_table_of_a_large_space(tmp_path):
    space = tunas_keras.get_search_space("mobilenet_v3_like")
    fake = SyntheticDevice(space)
    settings = calibration.CalibrationSettings("mobilenet_v3_like", image_size=32, num_classes=10)
    report = _calibrate(tmp_path, fake, settings, num_train=30, num_heldout=10, max_models=300)
    assert report["unit"] == "op" and report["micro"]["num_measured"] >= 300
    assert report["micro"]["num_predicted"] == report["micro"]["num_models"] - report["micro"]["num_measured"] > 1000
    for row in report["architectures"]["heldout"]:  # The device is linear in the predictor's features.
        assert row["table_ms"] == pytest.approx(fake.overhead + fake.layer_sum(row["indices"]), rel=1e-4)
    assert report["methods"]["table_corrected"]["heldout"]["mape_percent"] < 0.3


def test_every_op_measured_gives_a_predictor_ablation(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    fake = SyntheticDevice(space)
    report = _calibrate(tmp_path, fake, num_train=20, num_heldout=10, unit="op")
    assert report["micro"]["num_measured"] == report["micro"]["num_models"] == 98 and report["unit"] == "op"
    ablation = report["ablations"]["op_predictor"]
    assert ablation["num_sampled"] == 29 and ablation["num_predicted"] == 98 - 29
    for row in report["architectures"]["heldout"]:  # the sum of the ops is the layer sum
        assert row["table_ms"] == pytest.approx(fake.overhead + fake.layer_sum(row["indices"]), rel=1e-5)
    assert ablation["table"]["heldout"]["mape_percent"] == pytest.approx(
        report["methods"]["table"]["heldout"]["mape_percent"], rel=0.05
    )  # the device is linear: nothing lost
    assert "table_corrected @29/98 ops / heldout" in calibration.format_report(report)
    table = calibration.calibration_report.study_markdown({"synthetic": report}).splitlines()
    assert len(table) == 2 + 3 + 2 and table[2].startswith("| synthetic | ridge | 22 | 98 ops | 10 |")
    assert "| table | 0 |" in table[3] and "table_corrected **(written)** | 22 |" in table[4]


def test_interrupted_measurement_resumes_from_the_cache(tmp_path, caplog):
    space = tunas_keras.get_search_space("proxyless")
    complete = SyntheticDevice(space)
    _calibrate(tmp_path / "complete", complete, num_train=4, num_heldout=3, measure_only=True)
    for calls in (100, complete.calls - 10):  # killed among the micro-benchmarks, then among the networks
        with pytest.raises(KeyboardInterrupt):
            _calibrate(
                tmp_path / "resumed",
                SyntheticDevice(space, fail_after=calls - 100 * (calls != 100)),
                num_train=4,
                num_heldout=3,
            )
    cache = tmp_path / "resumed" / calibration.CACHE_NAME
    assert len(cache.read_text().splitlines()) == complete.calls - 10
    text = cache.read_text()
    cache.write_text(text[: -len(text.splitlines()[-1]) // 2 - 1])  # Killed in the middle of the last line.
    resumed = SyntheticDevice(space)
    report = _calibrate(tmp_path / "resumed", resumed, num_train=4, num_heldout=3)
    assert "truncated" in caplog.text
    assert resumed.calls == 11  # Only what was missing, the cut line included.
    assert len(cache.read_text().splitlines()) == complete.calls
    again = SyntheticDevice(space)
    _calibrate(tmp_path / "resumed", again, num_train=4, num_heldout=3)
    assert again.calls == 0
    more = SyntheticDevice(space)
    _calibrate(tmp_path / "resumed", more, num_train=5, num_heldout=3, measure_only=True)
    assert more.calls == 2  # One more network, once per round; the rest stays cached.
    assert math.isfinite(report["heldout"]["spearman"])


def test_noisy_device_triggers_the_warning(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    report = _calibrate(tmp_path, SyntheticDevice(space, noise=0.1), num_train=20, num_heldout=20)
    assert report["noisy"]
    text = " ".join(report["warnings"])
    assert "networks: rounds disagree by" in text and "a busy machine" in text
    noise = report["networks"]["noise"]
    assert 8 < noise["round_to_round"]["mean"]["mape_percent"] < 20  # two 10 % draws differ by ~11 %
    assert noise["round_to_round"]["mean"]["spearman"] < 0.999
    assert "WARNING: networks: rounds disagree" in calibration.format_report(report)
    model = get_cost_model(str(tmp_path / "cost_model.json"), "proxyless")
    assert model.provenance["warnings"] == report["warnings"]
    quiet = _calibrate(tmp_path / "quiet", SyntheticDevice(space, noise=0.0), num_train=20, num_heldout=20)
    assert quiet["warnings"] == []


def test_disturbed_rounds_are_the_ones_shifted_as_a_whole():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 5.0, 40)

    def records(factors):
        return [
            {"key": f"n{i}", "round": r, "min": value * factor * (1 + 0.01 * rng.standard_normal())}
            for r, factor in enumerate(factors)
            for i, value in enumerate(base)
        ]

    shifted = protocol.disturbed_rounds(records([1.0, 1.13, 1.0, 1.0, 0.99]), "min", 5.0)
    assert list(shifted) == [1] and shifted[1] == pytest.approx(13.0, abs=1.0)
    assert protocol.disturbed_rounds(records([1.0, 1.02, 0.98, 1.0, 1.01]), "min", 5.0) == {}  # idle jitter
    assert protocol.disturbed_rounds(records([1.0, 1.2]), "min", 5.0) == {}  # two rounds: no majority
    assert protocol.disturbed_rounds(records([1.0, 1.2, 1.3, 1.0]), "min", 5.0) == {}  # half the rounds


def test_a_disturbed_round_is_left_out_and_reported(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    options = calibration.Protocol(rounds=3, micro_rounds=2, num_anchors=2, anchor_every=10)
    quiet = _calibrate(tmp_path, SyntheticDevice(space), num_train=20, num_heldout=20, options=options)
    cache = tmp_path / calibration.CACHE_NAME
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    for record in lines:  # other work slowed round 1 of the networks by 20 %
        if record.get("phase") == "network" and record["round"] == 1:
            record.update({name: 1.2 * record[name] for name in ("min", "median", "mean")})
    cache.write_text("".join(json.dumps(record) + "\n" for record in lines))
    report = _calibrate(tmp_path, None, num_train=20, num_heldout=20, options=options, fit_only=True)
    assert list(report["networks"]["dropped_rounds"]) == [1] and report["micro"]["dropped_rounds"] == {}
    assert report["networks"]["dropped_rounds"][1] == pytest.approx(20.0, rel=1e-6)
    assert report["networks"]["noise"]["num_rounds"] == 2  # the noise floor of the rounds kept
    assert report["networks"]["noise"]["round_to_round"]["mean"]["mape_percent"] == pytest.approx(0.0, abs=1e-9)
    assert report["warnings"] == [
        "networks: round 1 ran 20.0 % slower than the others as a whole (other work during part of the run?); "
        "left out of the values and the noise floor."
    ]
    for name in ("train", "heldout"):
        assert report[name]["mape_percent"] == pytest.approx(quiet[name]["mape_percent"], rel=1e-6)
    assert report["measurement_seconds"] == pytest.approx(quiet["measurement_seconds"])  # the left-out round too


def test_a_fit_below_the_noise_floor_is_flagged():
    report = {
        "method": "table_corrected",
        "methods": {"table_corrected": {"heldout": {"mape_percent": 1.0}}},
        "num_threads": 1,
        "load_average_1m": 3.5,
        "networks": {
            "noise": {
                "round_to_round": {"mean": {"mape_percent": 2.5, "spearman": 0.995}},
                "final_noise_percent": 1.3,
                "anchors": {"a": {"cv_percent": 1.0}},
            }
        },
        "micro": {"noise": {"anchors": {}}},
    }
    warnings = calibration.calibration_report.noise_warnings(report, max_noise_percent=3.0)
    assert len(warnings) == 2
    assert "noise floor (1.30 %" in warnings[0] and "held-out MAPE (1.00 %)" in warnings[0]
    assert "Load average 3.50" in warnings[1]


def test_cache_made_with_other_settings_is_refused(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    _calibrate(tmp_path, SyntheticDevice(space), num_train=1, num_heldout=2, measure_only=True)
    changes = ({"image_size": 64}, {"quantization": "int8"}, {"num_threads": 2}, {"target": "adb"}, {"cpus": "0"})
    for change in changes:
        settings = calibration.CalibrationSettings(**{**SETTINGS.__dict__, **change})
        name = next(iter(change))
        with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
            _calibrate(tmp_path, SyntheticDevice(space), settings, num_train=1, num_heldout=2)
    other_space = calibration.CalibrationSettings("proxyless_enlarged", image_size=32, num_classes=10)
    with pytest.raises(ValueError, match="`space`.*'proxyless'"):
        _calibrate(tmp_path, SyntheticDevice(space), other_space, num_train=1, num_heldout=2)


def test_bad_arguments(tmp_path):
    device = SyntheticDevice(tunas_keras.get_search_space("proxyless"))
    cases = [
        ({"num_heldout": 1}, "`num_heldout`. Expected an int >= 2. Received: num_heldout=1"),
        ({"num_train": -1}, "`num_train`"),
        ({"statistic": "p99"}, "`statistic`. Expected one of"),
        ({"method": "best"}, "`method`. Expected one of"),
        ({"unit": "block"}, "`unit`. Expected one of"),
        ({"unit": "layer", "max_models": 10}, "`max_models`: 'proxyless' has 73 layer variants"),
        ({"l2": 0.0}, "`l2`. Expected a number > 0"),
        ({"max_noise_percent": 0}, "`max_noise_percent`"),
        ({"output": str(tmp_path / "model.txt")}, "`output`. Expected a path ending in '.json'"),
        ({"fit_only": True, "measure_only": True}, "at most one of `fit_only` and `measure_only`"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            _calibrate(tmp_path, device, **kwargs)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`output_dir`. Expected a writable directory"):
        _calibrate(tmp_path / "file" / "sub", device)
    with pytest.raises(ValueError, match="`fit_only`: only 0 of the 74 micro-benchmarks are measured"):
        _calibrate(tmp_path / "empty", None, fit_only=True)
    for kwargs, message in (
        ({"space": "no_such_space"}, "`space`"),
        ({"quantization": "int4"}, "`quantization`"),
        ({"image_size": 0}, "`image_size`. Expected an int >= 1"),
        ({"cpus": "a"}, "`cpus`"),
    ):
        with pytest.raises(ValueError, match=message):
            calibration.CalibrationSettings(**kwargs)
    with pytest.raises(ValueError, match="`runs`. Expected an int >= 1"):
        calibration.Protocol(runs=0)


def test_cpus_parsing_and_pinning():
    assert devices.parse_cpus("2-3,0") == (0, 2, 3) and devices.parse_cpus(None) is None
    assert devices.cpu_mask((4, 5)) == "30" and calibration.CalibrationSettings(cpus="1, 0").cpus == "0,1"
    before = os.sched_getaffinity(0)
    cpu = min(before)
    with devices.pinned((cpu,)):
        assert os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="`cpus`. Expected CPUs this process may use"):
        with devices.pinned((10**6,)):
            pass


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
    bias, kernel = fitting.fit_ridge(matrix, targets, 0.1)  # 30 features > 12 samples: the Gram route
    centered = matrix - matrix.mean(0)
    primal = np.linalg.solve(centered.T @ centered + 0.1 * 12 * np.eye(30), centered.T @ (targets - targets.mean()))
    np.testing.assert_allclose(kernel, primal, atol=1e-10)
    assert bias == pytest.approx(targets.mean() - matrix.mean(0) @ primal)
    tall = rng.normal(size=(40, 6))  # more samples than features: the SVD route
    np.testing.assert_allclose(
        fitting.fit_ridge(tall, targets.repeat(4)[:40], 0.1)[1],
        np.linalg.solve(
            (tall - tall.mean(0)).T @ (tall - tall.mean(0)) + 4 * np.eye(6),
            (tall - tall.mean(0)).T @ (targets.repeat(4)[:40] - targets.repeat(4)[:40].mean()),
        ),
        atol=1e-10,
    )
    stats = pytest.importorskip("scipy.stats")
    first, second = rng.integers(0, 5, 40), rng.normal(size=40)  # with ties
    assert calibration.spearman(first, second) == pytest.approx(stats.spearmanr(first, second)[0], abs=1e-12)
    assert math.isnan(calibration.spearman([1, 1, 1], [1, 2, 3]))


def test_corrections_recover_what_they_model():
    rng = np.random.default_rng(0)
    blocks = rng.uniform(1, 5, (40, 4))
    targets = 0.5 + blocks @ np.array([1.0, 1.2, 0.9, 1.1])
    fitted = fitting.fit_block_scale(blocks, targets, shrink=1e-6)
    np.testing.assert_allclose(fitted.scales, [1.0, 1.2, 0.9, 1.1], atol=1e-4)
    assert fitted.bias == pytest.approx(0.5, abs=1e-3)
    affine = fitting.fit_affine(blocks, 2.0 + 1.5 * blocks.sum(1))
    assert affine.bias == pytest.approx(2.0) and np.allclose(affine.scales, 1.5)
    chosen, scores = fitting.choose_correction(blocks, np.zeros([40, 3]), targets)
    assert chosen.name == "block_scale" and min(scores, key=scores.get).startswith("block_scale")
    weights = rng.uniform(0, 2, (40, 4))
    with_weights = targets + weights @ np.array([0.0, 0.5, 1.0, 2.0])
    chosen, scores = fitting.choose_correction(blocks, np.zeros([40, 3]), with_weights, weights=weights)
    assert chosen.name == "block_scale_weights" and "block_scale_weights(1e-06)" in scores
    np.testing.assert_allclose(chosen.weight_scales, [0.0, 0.5, 1.0, 2.0], atol=0.05)
    assert np.abs(chosen.predict(blocks, None, weights) - with_weights).max() < 0.05
    # A cost per active layer (per block) that the table misses: the layers term recovers it.
    layers = rng.integers(1, 5, (40, 4)).astype(float)
    with_layers = targets + layers @ np.array([0.3, 0.0, 0.1, 0.2])
    chosen, scores = fitting.choose_correction(blocks, np.zeros([40, 3]), with_layers, weights=weights, layers=layers)
    assert chosen.name == "block_scale_layers" and chosen.weight_scales is None
    assert {"block_scale_weights_layers(1e-06)", "block_scale_layers(1e-06)"} <= set(scores)
    np.testing.assert_allclose(chosen.layer_scales, [0.3, 0.0, 0.1, 0.2], atol=0.02)
    assert np.abs(chosen.predict(blocks, None, None, layers) - with_layers).max() < 0.02
    both = fitting.fit_block_scale(
        blocks, with_weights + layers @ np.array([0.3, 0.0, 0.1, 0.2]), 1e-6, weights, layers
    )
    assert both.name == "block_scale_weights_layers"
    np.testing.assert_allclose(both.weight_scales, [0.0, 0.5, 1.0, 2.0], atol=0.05)
    np.testing.assert_allclose(both.layer_scales, [0.3, 0.0, 0.1, 0.2], atol=0.05)


def _fake_phone(report_text, calls):
    def run(command, **kwargs):
        calls.append(command)
        answers = {"push": "1 file pushed.", "getprop": "Pixel", "benchmark_model": report_text}
        stdout = next(value for key, value in answers.items() if any(key in part for part in command))
        return types.SimpleNamespace(returncode=0, stdout=stdout, stderr="")

    return run


def test_adb_device_with_a_fake_phone(tmp_path, monkeypatch):
    calls = []
    settings = calibration.CalibrationSettings(target="adb", cpus="4-7")
    device = devices.AdbDevice(
        settings,
        str(tmp_path),
        {"serial": "abc"},
        _fake_phone((DATA_DIR / "benchmark_model_output.txt").read_text(), calls),
    )
    monkeypatch.setattr(devices, "export_item", lambda item, path, settings: pathlib.Path(path).write_bytes(b"x"))
    item = protocol.Item("layer", "some layer")
    path = device.prepare(item)
    assert path.endswith(".tflite") and device.prepare(item) == path
    first = device.time(path, 2, 50)
    second = device.time(path, 2, 50)
    assert first["min"] == pytest.approx(71.402) and first["median"] == pytest.approx(72.030)
    assert first["mean"] == pytest.approx(72.2051) and second["provenance"]["device"]["model"] == "Pixel"
    assert sum("push" in command for command in calls) == 1  # pushed once, timed twice
    assert sum("getprop" in command for command in calls) == len(calibration.devices.adb.DEVICE_PROPERTIES)
    benchmark = [command for command in calls if any("benchmark_model" in part for part in command)]
    assert len(benchmark) == 2 and benchmark[0][:6] == ["adb", "-s", "abc", "shell", "taskset", "f0"]
    assert "--warmup_runs=2" in benchmark[0] and first["provenance"]["cpu_mask"] == "f0"
    with pytest.raises(ValueError, match="`cpu_mask`. Expected a hexadecimal mask"):
        devices.adb.build_adb_commands("m.tflite", cpu_mask="4-7")


def test_end_to_end_with_real_exports(tmp_path):
    """The only calibration that exports and times real models (tiny: 32 px, 10 classes, 12 sampled ops)."""
    options = calibration.Protocol(
        rounds=2, warmup_runs=0, runs=2, micro_rounds=2, micro_warmup_runs=0, micro_runs=2, num_anchors=1
    )
    report = calibration.calibrate(
        SETTINGS, str(tmp_path), num_train=1, num_heldout=2, unit="op", max_models=12, options=options, progress=None
    )
    space = tunas_keras.get_search_space("proxyless")
    assert report["unit"] == "op" and report["micro"]["num_predicted"] > 0
    model = get_cost_model(str(tmp_path / "cost_model.json"), space)
    for entry in report["architectures"]["heldout"]:
        assert model.cost(entry["indices"]) == pytest.approx(entry["table_corrected_ms"], rel=1e-5, abs=1e-6)
    for name in ("train", "heldout"):
        assert all(math.isfinite(report["methods"]["table"][name][key]) for key in ("mape_percent", "rmse_ms"))
    assert report["runtime"]["name"] == "ai_edge_litert" and report["device"]["cpu_affinity"]
    records = [json.loads(line) for line in (tmp_path / calibration.CACHE_NAME).read_text().splitlines()]
    assert {record["phase"] for record in records} == {"micro", "network"}
    assert all(len(record["provenance"]["model_sha256"]) == 64 for record in records)
    assert len(list((tmp_path / "models" / "network").glob("*.tflite"))) == 5  # 1 + 2 extremes + 2 held out
    assert len(list((tmp_path / "models" / "op").glob("*.tflite"))) == report["micro"]["num_measured"]
    assert report["networks"]["noise"]["round_to_round"]["mean"]["spearman"] <= 1.0
    assert features(space, entry["indices"]).shape == model.kernel.shape


@pytest.mark.slow  # A fresh interpreter importing TensorFlow: ~20 s.
def test_tool_fit_only(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    _calibrate(tmp_path, SyntheticDevice(space), num_train=30, num_heldout=10, measure_only=True)
    completed = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY / "tools" / "calibrate_cost_model.py"),
            f"--output_dir={tmp_path}",
            "--fit_only",
            "--image_size=32",
            "--num_classes=10",
            "--num_train=30",
            "--num_heldout=10",
            "--rounds=2",
            "--micro_rounds=2",
            "--num_anchors=2",
            "--anchor_every=10",
            "--method=table",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "table (written) / heldout" in completed.stdout and "noise (networks" in completed.stdout
    assert get_cost_model(str(tmp_path / "cost_model.json"), "proxyless").provenance["fit"]["num_train"] == 32
