"""Parameter and multiply-accumulate (MAC) counts.

Two independent counters that tests hold against each other:
- `count_network` walks a resolved spec analytically (no Keras model is built), fast enough for
  the `macs` / `params` cost models to score thousands of sampled architectures;
- `count_model_macs` walks the layers of any built Keras model (ours or `keras.applications`).

MACs count convolutions and dense layers (the usual convention: batch norm, activations, adds
and the squeeze-and-excite multiply are not counted). Parameters count every variable,
including batch-norm moving statistics, as `keras.Model.count_params()` does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import tf_keras as keras

from tunas_keras import specs
from tunas_keras.models.standalone import resolve_network

BATCH_NORM_PARAMS_PER_CHANNEL = 4  # gamma, beta, moving mean, moving variance


@dataclasses.dataclass(frozen=True)
class Counts:
    """Totals of a network at one input resolution."""

    params: int
    macs: int


@dataclasses.dataclass
class _Walk:
    height: int
    width: int
    channels: int
    filters: int = 0
    params: int = 0
    macs: int = 0

    def conv(self, kernel_size: int, output_channels: int, strides: int = 1, bias: bool = False, bn: bool = True):
        self.height = math.ceil(self.height / strides)
        self.width = math.ceil(self.width / strides)
        weights = kernel_size * kernel_size * self.channels * output_channels
        self.params += weights + (output_channels if bias else 0)
        self.params += BATCH_NORM_PARAMS_PER_CHANNEL * output_channels if bn else 0
        self.macs += self.height * self.width * weights
        self.channels = output_channels

    def depthwise(self, kernel_size: int, strides: int = 1):
        self.height = math.ceil(self.height / strides)
        self.width = math.ceil(self.width / strides)
        weights = kernel_size * kernel_size * self.channels
        self.params += weights + BATCH_NORM_PARAMS_PER_CHANNEL * self.channels
        self.macs += self.height * self.width * weights


def _count_conv(spec: specs.Conv, walk: _Walk):
    walk.conv(spec.kernel_size, walk.filters, spec.strides, bias=not spec.use_batch_norm, bn=spec.use_batch_norm)


def _count_separable_conv(spec: specs.SeparableConv, walk: _Walk):
    walk.depthwise(spec.kernel_size, spec.strides)
    walk.conv(1, walk.filters)


def _count_bottleneck(spec: specs.Bottleneck, walk: _Walk):
    inner_filters = spec.inner_filters(walk.channels)
    walk.conv(1, inner_filters)
    walk.depthwise(spec.kernel_size, spec.strides)
    if spec.squeeze_excite:
        hidden = specs.squeeze_excite_filters(inner_filters)
        walk.params += inner_filters * hidden + hidden + hidden * inner_filters + inner_filters
        walk.macs += 2 * inner_filters * hidden
    walk.conv(1, walk.filters)


def _count_residual(spec: specs.Residual, walk: _Walk):
    if not isinstance(spec.layer, specs.Zero):
        count_layer(spec.layer, walk)


def _count_global_pool(spec: specs.GlobalPool, walk: _Walk):
    del spec
    walk.height = walk.width = 1


def _count_nothing(spec: Any, walk: _Walk):
    del spec, walk


LAYER_COUNTERS: dict[type, Callable] = {
    specs.Conv: _count_conv,
    specs.SeparableConv: _count_separable_conv,
    specs.Bottleneck: _count_bottleneck,
    specs.Residual: _count_residual,
    specs.GlobalPool: _count_global_pool,
    specs.Activation: _count_nothing,
    specs.Endpoint: _count_nothing,
}


def count_layer(spec: Any, walk: _Walk) -> None:
    counter = LAYER_COUNTERS.get(type(spec))
    if counter is None:
        raise ValueError(
            f"Invalid layer spec. Expected one of {[kind.__name__ for kind in LAYER_COUNTERS]}. "
            f"Received: {type(spec).__name__}"
        )
    counter(spec, walk)


def count_network(architecture, num_classes: int = 1001, input_shape=(224, 224, 3)) -> Counts:
    """Parameters and MACs of the standalone classifier of `architecture`, without building it.

    Args:
      architecture: anything `tunas_keras.build_model` accepts.
      num_classes: classifier outputs.
      input_shape: (height, width, channels).
    """
    network = resolve_network(architecture)
    walk = _Walk(height=input_shape[0], width=input_shape[1], channels=input_shape[2])
    for block in network.blocks:
        walk.filters = block.filters
        for layer in block.layers:
            count_layer(layer, walk)
    walk.params += walk.channels * num_classes + num_classes
    walk.macs += walk.channels * num_classes
    return Counts(params=walk.params, macs=walk.macs)


def count_model_macs(model: keras.Model) -> int:
    """MACs of a built Keras model: convolutions (incl. depthwise) and dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_model_macs(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            kernel_height, kernel_width = layer.kernel_size
            total += height * width * kernel_height * kernel_width * channels
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, output_channels = layer.output.shape
            kernel_height, kernel_width = layer.kernel_size
            input_channels = layer.input.shape[-1] // layer.groups
            total += height * width * kernel_height * kernel_width * input_channels * output_channels
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)
