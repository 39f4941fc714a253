"""`run_search`: the library entry point behind `tools/search.py`, and the next steps it prints."""

from __future__ import annotations

import os
from typing import Optional

from tunas_keras.training.config import SearchConfig
from tunas_keras.training.search_task import SearchTask
from tunas_keras.training.trainer import prepare_task, run_task

# The standalone recipe printed after a search on the embedded data: trains a found `proxyless`
# architecture near T0 to >= 0.8 valid top-1 in a few CPU minutes (docs/benchmarks.md, "The
# printed next steps"). Other datasets get the reference recipe (`TrainConfig`'s defaults).
EMBEDDED_TRAIN_RECIPE = {
    "batch_size": 32,
    "optimizer": "adam",
    "learning_rate": 0.016,
    "learning_rate_warmup_fraction": 0.1,
    "steps": 600,
}
PARITY_IMAGES = 256


def prepare_search(config: SearchConfig) -> SearchTask:
    """The validated task of `config` (see `trainer.prepare_task`: a UserInputError otherwise)."""
    return prepare_task(SearchTask, config)


def run_search(config: SearchConfig, strategy=None, stop_after=None, task: Optional[SearchTask] = None) -> dict:
    """Runs (or resumes) the search described by `config`; returns the `architecture.json` dict.

    `task`: the result of `prepare_search(config)` if the caller already validated.
    """
    return run_task(task or prepare_search(config), config, strategy, stop_after)


def train_recipe(config: SearchConfig) -> dict:
    """TrainConfig fields of the standalone recipe for a search's data: `EMBEDDED_TRAIN_RECIPE` on
    the embedded data, {} (the reference recipe, `TrainConfig`'s defaults) otherwise."""
    return dict(EMBEDDED_TRAIN_RECIPE) if config.dataset == "embedded" else {}


def next_step_commands(
    config: SearchConfig, num_classes: int, architecture_file: str = "architecture.json", standalone: str = "standalone"
) -> list:
    """The train → export → latency commands for a finished search, chained through their files.

    `architecture_file` / `standalone`: the architecture (in the model dir) and the training
    directory under it, e.g. "architecture_84ms.json" / "standalone_84ms" for one target of a
    multi-target search.

    1. `tools/train.py` trains the found architecture on the search's data and resolution
       (writes `<model_dir>/<standalone>/model.weights.h5`);
    2. `tools/export_tflite.py` exports *those* weights with the dataset's classes and the same
       resolution, int8 (post-training quantisation calibrated on the training split), and checks
       Keras-vs-TFLite parity on held-out images;
    3. `tools/benchmark_latency.py` times the `.tflite` on this host.
    """
    architecture = os.path.join(config.model_dir, architecture_file)
    train_dir = os.path.join(config.model_dir, standalone)
    tflite_path = os.path.join(train_dir, "model_int8.tflite")
    data = f"--dataset={config.dataset} --image_size={config.image_size}"
    if config.data_dir:
        data += f" --data_dir={config.data_dir}"
    recipe = "".join(f" --{name}={value}" for name, value in train_recipe(config).items())
    zero_init = " --zero_init_residual" if config.zero_init_residual else ""
    return [
        f"python tools/train.py --architecture={architecture} {data}{zero_init}{recipe} --model_dir={train_dir}",
        f"python tools/export_tflite.py --architecture={architecture} "
        f"--weights={os.path.join(train_dir, 'model.weights.h5')} --num_classes={num_classes} "
        f"--image_size={config.image_size} --dataset={config.dataset} --quantization=int8 "
        f"--num_parity_images={PARITY_IMAGES} --output={tflite_path}",
        f"python tools/benchmark_latency.py --model={tflite_path}",
    ]
