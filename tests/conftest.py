"""Shared test helpers (one harness for the whole suite)."""

from __future__ import annotations

import json
import os
import pathlib
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tunas_keras import registry  # noqa: E402

DATA_DIR = pathlib.Path(__file__).parent / "data"
# Tests iterate the registries, so a new space or reference model is tested without listing it here.
SPACE_NAMES = registry.search_space_names()
REFERENCE_NAMES = registry.reference_names()


def load_golden_vectors() -> list[dict]:
    """Golden Pixel-1 vectors (copied from shared/data/cost_model_golden.jsonl)."""
    with open(DATA_DIR / "cost_model_golden.jsonl") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def random_indices(space, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(count) for count in space.num_choices]


@pytest.fixture(params=SPACE_NAMES)
def space(request):
    return registry.get_search_space(request.param)
