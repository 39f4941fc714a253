"""`run_training`: the library entry point behind `tools/train.py`."""

from __future__ import annotations

import dataclasses

from tunas_keras.training.config import TrainConfig
from tunas_keras.training.standalone_task import StandaloneTask
from tunas_keras.training.trainer import Trainer, create_strategy


def run_training(config: TrainConfig, strategy=None, stop_after=None) -> dict:
    """Trains (or resumes) and evaluates one standalone architecture; returns `train_result.json`."""
    task = StandaloneTask(config)
    trainer = Trainer(
        task,
        model_dir=config.model_dir,
        config=dataclasses.asdict(config),
        strategy=strategy or create_strategy(config.strategy),
        checkpoint_every=config.checkpoint_every,
        summary_every=config.summary_every,
        progress_bar=config.progress_bar,
        stop_after=stop_after,
    )
    return trainer.run()
