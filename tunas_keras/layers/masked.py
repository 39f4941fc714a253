"""Channel-masked layers of the weight-sharing supernet (paper §4.1, "channel masking").

Each layer holds ONE weight tensor of the largest width; a width choice keeps the first k
channels and zeroes the rest. Masks are call-time inputs: float32 vectors with one entry per
channel of the full-width tensor (1 = active, 0 = masked; fractional values weight channels).
A k-of-n mask, `[1]*k + [0]*(n-k)`, makes these layers compute exactly what a plain layer with
the first k channels computes, padded with zeros.

Invariant used by the supernet: every masked layer leaves masked channels at exactly zero, so
they contribute nothing downstream.

    >>> conv = MaskedConv2D(filters=32, kernel_size=3)
    >>> outputs = conv(images, input_mask=tf.ones([3]), output_mask=channel_mask(16, 32))

References: Bender et al., CVPR 2020, §4.1 (weight sharing with channel masking).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Optional

import tensorflow as tf
import tf_keras as keras

from tunas_keras.layers.common import BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM, DepthwiseHeNormal


_SUBSTITUTES = threading.local()


def read_weight(variable) -> tf.Tensor:
    """The value of `variable`, or the tensor substituted for it by `substitute_weights`."""
    substitutes = getattr(_SUBSTITUTES, "mapping", None)
    if substitutes:
        value = substitutes.get(variable.ref())
        if value is not None:
            return value
    return variable


@contextlib.contextmanager
def substitute_weights(mapping: dict):
    """Within the block, masked layers read `mapping[variable.ref()]` instead of the variable.

    `ChoiceBlock` uses it to rematerialise its branches from explicit weight tensors: a
    recomputation that re-read the variables inside a `tf.switch_case` gradient would capture
    eager variable handles, which TF's cond gradient cannot resolve.
    """
    previous = getattr(_SUBSTITUTES, "mapping", None)
    _SUBSTITUTES.mapping = {**(previous or {}), **mapping}
    try:
        yield
    finally:
        _SUBSTITUTES.mapping = previous


def channel_mask(active: int, total: int) -> tf.Tensor:
    """The k-of-n mask `[1]*active + [0]*(total-active)` (float32)."""
    return tf.cast(tf.range(total) < active, tf.float32)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid value for argument `{name}`. Expected a positive int. Received: {name}={value!r}")


def _indicator(mask: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    """1 where a channel is active at all (mask > 0), for the active-weight penalty."""
    if mask is None:
        return None
    return tf.cast(tf.stop_gradient(mask) > 0, tf.float32)


def _as_mask(mask: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    if mask is None:
        return None
    return tf.stop_gradient(tf.cast(mask, tf.float32))


@keras.utils.register_keras_serializable(package="tunas_keras")
class MaskedConv2D(keras.layers.Layer):
    """2-D convolution ("same" padding) whose input and output channels are masked.

    The kernel `(k, k, in, filters)` is multiplied by `input_mask[:, None]` and
    `output_mask[None, :]` (cheaper than masking activations); the bias by `output_mask`.

    Args:
      filters: the largest number of output channels.
      kernel_size: square kernel size.
      strides: square stride.
      use_bias: whether to add a (masked) bias.
      kernel_initializer: Keras initializer (name or object) for the kernel.

    Call arguments:
      inputs: `(batch, height, width, in)`.
      input_mask: optional `(in,)` float32 channel mask of the inputs.
      output_mask: optional `(filters,)` float32 channel mask of the outputs.

    Returns:
      `(batch, height / strides, width / strides, filters)`; masked output channels are zero.
    """

    def __init__(self, filters, kernel_size, strides=1, use_bias=False, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("filters", filters)
        _check_positive_int("kernel_size", kernel_size)
        _check_positive_int("strides", strides)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        input_channels = int(tf.TensorShape(input_shape)[-1])
        shape = (self.kernel_size, self.kernel_size, input_channels, self.filters)
        self.kernel = self.add_weight("kernel", shape=shape, initializer=self.kernel_initializer, trainable=True)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight("bias", shape=(self.filters,), initializer="zeros", trainable=True)
        super().build(input_shape)

    def masked_kernel(self, input_mask=None, output_mask=None) -> tf.Tensor:
        kernel = read_weight(self.kernel)
        if input_mask is not None:
            kernel = kernel * _as_mask(input_mask)[:, None]
        if output_mask is not None:
            kernel = kernel * _as_mask(output_mask)
        return kernel

    def call(self, inputs, input_mask=None, output_mask=None):
        outputs = tf.nn.conv2d(inputs, self.masked_kernel(input_mask, output_mask), self.strides, padding="SAME")
        if self.use_bias:
            bias = read_weight(self.bias)
            bias = bias if output_mask is None else bias * _as_mask(output_mask)
            outputs = tf.nn.bias_add(outputs, bias)
        return outputs

    def active_l2(self, input_mask=None, output_mask=None) -> tf.Tensor:
        """Sum of squares of the masked kernel (the reference's L2 of `kernel · mask`).

        With 0/1 masks: the squares of the kernel entries whose input and output channels are
        active. The bias is not regularised (as the reference).
        """
        return tf.reduce_sum(tf.square(self.masked_kernel(input_mask, output_mask)))

    def sliced_weights(self, input_channels: int, output_channels: int) -> list:
        """The weights of a plain `Conv2D` with the first `input_channels` / `output_channels`."""
        weights = [self.kernel.numpy()[:, :, :input_channels, :output_channels]]
        if self.use_bias:
            weights.append(self.bias.numpy()[:output_channels])
        return weights

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        spatial = [None if size is None else -(-size // self.strides) for size in shape[1:3]]
        return tf.TensorShape([shape[0], *spatial, self.filters])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.utils.register_keras_serializable(package="tunas_keras")
class MaskedDepthwiseConv2D(keras.layers.Layer):
    """Depthwise convolution ("same" padding, multiplier 1) with a channel mask.

    Args:
      kernel_size: square kernel size.
      strides: square stride.
      depthwise_initializer: initializer of the `(k, k, channels, 1)` kernel (default: He-normal
        with fan-in k·k, as the standalone model).

    Call arguments:
      inputs: `(batch, height, width, channels)`.
      channel_mask: optional `(channels,)` float32 mask.

    Returns:
      `(batch, height / strides, width / strides, channels)`; masked channels are zero.
    """

    def __init__(self, kernel_size, strides=1, depthwise_initializer=None, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("kernel_size", kernel_size)
        _check_positive_int("strides", strides)
        self.kernel_size = kernel_size
        self.strides = strides
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer or DepthwiseHeNormal())

    def build(self, input_shape):
        channels = int(tf.TensorShape(input_shape)[-1])
        self.depthwise_kernel = self.add_weight(
            "depthwise_kernel",
            shape=(self.kernel_size, self.kernel_size, channels, 1),
            initializer=self.depthwise_initializer,
            trainable=True,
        )
        super().build(input_shape)

    def call(self, inputs, channel_mask=None):
        kernel = read_weight(self.depthwise_kernel)
        if channel_mask is not None:
            kernel = kernel * _as_mask(channel_mask)[:, None]
        strides = (1, self.strides, self.strides, 1)
        return tf.nn.depthwise_conv2d(inputs, kernel, strides, padding="SAME")

    def active_l2(self, channel_mask=None) -> tf.Tensor:
        """Sum of squares of the masked depthwise kernel (see `MaskedConv2D.active_l2`)."""
        kernel = read_weight(self.depthwise_kernel)
        if channel_mask is not None:
            kernel = kernel * _as_mask(channel_mask)[:, None]
        return tf.reduce_sum(tf.square(kernel))

    def sliced_weights(self, channels: int) -> list:
        return [self.depthwise_kernel.numpy()[:, :, :channels, :]]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        spatial = [None if size is None else -(-size // self.strides) for size in shape[1:3]]
        return tf.TensorShape([shape[0], *spatial, shape[3]])

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            depthwise_initializer=keras.initializers.serialize(self.depthwise_initializer),
        )
        return config


@keras.utils.register_keras_serializable(package="tunas_keras")
class MaskedBatchNorm(keras.layers.Layer):
    """Batch normalisation that ALWAYS normalises with the current batch statistics.

    The supernet never uses moving statistics (paper §4.1: batch norm statistics of a shared
    network are meaningless across architectures), also on validation batches. Masked channels
    are all zero on input; their batch variance is 0, so they are normalised to 0 and the output
    is multiplied by the mask again (which removes `beta`). Per-channel statistics make the
    active channels' result independent of the masked ones.

    Moving statistics exist only so that an extracted child starts from something: with
    `training=True` they are updated (momentum as Keras) on the active channels (mask > 0);
    otherwise they are left alone. They never affect this layer's output.

    Args:
      momentum: moving-average momentum.
      epsilon: variance epsilon.

    Call arguments:
      inputs: `(batch, height, width, channels)`.
      channel_mask: optional `(channels,)` float32 mask.
      training: whether to update the moving statistics.

    Returns:
      The normalised tensor (same shape), zero on masked channels.
    """

    def __init__(self, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid value for argument `momentum`. Expected [0, 1). Received: momentum={momentum!r}")
        if not epsilon > 0.0:
            raise ValueError(f"Invalid value for argument `epsilon`. Expected > 0. Received: epsilon={epsilon!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = int(tf.TensorShape(input_shape)[-1])
        self.gamma = self.add_weight("gamma", shape=(channels,), initializer="ones", trainable=True)
        self.beta = self.add_weight("beta", shape=(channels,), initializer="zeros", trainable=True)
        moving = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.MEAN,
        )
        self.moving_mean = self.add_weight("moving_mean", shape=(channels,), initializer="zeros", **moving)
        self.moving_variance = self.add_weight("moving_variance", shape=(channels,), initializer="ones", **moving)
        super().build(input_shape)

    def call(self, inputs, channel_mask=None, training=None):
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, read_weight(self.gamma), read_weight(self.beta), epsilon=self.epsilon, is_training=True
        )
        if training:
            self._update_moving_statistics(mean, variance, channel_mask)
        if channel_mask is None:
            return outputs
        return outputs * _as_mask(channel_mask)

    def _update_moving_statistics(self, mean, variance, channel_mask):
        active = 1.0 if channel_mask is None else _indicator(channel_mask)
        rate = (1.0 - self.momentum) * active
        self.moving_mean.assign_sub((self.moving_mean - tf.stop_gradient(mean)) * rate)
        self.moving_variance.assign_sub((self.moving_variance - tf.stop_gradient(variance)) * rate)

    def sliced_weights(self, channels: int) -> list:
        variables = (self.gamma, self.beta, self.moving_mean, self.moving_variance)
        return [variable.numpy()[:channels] for variable in variables]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon)
        return config
