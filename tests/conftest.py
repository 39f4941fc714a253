"""Shared test helpers (one harness for the whole suite)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tunas_keras import registry  # noqa: E402

DATA_DIR = pathlib.Path(__file__).parent / "data"
REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
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


def tiny_search_space():
    """A three-block space that traces in seconds: stem, a block of one fixed and one skippable
    bottleneck (kernel {3, 5}, expansion {1, 2}, width {8, 16}), head. 7 decisions, nested ones included."""
    from tunas_keras.schema import OneOf, SearchSpace
    from tunas_keras.specs import Activation, Block, Bottleneck, Conv, GlobalPool, Network, fixed_op, skippable

    def bneck(strides):
        kernel_size, expansion = OneOf((3, 5), "kernel_size"), OneOf((1, 2), "expansion")
        return Bottleneck(kernel_size=kernel_size, expansion=expansion, strides=strides)

    network = Network(
        (
            Block((Conv(kernel_size=3, strides=2), Activation("relu")), OneOf((8,), "filters")),
            Block((fixed_op(bneck(2)), skippable(bneck(1))), OneOf((8, 16), "filters")),
            Block((Conv(kernel_size=1), Activation("relu"), GlobalPool()), OneOf((16,), "filters")),
        )
    )
    return SearchSpace("tiny", network, target_latency=1.0, reference_name="tiny")


def run_script_for_result(script: str, timeout: int) -> dict:
    """Runs `script` in a fresh Python (free to configure devices before TensorFlow starts) and
    returns the JSON it printed on a line starting with "RESULT"."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=timeout
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def small_architecture():
    """`mobilenet_v3_like` with every optional layer skipped and middle widths: quick to trace."""
    from tunas_keras.cost_models.sampling import extreme_indices

    space = registry.get_search_space("mobilenet_v3_like")
    indices = list(extreme_indices(space)[0])
    for position, decision in enumerate(space.decisions):
        if decision.tag == "filters":
            indices[position] = decision.num_choices // 2
    return space.architecture(indices)
