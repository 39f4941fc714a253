"""`run_search`: the library entry point behind `tools/search.py`."""

from __future__ import annotations

from typing import Optional

from tunas_keras.training.config import SearchConfig
from tunas_keras.training.search_task import SearchTask
from tunas_keras.training.trainer import prepare_task, run_task


def prepare_search(config: SearchConfig) -> SearchTask:
    """The validated task of `config` (see `trainer.prepare_task`: a UserInputError otherwise)."""
    return prepare_task(SearchTask, config)


def run_search(config: SearchConfig, strategy=None, stop_after=None, task: Optional[SearchTask] = None) -> dict:
    """Runs (or resumes) the search described by `config`; returns the `architecture.json` dict.

    `task`: the result of `prepare_search(config)` if the caller already validated.
    """
    return run_task(task or prepare_search(config), config, strategy, stop_after)
