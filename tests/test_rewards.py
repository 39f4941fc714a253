"""Rewards: values, validation, registry, tensors in / tensors out."""

import numpy as np
import pytest
import tensorflow as tf

from tunas_keras.search import REWARDS, Reward, get_reward


def test_registry():
    assert sorted(REWARDS) == ["abs", "mnas", "mnas_hard"]


def test_values():
    quality = np.array([0.7, 0.7, 0.7], np.float32)
    cost = np.array([42.0, 84.0, 168.0], np.float32)
    np.testing.assert_allclose(Reward("abs", 84.0, -0.1)(quality, cost), [0.65, 0.7, 0.6], rtol=1e-6)
    expected = 0.7 * np.array([0.5, 1, 2]) ** -0.07
    np.testing.assert_allclose(Reward("mnas", 84.0, -0.07)(quality, cost), expected, rtol=1e-6)
    np.testing.assert_allclose(Reward("mnas_hard", 84.0, -0.07)(quality, cost), [0.7, 0.7, 0.7 * 2**-0.07], rtol=1e-6)


def test_default_is_abs_and_works_in_tf_function():
    reward = get_reward(target=57.0)
    assert reward.name == "abs" and reward.beta == -0.1

    @tf.function
    def compute(quality, cost):
        return reward(quality, cost)

    result = compute(tf.constant([0.8]), tf.constant([60.0]))
    assert result.dtype == tf.float32
    np.testing.assert_allclose(result, [0.8 - 0.1 * 3 / 57], rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_rejects_non_negative_beta(beta):
    message = f"Invalid value for argument `beta`. Expected a negative number. Received: beta={beta}"
    with pytest.raises(ValueError, match=message):
        Reward("abs", 84.0, beta)


def test_rejects_bad_target_and_name():
    with pytest.raises(ValueError, match="Expected a positive cost target. Received: target=0"):
        Reward("abs", 0, -0.1)
    with pytest.raises(ValueError, match=r"Expected one of \['abs', 'mnas', 'mnas_hard'\]. Received: name='mnas_soft'"):
        get_reward("mnas_soft")
