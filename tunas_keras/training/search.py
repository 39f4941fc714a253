"""`run_search`: the library entry point behind `tools/search.py`."""

from __future__ import annotations

import dataclasses

from tunas_keras.training.config import SearchConfig
from tunas_keras.training.search_task import SearchTask
from tunas_keras.training.trainer import Trainer, create_strategy


def run_search(config: SearchConfig, strategy=None, stop_after=None) -> dict:
    """Runs (or resumes) the search described by `config`; returns the `architecture.json` dict."""
    task = SearchTask(config)
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
