"""Quantisation-aware training (QAT) of standalone models with tensorflow-model-optimization.

`tfmot.quantization.keras.quantize_model` supports most of our layers out of the box (Conv2D,
DepthwiseConv2D, BatchNormalization — folded into the conv —, ReLU, Add, GlobalAveragePooling2D,
Flatten, Dense, the sigmoid `Activation` of squeeze-excite), but refuses two of them:

- `Activation(hard_swish)` (swish6 of MobileNetV3 and the `mobilenet_v3_like` space): the
  default registry only knows Keras' named activations;
- `Multiply` (the squeeze-excite gate): not in the default registry at all.

Both are elementwise ops that TFLite runs in int8 (HARD_SWISH, MUL), so they only need their
*output* range learned: `OutputQuantizeConfig` adds a moving-average 8-bit quantiser to the
output and no weight quantisers. `QAT_LAYER_CONFIGS` is the registry (predicate → config); a
new unsupported layer type gets an entry there.

    >>> qat_model = quantize_aware_model(model)              # same weights, fake-quant nodes added
    >>> qat_model = finetune_quantize_aware(model, dataset, steps=200)

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018 (the scheme TFLite int8 implements).
"""

from __future__ import annotations

from typing import Callable, Iterable

import tensorflow_model_optimization as tfmot
import tf_keras as keras

from tunas_keras.layers.common import hard_swish

_QUANTIZE = tfmot.quantization.keras


class OutputQuantizeConfig(_QUANTIZE.QuantizeConfig):
    """Quantises only a layer's output (8 bits, asymmetric, moving-average range)."""

    def get_weights_and_quantizers(self, layer):
        del layer
        return []

    def get_activations_and_quantizers(self, layer):
        del layer
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        del layer, quantize_weights

    def set_quantize_activations(self, layer, quantize_activations):
        del layer, quantize_activations

    def get_output_quantizers(self, layer):
        del layer
        return [
            _QUANTIZE.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        ]

    def get_config(self):
        return {}


def _is_custom_activation(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Activation) and layer.activation is hard_swish


def _is_multiply(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.Multiply)


# Layers the default 8-bit registry rejects → the QuantizeConfig we annotate them with.
QAT_LAYER_CONFIGS: tuple[tuple[Callable[[keras.layers.Layer], bool], Callable[[], object]], ...] = (
    (_is_custom_activation, OutputQuantizeConfig),
    (_is_multiply, OutputQuantizeConfig),
)


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    for matches, make_config in QAT_LAYER_CONFIGS:
        if matches(layer):
            return _QUANTIZE.quantize_annotate_layer(layer, quantize_config=make_config())
    return _QUANTIZE.quantize_annotate_layer(layer)


def quantize_scope():
    """The custom objects a QAT model of ours needs to be cloned or deserialised."""
    return _QUANTIZE.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig, "hard_swish": hard_swish})


def quantize_aware_model(model: keras.Model) -> keras.Model:
    """Wraps a standalone model for QAT (fake-quant nodes; BN folded into the convs).

    The returned model starts from `model`'s weights (the annotation keeps the layer objects
    and `quantize_apply` copies their weights).

    Args:
      model: a functional tf_keras model from `tunas_keras.build_model`.

    Returns:
      A tf_keras model with the same inputs and outputs, to be fine-tuned and then converted with
      `export_tflite(..., quantization="int8")`.
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_is_graph_network") or not model._is_graph_network:
        raise ValueError(
            "Invalid value for argument `model`. Expected a functional tf_keras model. "
            f"Received: {type(model).__name__}"
        )
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    with quantize_scope():
        return _QUANTIZE.quantize_apply(annotated)


def finetune_quantize_aware(
    model: keras.Model,
    dataset: Iterable,
    steps: int,
    learning_rate: float = 1e-4,
) -> keras.Model:
    """QAT-wraps `model` and fine-tunes it for `steps` batches of `(images, labels)`.

    Args:
      model: the standalone model (its weights are the starting point; it is not modified).
      dataset: a `tf.data.Dataset` (or iterable) of `(images, integer labels)` batches, with at
        least `steps` batches.
      steps: optimizer steps, >= 1 (the fake-quant ranges are learned during these steps; a
        model that was only wrapped has the initial ranges [-6, 6]).
      learning_rate: Adam learning rate (small: this is fine-tuning).

    Returns:
      The fine-tuned QAT model.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Invalid value for argument `steps`. Expected an int >= 1. Received: steps={steps!r}")
    qat_model = quantize_aware_model(model)
    qat_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    qat_model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return qat_model
