"""`run_training`: the library entry point behind `tools/train.py`."""

from __future__ import annotations

from tunas_keras.training.config import TrainConfig
from tunas_keras.training.standalone_task import StandaloneTask
from tunas_keras.training.trainer import run_task


def run_training(config: TrainConfig, strategy=None, stop_after=None) -> dict:
    """Trains (or resumes) and evaluates one standalone architecture; returns `train_result.json`."""
    return run_task(StandaloneTask(config), config, strategy, stop_after)
