"""Shared test helpers (one harness for the whole suite)."""

from __future__ import annotations

import json
import os
import pathlib
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

DATA_DIR = pathlib.Path(__file__).parent / "data"
SPACE_NAMES = ("proxyless", "proxyless_enlarged", "mobilenet_v3_like")


def load_golden_vectors() -> list[dict]:
    """Golden Pixel-1 vectors (copied from shared/data/cost_model_golden.jsonl)."""
    with open(DATA_DIR / "cost_model_golden.jsonl") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def random_indices(space, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(count) for count in space.num_choices]


@pytest.fixture(params=SPACE_NAMES)
def space(request):
    import tunas_keras

    return tunas_keras.get_search_space(request.param)


def assert_close_to_scale(actual, expected, tolerance: float, message: str = "") -> None:
    """max |actual - expected| <= tolerance * max(1, max |expected|).

    For float32 outputs of two different computations (Keras vs TFLite, a supernet vs its
    child, masked vs plain layers): other CPUs run other kernels (oneDNN vs Eigen, AVX2 vs
    AVX-512 blocking), which round differently, by an amount proportional to the values' scale.
    An absolute tolerance tuned to one machine's logits fails on another's, or when the values
    are larger; this one scales with them (and stays absolute for values below 1).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    difference = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    details = f"max |diff| {difference:.3g} > {tolerance:g} x scale {scale:.3g}. {message}"
    assert difference <= tolerance * scale, details


def without_key(value, key: str):
    """`value` (nested dicts / lists) without `key` anywhere, e.g. the model_dir of stored configs."""
    if isinstance(value, dict):
        return {name: without_key(item, key) for name, item in value.items() if name != key}
    if isinstance(value, list):
        return [without_key(item, key) for item in value]
    return value
