"""`run_training`: the library entry point behind `tools/train.py`."""

from __future__ import annotations

from typing import Optional

from tunas_keras.training.config import TrainConfig
from tunas_keras.training.standalone_task import StandaloneTask
from tunas_keras.training.trainer import prepare_task, run_task


def prepare_training(config: TrainConfig) -> StandaloneTask:
    """The validated task of `config` (architecture source, dataset, ranges; see `trainer.prepare_task`)."""
    return prepare_task(StandaloneTask, config)


def run_training(config: TrainConfig, strategy=None, stop_after=None, task: Optional[StandaloneTask] = None) -> dict:
    """Trains (or resumes) and evaluates one standalone architecture; returns `train_result.json`.

    `task`: the result of `prepare_training(config)` if the caller already validated.
    """
    return run_task(task or prepare_training(config), config, strategy, stop_after)
