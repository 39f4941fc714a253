"""The shared checks of the layer and model tests (in the spirit of Keras' `run_layer_test`).

    >>> run_layer_test(lambda: MaskedConv2D(16, 3), input_shape=(2, 9, 9, 8))

`run_layer_test` holds a layer to the Keras contract (style.md rule 5); `check_gradients_reach`
asserts that a loss reaches every trainable weight of a layer or model (a weight that gets no
gradient is dead code, or a bug in a mask).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

REGISTERED_PACKAGE = "tunas_keras"


def check_gradients_reach(layer_or_model, inputs, call_kwargs: Optional[dict] = None, seed: int = 0) -> None:
    """Every trainable weight gets a non-zero gradient from a random projection of the outputs.

    The projection is random (not a plain sum) because a sum of batch-normalised outputs has
    zero gradient with respect to gamma.
    """
    call_kwargs = call_kwargs or {}
    with tf.GradientTape() as tape:
        outputs = layer_or_model(inputs, **call_kwargs)
        projection = tf.random.stateless_normal(tf.shape(outputs), seed=[seed, 7])
        loss = tf.reduce_sum(outputs * projection)
    weights = layer_or_model.trainable_weights
    gradients = tape.gradient(loss, weights)
    dead = [
        weight.name
        for weight, gradient in zip(weights, gradients)
        if gradient is None or not np.any(tf.convert_to_tensor(gradient).numpy())
    ]
    assert not dead, f"no gradient reaches {dead}"


def run_layer_test(
    make_layer: Callable[[], keras.layers.Layer],
    input_shape: tuple,
    call_kwargs: Optional[dict] = None,
    seed: int = 0,
) -> keras.layers.Layer:
    """Checks a layer against the Keras contract; returns the built layer.

    - `get_config()` round-trips: `from_config(config).get_config() == config`;
    - the layer is registered for serialisation (`"tunas_keras>ClassName"`) and
      `keras.layers.deserialize(keras.layers.serialize(layer))` rebuilds it by that name;
    - every weight exists after `build()` (calling the layer creates none);
    - the output shape equals `compute_output_shape(input_shape)`;
    - a gradient reaches every trainable weight.

    Args:
      make_layer: builds a fresh, unbuilt layer.
      input_shape: full input shape, batch included.
      call_kwargs: extra call arguments (masks, selections, `training`).
      seed: seed of the random inputs.
    """
    call_kwargs = call_kwargs or {}
    layer = make_layer()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config, "get_config() does not round-trip"

    registered = keras.utils.get_registered_name(type(layer))
    assert registered == f"{REGISTERED_PACKAGE}>{type(layer).__name__}", f"not registered: {registered}"
    serialized = keras.layers.serialize(layer)
    rebuilt = keras.layers.deserialize(serialized)  # no custom_objects: found by its registered name
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == config

    layer.build(input_shape)
    built = [weight.name for weight in layer.weights]
    inputs = tf.random.stateless_normal(input_shape, seed=[seed, 1])
    outputs = layer(inputs, **call_kwargs)
    assert [weight.name for weight in layer.weights] == built, "call() created weights that build() did not"

    expected = tf.TensorShape(layer.compute_output_shape(tf.TensorShape(input_shape)))
    assert outputs.shape == expected, f"output shape {outputs.shape} != compute_output_shape {expected}"
    check_gradients_reach(layer, inputs, call_kwargs, seed)
    return layer
