"""`run_search`: the library entry point behind `tools/search.py`."""

from __future__ import annotations

from tunas_keras.training.config import SearchConfig
from tunas_keras.training.search_task import SearchTask
from tunas_keras.training.trainer import run_task


def run_search(config: SearchConfig, strategy=None, stop_after=None) -> dict:
    """Runs (or resumes) the search described by `config`; returns the `architecture.json` dict."""
    return run_task(SearchTask(config), config, strategy, stop_after)
