"""Per-decision masks and op / filter warmup."""

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tunas_keras.masks import WarmupDropout, is_filter_decision, one_hot_masks, uniform_masks


def test_one_hot_masks_of_an_architecture():
    space = tunas_keras.get_search_space("proxyless")
    arch = tunas_keras.reference_architecture("proxylessnas_mobile")
    masks = one_hot_masks(space, arch)
    assert len(masks) == 73
    assert [int(np.argmax(mask)) for mask in masks] == list(arch.indices)
    assert all(float(tf.reduce_sum(mask)) == 1.0 for mask in masks)


def test_warmup_with_probability_one_and_zero(space):
    masks = one_hot_masks(space, [0] * space.num_decisions)
    warmup = WarmupDropout(space)
    full = warmup(masks, 1.0, 1.0, seed=tf.constant([1, 2]))
    for decision, mask, expected in zip(space.decisions, full, uniform_masks(space)):
        np.testing.assert_allclose(mask, expected)
        if is_filter_decision(decision):
            assert mask[-1] == 1.0
        else:
            np.testing.assert_allclose(mask, np.full(decision.num_choices, 1 / decision.num_choices))
    none = warmup(masks, 0.0, 0.0, seed=tf.constant([1, 2]))
    for mask, original in zip(none, masks):
        np.testing.assert_array_equal(mask, original)


def test_warmup_rate_matches_probability():
    space = tunas_keras.get_search_space("mobilenet_v3_like")
    masks = one_hot_masks(space, [0] * space.num_decisions)
    warmup = WarmupDropout(space)
    replaced = 0
    ops = [position for position, decision in enumerate(space.decisions) if not is_filter_decision(decision)]
    for step in range(40):
        out = warmup(masks, 0.3, 0.0, seed=tf.constant([step, 0]))
        replaced += sum(int(float(out[position][0]) != 1.0) for position in ops)
    assert abs(replaced / (40 * len(ops)) - 0.3) < 0.05


def test_warmup_rejects_wrong_number_of_masks():
    space = tunas_keras.get_search_space("proxyless")
    with pytest.raises(ValueError, match="Expected 73 masks. Received: 2"):
        WarmupDropout(space)([tf.ones([1])] * 2, 0.5, 0.5, seed=tf.constant([0, 0]))
