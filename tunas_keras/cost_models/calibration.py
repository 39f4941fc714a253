"""Calibrating a latency cost model to a device (this host with LiteRT, or a phone over adb).

Three models are fitted on the same measurements and compared on the same held-out networks:

* `table`: per-layer latency tables. Every layer variant of the space (`layer_table`) is timed
  in isolation as a small `.tflite` at its real input resolution (unit "layer"), or every op of
  every variant (unit "op", the kernel level of nn-Meter: far fewer models where the widths are
  searched; more ops than `max_models` are sampled and the rest predicted by `op_predictor`),
  minus the latency of an empty model; a network is predicted as the sum of its layers.
* `table_corrected` (the default): the table plus a small correction fitted on a few
  whole-network measurements (`fitting.choose_correction`: an affine map, one scale per block,
  or ridge over the one-hot features of the residual; picked by cross-validation).
* `ridge`: ridge regression over the Pixel-1 one-hot features of the networks alone (the
  original calibration; needs ~200 networks).

Every measurement follows `protocol` (interleaved rounds, anchors re-timed through the run, a
resumable cache) and the report gives its noise floor (test-retest agreement between rounds)
beside the fits, with warnings when the noise is above what the fit claims. Each model is a
coefficient file of the Pixel-1 layout (`tables_to_linear`), so `get_cost_model(path, space)`
and `tools/search.py --cost_model=path.json` load any of them and the search's batch cost stays
one table gather.

    >>> settings = CalibrationSettings("proxyless", image_size=224)
    >>> report = calibrate(settings, "runs/calibration", num_train=58, num_heldout=50)
    >>> report["methods"]["table_corrected"]["heldout"]["mape_percent"], report["warnings"]

References: Bender et al., CVPR 2020, §5 (a linear latency model over one-hot features); Cai et
al., ProxylessNAS / Once-for-All (latency lookup tables); Zhang et al., nn-Meter (MobiSys 2021).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import time
from typing import Callable, Optional

import numpy as np

import search_spaces
from tunas_keras.cost_models import calibration_report, devices, fitting, layer_table, protocol
from tunas_keras.cost_models.linear import features, load_linear_cost_model, pixel1_cost_model, save_linear_cost_model
from tunas_keras.cost_models.op_predictor import OpPredictor, sample_ops
from tunas_keras.cost_models.protocol import Item, regression_metrics, spearman  # noqa: F401 (re-exported)
from tunas_keras.cost_models.sampling import extreme_indices, uniform_indices
from tunas_keras.export import tflite
from tunas_keras.training.trainer import prepare_model_dir, write_atomic

PROTOCOL_VERSION = 2  # Caches of the first calibration (one block per network) are refused.
TARGETS = ("host", "adb")
UNITS = ("auto", "layer", "op")
METHODS = ("table_corrected", "table", "ridge")
STATISTICS = protocol.STATISTICS
CACHE_NAME = "measurements.jsonl"
REPORT_NAME = "calibration_report.json"
PLOT_NAME = "calibration.png"
MICRO_NAME = "micro_latency.json"
OVERHEAD_KEY = "overhead"
# A round whose values sit this far (%) from the other rounds' as a whole is left out of the
# values and the noise floor (`protocol.disturbed_rounds`; idle rounds here shift by <= 2 %).
DISTURBED_ROUND_PERCENT = 5.0
ABLATION_FRACTION = 0.3
# Rounds of whole networks disagreeing by more (MAPE, %) warn. The idle 2-core study host showed
# 3.1-3.7 %, the same host beside a busy loop per core 33 % (docs/benchmarks.md).
DEFAULT_MAX_NOISE_PERCENT = 6.0


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
      image_size / num_classes: input resolution and classifier size of the exported networks.
      quantization: a key of `tflite.QUANTIZATIONS`.
      num_threads: interpreter threads.
      use_xnnpack: whether the XNNPACK delegate is used.
      target: "host" (LiteRT here) or "adb" (`benchmark_model` on a phone).
      cpus: pin the timing to these CPUs ("0", "0,2", "2-3"; `taskset` on a phone); None: no pinning.
      protocol: the measurement protocol's version.
    """

    space: str = "proxyless"
    image_size: int = 224
    num_classes: int = 1001
    quantization: str = "none"
    num_threads: int = 1
    use_xnnpack: bool = True
    target: str = "host"
    cpus: Optional[str] = None
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self):
        object.__setattr__(self, "space", search_spaces.get_search_space(self.space).name)
        for name, minimum in (("image_size", 1), ("num_classes", 1), ("num_threads", 1)):
            _check_int(name, getattr(self, name), minimum)
        tflite.get_quantization(self.quantization)
        if self.target not in TARGETS:
            raise ValueError(
                f"Invalid value for argument `target`. Expected one of {TARGETS}. Received: target={self.target!r}"
            )
        cpus = devices.parse_cpus(self.cpus)
        object.__setattr__(self, "cpus", None if cpus is None else ",".join(map(str, cpus)))


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Rounds and runs of the two phases (micro-benchmarks, whole networks), and the anchors.

    Each visit of an item is `warmup_runs` untimed + `runs` timed runs; every item is visited once
    per round; `num_anchors` items are re-visited every `anchor_every` items of each round.
    """

    rounds: int = 5
    warmup_runs: int = 3
    runs: int = 10
    micro_rounds: int = 5
    micro_warmup_runs: int = 2
    micro_runs: int = 10
    num_anchors: int = 3
    anchor_every: int = 20

    def __post_init__(self):
        for field in dataclasses.fields(self):
            minimum = 0 if field.name in ("warmup_runs", "micro_warmup_runs", "num_anchors") else 1
            _check_int(field.name, getattr(self, field.name), minimum)


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


@dataclasses.dataclass(frozen=True)
class MicroPlan:
    """What the micro-benchmarks time: `unit`, the measured `items` (the empty model first) and,
    for unit "op", every op of the space (`ops`, key → `Op`; those not measured are predicted)."""

    unit: str
    items: tuple
    ops: Optional[dict] = None

    @property
    def measured_keys(self) -> list[str]:
        return [item.key for item in self.items if item.kind != "overhead"]


def micro_plan(catalogue, unit: str = "auto", max_models: int = 2000, seed: int = 0) -> MicroPlan:
    """Layers if there are at most `max_models` variants (or `unit="layer"`), else ops, sampled
    down to `max_models` when there are more."""
    if unit not in UNITS:
        raise ValueError(f"Invalid value for argument `unit`. Expected one of {UNITS}. Received: unit={unit!r}")
    overhead = Item("overhead", OVERHEAD_KEY)
    if unit == "layer" or (unit == "auto" and len(catalogue.variants) <= max_models):
        if len(catalogue.variants) > max_models:
            raise ValueError(
                f"Invalid value for argument `max_models`: {catalogue.space.name!r} has "
                f"{len(catalogue.variants)} layer variants. Expected max_models >= that, or unit='op'. "
                f"Received: max_models={max_models}"
            )
        layers = tuple(Item("layer", key, variant) for key, variant in catalogue.variants.items())
        return MicroPlan("layer", (overhead,) + layers)
    ops = layer_table.catalogue_ops(catalogue)
    sampled = sample_ops(ops, max_models, seed)
    return MicroPlan("op", (overhead,) + tuple(Item("op", key, ops[key]) for key in sampled), ops)


def _anchors(keys: list, count: int, seed: int) -> list:
    if not keys or not count:
        return []
    chosen = np.random.default_rng([seed, 4]).choice(len(keys), min(count, len(keys)), replace=False)
    return [keys[index] for index in sorted(chosen)]


def micro_latencies(plan: MicroPlan, values: dict, sample: Optional[list] = None) -> tuple[dict, dict]:
    """Latency (ms, minus the empty model's) of every layer variant or op of the plan.

    Ops that were not measured (or, with `sample`, not in it) are predicted by an `OpPredictor`
    fitted on the others. Returns `(latency, info)`.
    """
    overhead = values[OVERHEAD_KEY]
    measured = {key: values[key] for key in (sample if sample is not None else plan.measured_keys)}
    latency = {key: max(value - overhead, 0.0) for key, value in measured.items()}
    info = {"overhead_ms": overhead, "num_measured": len(measured), "num_predicted": 0}
    if plan.unit == "op" and len(measured) < len(plan.ops):
        positive = [key for key, value in measured.items() if value > 0]
        predictor = OpPredictor.fit([plan.ops[key] for key in positive], [measured[key] for key in positive])
        for key, op in plan.ops.items():
            if key not in latency:
                latency[key] = max(predictor.predict(op) - overhead, 0.0)
        info["num_predicted"] = len(plan.ops) - len(measured)
        errors = [abs(predictor.predict(plan.ops[key]) - measured[key]) / measured[key] for key in positive]
        info["predictor_train_mape_percent"] = float(100 * np.mean(errors))
    return latency, info


@dataclasses.dataclass
class _Networks:
    """Per network: per-block table latency, parameters and active layers, one-hot features, measured latency."""

    rows: list
    blocks: np.ndarray
    weights: np.ndarray
    features: np.ndarray
    measured: np.ndarray
    layers: np.ndarray


def _networks(space, catalogue, variant_latency: dict, rows: list, values: dict) -> _Networks:
    parameters = layer_table.variant_weights(catalogue)
    blocks = np.stack([layer_table.block_costs(catalogue, variant_latency, row) for row in rows])
    weights = np.stack([layer_table.block_costs(catalogue, parameters, row) for row in rows])
    ones = layer_table.variant_layers(catalogue)
    layers = np.stack([layer_table.block_costs(catalogue, ones, row) for row in rows])
    matrix = np.stack([features(space, row) for row in rows]).astype(np.float64)
    measured = np.asarray([values[str(space.architecture(row))] for row in rows])
    return _Networks(rows, blocks, weights, matrix, measured, layers)


def _linear_form(space, catalogue, variant_latency, correction: fitting.Correction) -> tuple[float, np.ndarray]:
    bias, kernel = layer_table.tables_to_linear(space, catalogue, variant_latency, 0.0, correction.scales)
    for scales, per_variant in (
        (correction.weight_scales, layer_table.variant_weights),
        (correction.layer_scales, layer_table.variant_layers),
    ):
        if scales is not None:
            extra_bias, extra = layer_table.tables_to_linear(space, catalogue, per_variant(catalogue), 0.0, scales)
            bias, kernel = bias + extra_bias, kernel + extra
    if correction.residual is not None:
        kernel = kernel + correction.residual
    return float(np.float32(correction.bias + bias)), kernel.astype(np.float32)


def _evaluate(bias: float, kernel: np.ndarray, sets: dict) -> dict:
    """Metrics of the stored (float32) coefficients on each set, and the predictions."""
    result = {}
    for name, data in sets.items():
        predicted = bias + data.features @ kernel.astype(np.float64)
        result[name] = regression_metrics(predicted, data.measured)
        result[f"{name}_predicted_ms"] = [float(value) for value in predicted]
    return result


def _table_methods(space, catalogue, variant_latency, overhead, train: _Networks, sets: dict, seed: int) -> dict:
    """`table` (nothing fitted) and `table_corrected` (the cross-validated correction), evaluated on `sets`."""
    table = fitting.Correction("table", overhead, np.ones(train.blocks.shape[1]))
    correction, scores = fitting.choose_correction(
        train.blocks, train.features, train.measured, seed=seed, weights=train.weights, layers=train.layers
    )
    methods = {}
    for name, fitted, extra in (
        ("table", table, {}),
        ("table_corrected", correction, {"cross_validation_mape_percent": scores}),
    ):
        bias, kernel = _linear_form(space, catalogue, variant_latency, fitted)
        details = {
            "correction": fitted.name,
            "parameter": fitted.parameter,
            "bias_ms": fitted.bias,
            "block_scales": [float(scale) for scale in fitted.scales],
            "block_ms_per_million_weights": None
            if fitted.weight_scales is None
            else [float(scale) for scale in fitted.weight_scales],
            "block_ms_per_layer": None if fitted.layer_scales is None else [float(s) for s in fitted.layer_scales],
            **extra,
        }
        methods[name] = {"bias": bias, "kernel": kernel, "fit": details, **_evaluate(bias, kernel, sets)}
    return methods


def fit_methods(
    space, catalogue, variant_latency, overhead, train: _Networks, heldout: _Networks, l2: Optional[float], seed: int
) -> dict:
    """Fits `ridge`, `table` and `table_corrected`; `{method: {"bias", "kernel", "fit", "train", "heldout", ...}}`."""
    sets = {"train": train, "heldout": heldout}
    scores = None
    if l2 is None:
        l2, scores = fitting.choose_l2(train.features, train.measured, seed=seed)
    bias, kernel = fitting.fit_ridge(train.features, train.measured, l2)
    bias, kernel = float(np.float32(bias)), kernel.astype(np.float32)
    fit = {"l2": l2, "l2_cross_validation_mape_percent": scores and {repr(k): v for k, v in scores.items()}}
    methods = {"ridge": {"bias": bias, "kernel": kernel, "fit": fit, **_evaluate(bias, kernel, sets)}}
    return {**methods, **_table_methods(space, catalogue, variant_latency, overhead, train, sets, seed)}


def _predictor_ablation(space, catalogue, plan, values, train_rows, heldout_rows, network_values, seed) -> dict:
    """Every op was measured: how good would a table from a sample of them plus the predictor be?"""
    sample = sample_ops(
        {key: plan.ops[key] for key in plan.measured_keys},
        max(1, int(ABLATION_FRACTION * len(plan.measured_keys))),
        seed,
    )
    latency, info = micro_latencies(plan, values, sample=sample)
    variant_latency = layer_table.variant_latencies(catalogue, "op", latency)
    train = _networks(space, catalogue, variant_latency, train_rows, network_values)
    heldout = _networks(space, catalogue, variant_latency, heldout_rows, network_values)
    methods = _table_methods(space, catalogue, variant_latency, values[OVERHEAD_KEY], train, {"heldout": heldout}, seed)
    result = {"num_sampled": len(sample), "num_ops": len(plan.ops), **info}
    return {
        **result,
        **{
            name: {"heldout": method["heldout"], "correction": method["fit"]["correction"]}
            for name, method in methods.items()
        },
    }


def check_arguments(
    output, num_train, num_heldout, seed, statistic, l2, method, fit_only, measure_only, max_models, max_noise_percent
) -> None:
    """Checks `calibrate`'s arguments (cheap; a ValueError naming the argument)."""
    _check_int("num_train", num_train, 0)
    _check_int("num_heldout", num_heldout, 2)  # A rank correlation needs two points.
    _check_int("seed", seed, 0)
    _check_int("max_models", max_models, 1)
    if statistic not in STATISTICS:
        raise ValueError(
            f"Invalid value for argument `statistic`. Expected one of {STATISTICS}. Received: statistic={statistic!r}"
        )
    if method not in METHODS:
        raise ValueError(f"Invalid value for argument `method`. Expected one of {METHODS}. Received: method={method!r}")
    if l2 is not None and (isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 > 0):
        raise ValueError(
            f"Invalid value for argument `l2`. Expected a number > 0 or None (cross-validated). Received: l2={l2!r}"
        )
    if isinstance(max_noise_percent, bool) or not isinstance(max_noise_percent, (int, float)) or max_noise_percent <= 0:
        raise ValueError(
            f"Invalid value for argument `max_noise_percent`. Expected a number > 0. "
            f"Received: max_noise_percent={max_noise_percent!r}"
        )
    if not str(output).endswith(".json"):
        raise ValueError(
            f"Invalid value for argument `output`. Expected a path ending in '.json'. Received: output={output!r}"
        )
    if fit_only and measure_only:
        raise ValueError("Invalid arguments. Expected at most one of `fit_only` and `measure_only`. Received: both")


def _measured(records: list, keys: list, statistic: str, what: str) -> dict:
    values = protocol.item_values([record for record in records if record["key"] in set(keys)], statistic)
    missing = [key for key in keys if key not in values]
    if missing:
        raise ValueError(
            f"Invalid value for argument `fit_only`: only {len(keys) - len(missing)} of the "
            f"{len(keys)} {what} are measured (first missing: {missing[0][:80]!r}). Expected all "
            "measured (run the measurement first, without `fit_only`)."
        )
    return values


def _drop_disturbed_rounds(micro_records: list, network_records: list, statistic: str) -> tuple:
    """`(micro, network records, {"micro" / "networks": {round: shift %}})` without disturbed rounds."""
    dropped = {
        "micro": protocol.disturbed_rounds(micro_records, statistic, DISTURBED_ROUND_PERCENT, [OVERHEAD_KEY]),
        "networks": protocol.disturbed_rounds(network_records, statistic, DISTURBED_ROUND_PERCENT),
    }
    micro_records = [record for record in micro_records if record["round"] not in dropped["micro"]]
    network_records = [record for record in network_records if record["round"] not in dropped["networks"]]
    return micro_records, network_records, dropped


def _measure(settings, plan, network_items, network_anchors, cache, device, options: Protocol, seed, progress) -> None:
    micro_keys = plan.measured_keys
    with devices.pinned(devices.parse_cpus(settings.cpus) if settings.target == "host" else None):
        protocol.run_rounds(
            "micro",
            plan.items,
            device,
            cache,
            options.micro_rounds,
            options.micro_warmup_runs,
            options.micro_runs,
            _anchors(micro_keys, options.num_anchors, seed),
            options.anchor_every,
            [OVERHEAD_KEY],
            seed,
            progress,
        )
        protocol.run_rounds(
            "network",
            network_items,
            device,
            cache,
            options.rounds,
            options.warmup_runs,
            options.runs,
            network_anchors,
            options.anchor_every,
            (),
            seed,
            progress,
        )


def _cost_file_provenance(settings, report: dict, name: str, options: Protocol) -> dict:
    """The cost-model file's top-level fields: where, how and when it was measured and fitted."""
    method = report["methods"][name]
    return {
        "source": "tools/calibrate_cost_model.py",
        "units": "ms",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": report["device"],
        "runtime": report["runtime"],
        "measurement": {
            **dataclasses.asdict(settings),
            "statistic": report["statistic"],
            "unit": report["unit"],
            "protocol": dataclasses.asdict(options),
        },
        "fit": {
            "method": name,
            **method["fit"],
            "num_train": report["train"]["count"],
            "num_heldout": report["heldout"]["count"],
        },
        "heldout_metrics": method["heldout"],
        "noise_floor": {phase: report[phase]["noise"].get("round_to_round") for phase in ("networks", "micro")},
        "warnings": report["warnings"],
    }


def _fit_and_report(
    settings,
    space,
    catalogue,
    plan,
    micro_records,
    network_records,
    train_rows,
    heldout_rows,
    statistic,
    method,
    l2,
    seed,
    output,
    output_dir,
    max_noise_percent,
    options,
) -> dict:
    seconds = {  # the whole measurement, the rounds left out included
        "micro": protocol.measurement_seconds(micro_records),
        "networks": protocol.measurement_seconds(network_records),
    }
    micro_records, network_records, dropped = _drop_disturbed_rounds(micro_records, network_records, statistic)
    micro_values = _measured(micro_records, plan.measured_keys + [OVERHEAD_KEY], statistic, "micro-benchmarks")
    latency, micro_info = micro_latencies(plan, micro_values)
    variant_latency = layer_table.variant_latencies(catalogue, plan.unit, latency)
    network_keys = [str(space.architecture(row)) for row in train_rows + heldout_rows]
    network_values = _measured(network_records, network_keys, statistic, "networks")
    train = _networks(space, catalogue, variant_latency, train_rows, network_values)
    heldout = _networks(space, catalogue, variant_latency, heldout_rows, network_values)
    methods = fit_methods(space, catalogue, variant_latency, micro_info["overhead_ms"], train, heldout, l2, seed)
    ablations = {}
    if plan.unit == "op" and micro_info["num_predicted"] == 0:
        ablations["op_predictor"] = _predictor_ablation(
            space, catalogue, plan, micro_values, train_rows, heldout_rows, network_values, seed
        )
    pixel1 = pixel1_cost_model(space)
    pixel1_costs = {
        name: np.asarray([pixel1.cost(space.architecture(row)) for row in data.rows])
        for name, data in (("train", train), ("heldout", heldout))
    }
    first = network_records[0]["provenance"] if network_records else {}
    loads = [record["load_1m"] for record in micro_records + network_records if record.get("load_1m") is not None]
    report = {
        "cost_model_path": output,
        "cache_path": os.path.join(output_dir, CACHE_NAME),
        "plot_path": os.path.join(output_dir, PLOT_NAME),
        "report_path": os.path.join(output_dir, REPORT_NAME),
        "micro_path": os.path.join(output_dir, MICRO_NAME),
        "space": space.name,
        "settings": dataclasses.asdict(settings),
        "num_threads": settings.num_threads,
        "device": first.get("device"),
        "runtime": first.get("runtime"),
        "statistic": statistic,
        "unit": plan.unit,
        "method": method,
        "protocol": dataclasses.asdict(options),
        "micro": {
            **micro_info,
            "num_models": len(plan.ops) if plan.ops else len(catalogue.variants),
            "num_layer_variants": len(catalogue.variants),
            "noise": protocol.noise_floor(micro_records, statistic, exclude=[OVERHEAD_KEY]),
            "dropped_rounds": dropped["micro"],
            "seconds": seconds["micro"],
        },
        "networks": {
            "num_train": len(train_rows),
            "num_heldout": len(heldout_rows),
            "noise": protocol.noise_floor(network_records, statistic),
            "dropped_rounds": dropped["networks"],
            "seconds": seconds["networks"],
        },
        "load_average_1m": float(np.mean(loads)) if loads else None,
        "methods": {
            name: {key: value for key, value in result.items() if key not in ("bias", "kernel")}
            for name, result in methods.items()
        },
        "ablations": ablations,
        "train": methods[method]["train"],
        "heldout": methods[method]["heldout"],
        **{
            f"pixel1_{name}": {"spearman": spearman(costs, data.measured)}
            for (name, costs), data in zip(pixel1_costs.items(), (train, heldout))
        },
    }
    report["measurement_seconds"] = report["micro"]["seconds"]["total"] + report["networks"]["seconds"]["total"]
    report["warnings"] = calibration_report.noise_warnings(report, max_noise_percent)
    report["noisy"] = bool(report["warnings"])
    report["architectures"] = {
        name: [
            {
                "indices": list(row),
                "measured_ms": float(measured),
                "pixel1_ms": float(reference),
                **{f"{m}_ms": methods[m][f"{name}_predicted_ms"][index] for m in methods},
            }
            for index, (row, measured, reference) in enumerate(zip(data.rows, data.measured, pixel1_costs[name]))
        ]
        for name, data in (("train", train), ("heldout", heldout))
    }
    for name, result in methods.items():
        provenance = _cost_file_provenance(settings, report, name, options)
        for path in {os.path.join(output_dir, f"cost_model_{name}.json"), *([output] if name == method else [])}:
            save_linear_cost_model(path, space, result["bias"], result["kernel"], provenance)
    load_linear_cost_model(output, space)  # Fail here, not in a later search, if the file does not load.
    write_atomic(report["micro_path"], json.dumps({"unit": plan.unit, "latency_ms": latency, **micro_info}, indent=1))
    calibration_report.write_plot(report, f"{space.name} on {settings.target}, {statistic} latency")
    return report


def calibrate(
    settings: CalibrationSettings,
    output_dir: str,
    output: Optional[str] = None,
    num_train: int = 58,
    num_heldout: int = 50,
    seed: int = 0,
    statistic: str = "min",
    method: str = "table_corrected",
    unit: str = "auto",
    max_models: int = 2000,
    options: Protocol = Protocol(),
    l2: Optional[float] = None,
    include_extremes: bool = True,
    device: Optional[protocol.Device] = None,
    model_dir: Optional[str] = None,
    fit_only: bool = False,
    measure_only: bool = False,
    max_noise_percent: float = DEFAULT_MAX_NOISE_PERCENT,
    progress: Optional[Callable[[str], None]] = print,
) -> dict:
    """Measures (resuming from the cache), fits every method, writes the cost models, report and plot.

    Args:
      settings: what is measured and where.
      output_dir: holds `measurements.jsonl`, `calibration_report.json`, `calibration.png`,
        `micro_latency.json`, `cost_model_<method>.json` and (unless `model_dir`) `models/`.
      output: the chosen method's cost-model file (default `<output_dir>/cost_model.json`).
      num_train / num_heldout: uniformly sampled networks (`include_extremes` adds the smallest
        and the largest to the training set, so 58 + 2 = 60 whole-network measurements by default).
      seed: sampling, measuring order, anchors and cross-validation seed.
      statistic: per-block latency statistic ("min", "median" or "mean"); rounds are combined
        by their median. "min" by default: on the idle study host its rounds agreed better than
        the median's in every space and phase (docs/benchmarks.md).
      method: the model written to `output` (all are written as `cost_model_<method>.json`).
      unit / max_models: see `micro_plan`.
      options: rounds, runs and anchors of the protocol.
      l2: ridge strength of the `ridge` method; None: cross-validated.
      device: a `protocol.Device` (default `devices.make_device(settings, model_dir)`; tests
        inject fakes).
      model_dir: where exported models are kept (default `<output_dir>/models`).
      fit_only / measure_only: only fit the cached measurements / only measure.
      max_noise_percent: rounds of whole networks disagreeing by more (MAPE) warn, micro-benchmarks
        at twice that; anchors drifting by more than twice the phase's limit warn.
      progress: called with progress lines (None: silent).

    Returns:
      The report (also written to `calibration_report.json`); `{"cache_path", "num_records"}`
      with `measure_only`.
    """
    output = output or os.path.join(output_dir, "cost_model.json")
    check_arguments(
        output,
        num_train,
        num_heldout,
        seed,
        statistic,
        l2,
        method,
        fit_only,
        measure_only,
        max_models,
        max_noise_percent,
    )
    prepare_model_dir(output_dir, argument="output_dir")
    space = search_spaces.get_search_space(settings.space)
    catalogue = layer_table.layer_catalogue(space, settings.image_size, settings.num_classes)
    plan = micro_plan(catalogue, unit, max_models, seed)
    train_rows, heldout_rows = calibration_architectures(space, num_train, num_heldout, seed, include_extremes)
    network_items = [
        Item("network", str(space.architecture(row)), space.architecture(row)) for row in train_rows + heldout_rows
    ]
    cache = protocol.MeasurementCache(os.path.join(output_dir, CACHE_NAME), dataclasses.asdict(settings))
    start = time.time()
    if not fit_only:
        device = device or devices.make_device(settings, model_dir or os.path.join(output_dir, "models"))
        uniform = train_rows[2:] if include_extremes else train_rows  # The extremes are atypical anchors.
        anchors = [str(space.architecture(row)) for row in uniform[: options.num_anchors]]
        _measure(settings, plan, network_items, anchors, cache, device, options, seed, progress)
    records = cache.read()
    if measure_only:
        return {"cache_path": cache.path, "num_records": len(records)}
    micro_keys, network_keys = set(plan.measured_keys + [OVERHEAD_KEY]), {item.key for item in network_items}
    micro_records = [r for r in records if r["phase"] == "micro" and r["key"] in micro_keys]
    network_records = [r for r in records if r["phase"] == "network" and r["key"] in network_keys]
    report = _fit_and_report(
        settings,
        space,
        catalogue,
        plan,
        micro_records,
        network_records,
        train_rows,
        heldout_rows,
        statistic,
        method,
        l2,
        seed,
        output,
        output_dir,
        max_noise_percent,
        options,
    )
    report["wall_seconds_this_call"] = time.time() - start
    write_atomic(report["report_path"], json.dumps(report, indent=2))
    for warning in report["warnings"]:
        logging.warning("%s", warning)
    return report


format_report = calibration_report.format_report
