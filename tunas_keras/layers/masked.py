"""Channel-masked layers of the weight-sharing supernet (paper §4.1, "channel masking").

Each layer holds ONE weight tensor of the largest width; a width choice keeps the first k
channels and zeroes the rest. Masks are call-time inputs: float32 vectors with one entry per
channel of the full-width tensor (1 = active, 0 = masked; fractional values weight channels).
A k-of-n mask, `[1]*k + [0]*(n-k)`, makes these layers compute exactly what a plain layer with
the first k channels computes, padded with zeros.

Two ways to run them, chosen by the caller (the supernet's execution mode):
- *masked* (static shapes, XLA/TPU friendly): inputs and outputs at the full width; the kernel
  is multiplied by the masks, so masked channels are exactly zero;
- *sliced* (compute follows the sampled width): inputs may carry fewer channels than the full
  width (the layer reads their count from the tensor), `output_channels` cuts the output; the
  kernel is sliced to the first channels (`kernel[..., :in, :out]`) and still multiplied by the
  sliced masks, so fractional masks give the same numbers as in the masked way.

Invariant used by the supernet: masked channels leave every layer at exactly zero.

    >>> conv = MaskedConv2D(filters=32, kernel_size=3)
    >>> outputs = conv(images, input_mask=tf.ones([3]), output_mask=channel_mask(16, 32))      # (.., 32)
    >>> outputs = conv(images, input_mask=tf.ones([3]), output_mask=mask, output_channels=16)  # (.., 16)

References: Bender et al., CVPR 2020, §4.1 (weight sharing with channel masking).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tunas_keras.layers.common import BATCH_NORM_EPSILON, DepthwiseHeNormal

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

    The supernet runs the largest branch of a kernel-size choice with weights merged from all
    branches this way (`supernet_blocks.Choice`); a substitute may have another (dynamic) shape.
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


def _as_mask(mask: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    # No stop_gradient here: the supernet's masks already carry none (one op fewer per use).
    if mask is None:
        return None
    return tf.cast(mask, tf.float32)


def _input_channels(inputs: tf.Tensor, full: int, given=None):
    """`given`, else the static channel count if it is the full width, else the dynamic one (sliced inputs)."""
    if given is not None:
        return given
    static = inputs.shape[-1]
    return full if static == full else tf.shape(inputs)[-1]


def _is_full(count, size) -> bool:
    return count is None or (isinstance(count, int) and count == size)


def _leading(tensor: Optional[tf.Tensor], count, axis: int = 0) -> Optional[tf.Tensor]:
    """The first `count` entries of `tensor` along `axis` (no op when `count` is the static size)."""
    if tensor is None or _is_full(count, tensor.shape[axis]):
        return tensor
    return _prefix(tensor, {axis: count})


def _prefix(tensor: tf.Tensor, counts: dict) -> tf.Tensor:
    """`tensor[..., :count, ...]` for every `{axis: count}`: one strided slice.

    Only the end is a packed tensor (begin and strides are constants), and the gradient is one
    `StridedSliceGrad`: few ops per use in the supernet's traced graph.
    """
    rank = tensor.shape.rank
    end = [counts.get(axis, 0) for axis in range(rank)]
    full = sum(1 << axis for axis in range(rank) if axis not in counts)  # end_mask: these axes whole
    return tf.strided_slice(tensor, [0] * rank, tf.stack(end), [1] * rank, end_mask=full)


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
      inputs: `(batch, height, width, c)` with `c` the full input width, or fewer channels
        (then the kernel's first `c` input channels are used).
      input_mask: optional `(in,)` float32 channel mask of the full input width.
      output_mask: optional `(filters,)` float32 channel mask of the outputs.
      input_channels: optional int / int32 scalar, the channels `inputs` has (read from its
        shape when not given).
      output_channels: optional int / int32 scalar: compute only the first output channels.

    Returns:
      `(batch, height / strides, width / strides, output_channels or filters)`; masked output
      channels are zero.
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

    def masked_kernel(self, input_mask=None, output_mask=None, input_channels=None, output_channels=None):
        """The kernel cut to `input_channels` / `output_channels` (if given) and multiplied by the masks."""
        kernel = read_weight(self.kernel)
        cuts = {
            axis: count
            for axis, count in ((2, input_channels), (3, output_channels))
            if not _is_full(count, kernel.shape[axis])
        }
        if cuts:  # one strided slice for both axes
            kernel = _prefix(kernel, cuts)
            input_mask, output_mask = _leading(input_mask, cuts.get(2)), _leading(output_mask, cuts.get(3))
        if input_mask is not None:
            kernel = kernel * _as_mask(input_mask)[:, None]
        if output_mask is not None:
            kernel = kernel * _as_mask(output_mask)
        return kernel

    def call(self, inputs, input_mask=None, output_mask=None, input_channels=None, output_channels=None):
        input_channels = _input_channels(inputs, self.kernel.shape[2], input_channels)
        kernel = self.masked_kernel(input_mask, output_mask, input_channels, output_channels)
        outputs = tf.nn.conv2d(inputs, kernel, self.strides, padding="SAME")
        if self.use_bias:
            bias, mask = read_weight(self.bias), output_mask
            if output_channels is not None:
                bias, mask = _leading(bias, output_channels), _leading(mask, output_channels)
            outputs = tf.nn.bias_add(outputs, bias if mask is None else bias * _as_mask(mask))
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
      inputs: `(batch, height, width, c)`, `c` the full width or fewer channels (sliced).
      channel_mask: optional `(channels,)` float32 mask of the full width.
      channels: optional int / int32 scalar, the channels `inputs` has (else read from its shape).

    Returns:
      `(batch, height / strides, width / strides, c)`; masked channels are zero.
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

    def masked_kernel(self, channel_mask=None, channels=None) -> tf.Tensor:
        kernel = read_weight(self.depthwise_kernel)
        if channels is not None:
            kernel = _leading(kernel, channels, axis=2)
            channel_mask = _leading(channel_mask, channels)
        if channel_mask is not None:
            kernel = kernel * _as_mask(channel_mask)[:, None]
        return kernel

    def call(self, inputs, channel_mask=None, channels=None):
        kernel = self.masked_kernel(channel_mask, _input_channels(inputs, self.depthwise_kernel.shape[2], channels))
        strides = (1, self.strides, self.strides, 1)
        return tf.nn.depthwise_conv2d(inputs, kernel, strides, padding="SAME")

    def active_l2(self, channel_mask=None) -> tf.Tensor:
        """Sum of squares of the masked depthwise kernel (see `MaskedConv2D.active_l2`)."""
        return tf.reduce_sum(tf.square(self.masked_kernel(channel_mask)))

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
    """Stateless batch normalisation: ALWAYS the current batch's statistics, no moving averages.

    The supernet never uses moving statistics (paper §4.1: the statistics of a shared network
    are meaningless across architectures); the reference's search uses a stateless masked
    batch norm too, also on validation batches. Masked channels are all zero on input; their
    batch variance is 0, so `x̂ = 0`, and `gamma` and `beta` are multiplied by the mask, which
    leaves them at exactly 0 (the same as multiplying the output by the mask, one pass cheaper).
    Per-channel statistics make the active channels' result independent of the masked ones.

    Args:
      epsilon: variance epsilon.

    Call arguments:
      inputs: `(batch, height, width, c)`, `c` the full width or fewer channels (sliced).
      channel_mask: optional `(channels,)` float32 mask of the full width.
      channels: optional int / int32 scalar, the channels `inputs` has (else read from its shape).

    Returns:
      The normalised tensor (same shape), zero on masked channels.
    """

    def __init__(self, epsilon=BATCH_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        if not epsilon > 0.0:
            raise ValueError(f"Invalid value for argument `epsilon`. Expected > 0. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = int(tf.TensorShape(input_shape)[-1])
        self.gamma = self.add_weight("gamma", shape=(channels,), initializer="ones", trainable=True)
        self.beta = self.add_weight("beta", shape=(channels,), initializer="zeros", trainable=True)
        super().build(input_shape)

    def call(self, inputs, channel_mask=None, channels=None):
        channels = _input_channels(inputs, self.gamma.shape[0], channels)
        gamma, beta = _leading(read_weight(self.gamma), channels), _leading(read_weight(self.beta), channels)
        if channel_mask is not None:
            mask = _as_mask(_leading(channel_mask, channels))
            gamma, beta = gamma * mask, beta * mask
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
        return outputs

    def sliced_weights(self, channels: int) -> list:
        """`[gamma, beta, moving_mean, moving_variance]` of a plain batch norm with `channels`.

        The supernet keeps no moving statistics: the child gets 0 / 1 (re-estimate them on
        data before evaluating it with `training=False`).
        """
        fresh = [np.zeros([channels], np.float32), np.ones([channels], np.float32)]
        return [self.gamma.numpy()[:channels], self.beta.numpy()[:channels], *fresh]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config
