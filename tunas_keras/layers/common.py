"""Small building pieces shared by the standalone models and the supernet.

Initialisers and normalisation follow the reference recipe: He-normal convolutions, depthwise
convolutions He-normal with fan-in = kh·kw (Keras would use kh·kw·channels), classifier
normal(0.01), batch norm momentum 0.99 / epsilon 1e-3.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-3
CLASSIFIER_STDDEV = 0.01
# Standard deviation of a unit normal truncated to [-2, 2], as in Keras' VarianceScaling.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


@keras.utils.register_keras_serializable(package="tunas_keras")
class DepthwiseHeNormal(keras.initializers.Initializer):
    """He-normal for depthwise kernels `(kh, kw, channels, multiplier)`: fan-in is kh·kw.

    Each output channel of a depthwise conv sees only kh·kw inputs, so the channel count must
    not enter the fan-in (Keras' `he_normal` would make the weights √channels too small).
    """

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None, **kwargs):
        fan_in = shape[0] * shape[1]
        stddev = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STDDEV
        return tf.random.truncated_normal(shape, 0.0, stddev, dtype=dtype or tf.float32, seed=self.seed)

    def get_config(self):
        return {"seed": self.seed}


def conv_initializer():
    return keras.initializers.HeNormal()


def classifier_initializer():
    return keras.initializers.RandomNormal(stddev=CLASSIFIER_STDDEV)


@keras.utils.register_keras_serializable(package="tunas_keras")
def hard_swish(inputs: tf.Tensor) -> tf.Tensor:
    """swish6(x) = x · relu6(x + 3) / 6 (MobileNetV3's hard swish)."""
    return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)


ACTIVATION_FUNCTIONS = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "swish6": hard_swish,
}


def activation_layer(name: str, layer_name: str) -> keras.layers.Layer:
    """A Keras layer applying one of `ACTIVATION_FUNCTIONS`."""
    if name == "relu":
        return keras.layers.ReLU(name=layer_name)
    if name == "relu6":
        return keras.layers.ReLU(6.0, name=layer_name)
    if name == "swish6":
        return keras.layers.Activation(hard_swish, name=layer_name)
    raise ValueError(
        f"Invalid value for argument `activation`. Expected one of {sorted(ACTIVATION_FUNCTIONS)}. Received: {name!r}"
    )


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, name=name)
