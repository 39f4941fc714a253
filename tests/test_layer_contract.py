"""Every public layer of `tunas_keras.layers` against the Keras contract (`tests.harness.run_layer_test`).

A new layer gets a row in `LAYER_CASES`; `test_every_public_layer_has_a_case` fails until it has one.
"""

import importlib
import inspect
import pkgutil
from typing import Callable, NamedTuple

import numpy as np
import pytest
import tf_keras as keras

import tunas_keras.layers
from tests.harness import run_layer_test
from tunas_keras.layers.choice import ChoiceBlock, ZeroBranch
from tunas_keras.layers.masked import MaskedBatchNorm, MaskedConv2D, MaskedDepthwiseConv2D


class LayerCase(NamedTuple):
    layer: type
    make: Callable[[], keras.layers.Layer]
    input_shape: tuple
    call_kwargs: dict = {}


def _full(channels: int) -> np.ndarray:
    return np.ones([channels], np.float32)


LAYER_CASES = [
    LayerCase(MaskedConv2D, lambda: MaskedConv2D(16, 3, strides=2, use_bias=True), (2, 9, 9, 8)),
    LayerCase(
        MaskedConv2D,
        lambda: MaskedConv2D(16, 1),
        (2, 5, 5, 8),
        {"input_mask": _full(8), "output_mask": _full(16)},
    ),
    LayerCase(
        MaskedDepthwiseConv2D, lambda: MaskedDepthwiseConv2D(5, strides=2), (2, 9, 9, 8), {"channel_mask": _full(8)}
    ),
    LayerCase(MaskedBatchNorm, MaskedBatchNorm, (4, 5, 5, 8), {"channel_mask": _full(8), "training": True}),
    # A fractional selection (op warmup) runs every branch, so every branch's weights get a gradient.
    LayerCase(
        ChoiceBlock,
        lambda: ChoiceBlock([MaskedDepthwiseConv2D(3), MaskedDepthwiseConv2D(5), ZeroBranch()]),
        (2, 9, 9, 8),
        {"selection": np.array([0.5, 0.25, 0.25], np.float32)},
    ),
    LayerCase(
        ChoiceBlock,
        lambda: ChoiceBlock([MaskedConv2D(8, 3), ZeroBranch()], rematerialize=False),
        (2, 7, 7, 8),
        {"selection": np.array([1.0, 0.0], np.float32), "context": None},
    ),
    LayerCase(ZeroBranch, ZeroBranch, (2, 5, 5, 3)),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda case: case.layer.__name__)
def test_layer_keeps_the_keras_contract(case):
    layer = run_layer_test(case.make, case.input_shape, case.call_kwargs)
    assert isinstance(layer, case.layer)


def _public_layers() -> set:
    found = set()
    for module_info in pkgutil.iter_modules(tunas_keras.layers.__path__):
        module = importlib.import_module(f"tunas_keras.layers.{module_info.name}")
        for name, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, keras.layers.Layer)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.add(value)
    return found


def test_every_public_layer_has_a_case():
    assert _public_layers() == {case.layer for case in LAYER_CASES}
