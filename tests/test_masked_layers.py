"""Masked layers and ChoiceBlock: numerics against plain layers, branch execution, config round trips."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tests.conftest import assert_close_to_scale
from tunas_keras.layers.choice import ChoiceBlock, ZeroBranch
from tunas_keras.layers.masked import MaskedBatchNorm, MaskedConv2D, MaskedDepthwiseConv2D, channel_mask, read_weight
from tunas_keras.masks import WarmupDropout, one_hot_masks
from tunas_keras.schema import OneOf, SearchSpace


def _images(channels=8, batch=4, size=9, seed=0):
    return tf.random.stateless_normal([batch, size, size, channels], seed=[seed, 1])


@pytest.mark.parametrize("strides, use_bias", [(1, False), (2, True)])
def test_masked_conv_equals_plain_conv_on_sliced_kernel(strides, use_bias):
    active_in, active_out = 5, 12
    layer = MaskedConv2D(16, 3, strides=strides, use_bias=use_bias)
    layer.build((None, None, None, 8))
    if use_bias:
        layer.bias.assign(tf.random.normal([16]))
    images = _images(8).numpy()
    images[..., active_in:] = 0.0  # Upstream masked channels are zero (the supernet invariant).
    outputs = layer(images, input_mask=channel_mask(active_in, 8), output_mask=channel_mask(active_out, 16))
    plain = keras.layers.Conv2D(active_out, 3, strides=strides, padding="same", use_bias=use_bias)
    plain.build((None, None, None, active_in))
    plain.set_weights(layer.sliced_weights(active_in, active_out))
    expected = plain(images[..., :active_in])
    assert_close_to_scale(outputs[..., :active_out], expected, 1e-5)  # relative to scale: tests/conftest.py
    np.testing.assert_array_equal(outputs[..., active_out:], 0.0)
    # Unmasked input channels beyond the mask are ignored too (the kernel is masked).
    noisy = _images(8, seed=3).numpy()
    clean = noisy.copy()
    clean[..., active_in:] = 0.0
    assert_close_to_scale(
        layer(noisy, input_mask=channel_mask(active_in, 8), output_mask=channel_mask(active_out, 16)),
        layer(clean, input_mask=channel_mask(active_in, 8), output_mask=channel_mask(active_out, 16)),
        1e-6,
    )


def test_masked_depthwise_equals_plain_depthwise():
    layer = MaskedDepthwiseConv2D(5, strides=2)
    layer.build((None, None, None, 8))
    images = _images(8)
    outputs = layer(images, channel_mask=channel_mask(6, 8))
    plain = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", use_bias=False)
    plain.build((None, None, None, 6))
    plain.set_weights(layer.sliced_weights(6))
    assert_close_to_scale(outputs[..., :6], plain(images[..., :6]), 1e-5)
    np.testing.assert_array_equal(outputs[..., 6:], 0.0)


def test_masked_batch_norm_uses_batch_statistics_and_zeroes_masked_channels():
    layer = MaskedBatchNorm()
    layer.build((None, None, None, 8))
    layer.beta.assign(tf.fill([8], 0.5))
    assert [w.name.split("/")[-1] for w in layer.weights] == ["gamma:0", "beta:0"]  # stateless
    images = _images(8).numpy() * 3.0 + 1.0
    images[..., 5:] = 0.0
    mask = channel_mask(5, 8)
    plain = keras.layers.BatchNormalization(epsilon=layer.epsilon)
    plain.build((None, None, None, 5))
    plain.set_weights(layer.sliced_weights(5))
    expected = plain(images[..., :5], training=True)
    outputs = layer(images, channel_mask=mask)
    assert_close_to_scale(outputs[..., :5], expected, 1e-5)
    np.testing.assert_array_equal(outputs[..., 5:], 0.0)  # beta is masked too
    # Sliced: the first 5 channels only, the same numbers.
    assert_close_to_scale(layer(images[..., :5], channel_mask=mask), expected, 1e-5)


def test_sliced_layers_equal_masked_layers():
    """Inputs with fewer channels and `output_channels`: the first channels of the masked result."""
    conv = MaskedConv2D(16, 3, strides=2, use_bias=True)
    conv.build((None, None, None, 8))
    conv.bias.assign(tf.random.normal([16], seed=4))
    depthwise = MaskedDepthwiseConv2D(5)
    depthwise.build((None, None, None, 16))
    images = _images(8).numpy()
    images[..., 5:] = 0.0
    masks = channel_mask(5, 8), channel_mask(12, 16) * 0.5  # fractional output mask
    masked = depthwise(conv(images, input_mask=masks[0], output_mask=masks[1]), channel_mask=masks[1])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None]), tf.TensorSpec([], tf.int32)])
    def sliced(inputs, count):  # dynamic channel counts, as the supernet's "slice" execution
        outputs = conv(inputs, input_mask=masks[0], output_mask=masks[1], output_channels=count)
        return depthwise(outputs, channel_mask=masks[1])

    result = sliced(images[..., :5], tf.constant(12))
    assert result.shape[-1] == 12
    assert_close_to_scale(result, masked[..., :12], 1e-5)
    np.testing.assert_array_equal(masked[..., 12:], 0.0)


def test_active_l2_counts_only_active_weights():
    layer = MaskedConv2D(16, 3)
    layer.build((None, None, None, 8))
    kernel = layer.kernel.numpy()
    value = layer.active_l2(channel_mask(5, 8), channel_mask(12, 16))
    np.testing.assert_allclose(value, np.sum(kernel[:, :, :5, :12] ** 2), rtol=1e-5)


class _Counting(keras.layers.Layer):
    """A branch that multiplies by a weight and counts its executions."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def build(self, input_shape):
        self.weight = self.add_weight("weight", shape=(), initializer=keras.initializers.Constant(self.scale))
        self.count = self.add_weight("count", shape=(), initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training:
            self.count.assign_add(1.0)
        return inputs * read_weight(self.weight)


def _counting_block(rematerialize=False):
    block = ChoiceBlock([_Counting(1.0), _Counting(2.0), _Counting(3.0)], rematerialize=rematerialize)
    block.build((None, 4))
    return block


def test_selection_weighted_sum_without_control_flow():
    block = _counting_block()
    inputs = tf.ones([2, 4])

    @tf.function
    def step(selection):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(block(inputs, selection=selection, training=True))
        return loss, tape.gradient(loss, [branch.weight for branch in block.branches])

    loss, grads = step(tf.constant([0.0, 1.0, 0.0]))
    assert float(loss) == pytest.approx(16.0)
    assert [float(g) for g in grads] == [0.0, 8.0, 0.0]  # unselected branches get exactly no gradient
    loss, grads = step(tf.constant([0.5, 0.25, 0.25]))  # same trace: the weighted sum (op warmup)
    assert float(loss) == pytest.approx(8.0 * (0.5 * 1 + 0.25 * 2 + 0.25 * 3))
    np.testing.assert_allclose([float(g) for g in grads], [4.0, 2.0, 2.0])
    graph = step.get_concrete_function(tf.TensorSpec([3])).graph
    control_flow = {"If", "StatelessIf", "Case", "StatelessCase", "While", "StatelessWhile"}
    assert not [op.type for op in graph.get_operations() if op.type in control_flow]


def test_rematerialized_weighted_sum_has_equal_gradients():
    inputs = tf.random.normal([2, 4], seed=1)
    selection = tf.constant([0.5, 0.25, 0.25])
    results = []
    for rematerialize in (True, False):
        block = _counting_block(rematerialize)

        @tf.function
        def step(block=block):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = block(inputs, selection=selection)
                loss = tf.reduce_sum(tf.square(outputs))
            return outputs, tape.gradient(loss, [inputs] + [branch.weight for branch in block.branches])

        results.append(step())
    (outputs, grads), (reference, reference_grads) = results
    np.testing.assert_allclose(outputs, inputs * (0.5 * 1 + 0.25 * 2 + 0.25 * 3), rtol=1e-6)
    np.testing.assert_allclose(outputs, reference, rtol=1e-6)
    for grad, expected in zip(grads, reference_grads):
        np.testing.assert_allclose(grad, expected, rtol=1e-5)


@pytest.mark.parametrize("static_shapes", [True, False])
def test_one_hot_kernel_variants_run_one_merged_branch(static_shapes):
    """Kernel sizes 3/5/7: the largest branch with merged weights equals the selected branch."""
    block = ChoiceBlock([MaskedDepthwiseConv2D(size, strides=2) for size in (3, 5, 7)])
    block.build((None, None, None, 6))
    images = _images(6, size=10)
    step = tf.function(
        lambda selection: block(images, selection=selection, one_hot=True, static_shapes=static_shapes),
        input_signature=[tf.TensorSpec([3])],
    )
    for index in range(3):
        selection = tf.one_hot(index, 3)
        expected = block.branches[index](images)
        assert_close_to_scale(step(selection), expected, 1e-5)
        assert_close_to_scale(block(images, selection=selection), expected, 1e-5)
    graph = step.get_concrete_function().graph
    assert sum(op.type == "DepthwiseConv2dNative" for op in graph.get_operations()) == 1


def test_choice_block_with_warmup_dropout_masks():
    space = SearchSpace("toy", (OneOf((1, 2, 3), "kernel_size"), OneOf((8, 16), "filters")), 1.0, "toy")
    warm = WarmupDropout(space)(one_hot_masks(space, [1, 0]), 1.0, 1.0, seed=tf.constant([0, 0]))
    np.testing.assert_allclose(warm[1], [0.0, 1.0])  # Filter decision -> largest choice.
    block = _counting_block()
    outputs = block(tf.ones([1, 4]), selection=warm[0])  # Op decision -> all ops averaged.
    np.testing.assert_allclose(outputs, np.full([1, 4], 2.0), rtol=1e-6)


def test_choice_block_errors():
    with pytest.raises(ValueError, match="Invalid value for argument `branches`"):
        ChoiceBlock([])
    block = _counting_block()
    with pytest.raises(ValueError, match="Expected shape \\(3,\\)"):
        block(tf.ones([1, 4]), selection=tf.constant([1.0, 0.0]))


def test_constructor_validation():
    with pytest.raises(ValueError, match="Invalid value for argument `filters`"):
        MaskedConv2D(0, 3)
    with pytest.raises(ValueError, match="Invalid value for argument `kernel_size`"):
        MaskedDepthwiseConv2D(2.5)
    with pytest.raises(ValueError, match="Invalid value for argument `epsilon`"):
        MaskedBatchNorm(epsilon=0.0)


def test_op_or_zero_block_scales_the_op_and_skips_it_when_zero():
    block = ChoiceBlock([_Counting(2.0), ZeroBranch()])
    block.build((None, 4))
    inputs = tf.ones([1, 4])
    np.testing.assert_allclose(block(inputs, selection=tf.constant([0.5, 0.5]), training=True), np.full([1, 4], 1.0))
    np.testing.assert_allclose(block(inputs, selection=tf.constant([0.0, 1.0]), training=True), np.zeros([1, 4]))
    np.testing.assert_allclose(block(inputs, selection=tf.constant([1.0, 0.0]), training=True), np.full([1, 4], 2.0))
    # No control flow: the op runs whatever its weight (the supernet makes that cheap by width).
    assert float(block.branches[0].count) == 3.0
