"""The paper's random-search baseline (§3.2): rejection-sample N architectures whose cost lies
within T0 ± tolerance, train each with `--protocol=valid`, keep the best on validation.

Resumable: the sampled architectures are written first (`samples.json`) and reused; a model
with a `train_result.json` is not trained again, and a half-trained one resumes from its own
checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Optional

import search_spaces
from tunas_keras.cost_models import get_cost_model
from tunas_keras.cost_models.sampling import sample_architectures
from tunas_keras.errors import user_input
from tunas_keras.training import train as train_lib
from tunas_keras.training.config import RunConfig, TrainConfig, validate_config
from tunas_keras.training.trainer import check_config_compatible, prepare_model_dir, write_atomic


@dataclasses.dataclass
class RandomSearchConfig(RunConfig):
    """Sampling window; the `RunConfig` fields configure the training of every sampled model."""

    space: str = "proxyless"
    target_latency: Optional[float] = None  # None: the space's default (84 / 57 ms)
    tolerance: float = 1.0  # ms (paper: T0 ± 1 ms)
    cost_model: str = "pixel1"
    num_samples: int = 10
    model_dir: str = "runs/random_search"
    eval_batches: Optional[int] = None
    progress_bar: bool = False


def _train_config(config: RandomSearchConfig, indices: str, model_dir: str) -> TrainConfig:
    shared = {field.name for field in dataclasses.fields(TrainConfig)} & set(dataclasses.asdict(config))
    values = {name: getattr(config, name) for name in shared if name != "model_dir"}
    return TrainConfig(**values, indices=indices, protocol="valid", model_dir=model_dir)


def _load_or_sample(config: RandomSearchConfig, space, target: float) -> list:
    path = os.path.join(config.model_dir, "samples.json")
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    cost_model = get_cost_model(config.cost_model, space)
    samples = sample_architectures(
        space,
        cost_model,
        num_samples=config.num_samples,
        min_cost=target - config.tolerance,
        max_cost=target + config.tolerance,
        seed=config.seed,
    )
    write_atomic(path, json.dumps(samples, indent=2))
    return samples


def run_random_search(config: RandomSearchConfig, train_fn=None) -> dict:
    """Runs (or resumes) a random search; returns the summary (also written as JSON and CSV)."""
    train_fn = train_fn or train_lib.run_training
    with user_input():  # everything the user gave, before anything is sampled or trained
        validate_config(config)
        space = search_spaces.get_search_space(config.space)
        target = config.target_latency or space.target_latency
        get_cost_model(config.cost_model, space)
        prepare_model_dir(config.model_dir)
        check_config_compatible(config.model_dir, dataclasses.asdict(config), write=False)
    check_config_compatible(config.model_dir, dataclasses.asdict(config))
    samples = _load_or_sample(config, space, target)
    rows = []
    for number, sample in enumerate(samples):
        model_dir = os.path.join(config.model_dir, f"model_{number:03d}")
        result_path = os.path.join(model_dir, "train_result.json")
        if os.path.exists(result_path):
            with open(result_path) as handle:
                result = json.load(handle)
        else:
            indices = ":".join(map(str, sample["indices"]))
            result = train_fn(_train_config(config, indices, model_dir))
        rows.append(
            {"model": number, "indices": sample["indices"], "cost": sample["cost"], "valid_top1": result["top1"]}
        )
    best = max(rows, key=lambda row: row["valid_top1"])
    summary = {
        "space": space.name,
        "target_latency": target,
        "tolerance": config.tolerance,
        "models": rows,
        "best": best,
    }
    write_atomic(os.path.join(config.model_dir, "summary.json"), json.dumps(summary, indent=2))
    write_atomic(os.path.join(config.model_dir, "summary.csv"), _csv(rows))
    architecture = space.architecture(best["indices"]).to_dict()
    best_json = {
        **architecture,
        "cost": best["cost"],
        "cost_model": config.cost_model,
        "valid_top1": best["valid_top1"],
    }
    write_atomic(os.path.join(config.model_dir, "best_architecture.json"), json.dumps(best_json, indent=2))
    return summary


def _csv(rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "cost", "valid_top1", "indices"])
    for row in rows:
        writer.writerow(
            [row["model"], f"{row['cost']:.4f}", f"{row['valid_top1']:.6f}", ":".join(map(str, row["indices"]))]
        )
    return buffer.getvalue()
