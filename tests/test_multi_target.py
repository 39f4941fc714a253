"""Several latency targets in one search: parsing, per-target sampling / rewards / updates, outputs.

The searches run on the tiny test space (seconds each); one target must stay the single-target
search bit for bit.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_search_space
from tunas_keras.search.multi_target import TargetPolicies, parse_targets, target_label
from tunas_keras.search.rewards import Reward

TARGETS = [5.0, 8.0, 11.0]  # M MACs of the tiny space (its children cost 4.4 .. 12.9)


def test_targets_and_their_labels():
    assert parse_targets(None, 84.0) == [84.0] and parse_targets(60, 84.0) == [60.0]
    assert parse_targets([60.0, 84.0], 57.0) == [60.0, 84.0]
    with pytest.raises(ValueError, match=r"`target_latency`. Expected distinct targets"):
        parse_targets([60.0, 60.0], 84.0)
    with pytest.raises(ValueError, match=r"`target_latency`. Expected a positive number"):
        parse_targets([60.0, 0.0], 84.0)
    assert [target_label(60), target_label(84.5), target_label(300, "M MACs")] == ["60ms", "84.5ms", "300M_MACs"]


def _state(reinforce):
    """Every variable of one target's policy: logits, baseline, learning rate, Adam moments and step."""
    variables = [*reinforce.controller.logits, reinforce.average, reinforce.average_weight, reinforce.learning_rate]
    optimizer = reinforce.optimizer
    variables += [*optimizer.first_moments, *optimizer.second_moments, optimizer.iterations]
    return [variable.numpy().copy() for variable in variables]


def _policies(targets, samples_per_step):
    policies = TargetPolicies(tiny_search_space(), targets, samples_per_step, beta=-0.5)
    for index, controller in enumerate(policies.controllers):  # distinct, non-uniform policies
        rng = np.random.default_rng(index)
        for logits in controller.logits:
            logits.assign(rng.normal(size=logits.shape).astype(np.float32))
    return policies


def _assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_each_policy_learns_only_from_its_own_samples():
    policies = _policies(TARGETS[:2], 4)
    samples = policies.sample(tf.constant([3, 4]))
    rewards = tf.constant([0.3, 0.9, 0.1, 0.7])
    # Two steps with another policy's rewards changed: policy 0 ends in the same state, bit for bit,
    # as one trained alone on its own block.
    alone = _policies(TARGETS[:1], 2)  # the same initial logits as policy 0
    _assert_same(_state(alone.reinforces[0]), _state(policies.reinforces[0]))
    for changed in (rewards, tf.constant([0.3, 0.9, -5.0, 2.0])):
        policies.step(samples, changed, 0.5)
        alone.step(samples[:2], changed[:2], 0.5)
    _assert_same(_state(policies.reinforces[0]), _state(alone.reinforces[0]))
    # A policy that gets no samples in a step does not change at all (its baseline and Adam state neither).
    before = [_state(reinforce) for reinforce in policies.reinforces]
    stats = policies.step(samples, rewards, 0.5, counts=[4, 0])
    assert stats[1] is None
    _assert_same(_state(policies.reinforces[1]), before[1])
    moved = [logits.numpy() for logits in policies.controllers[0].logits]
    assert not all(np.array_equal(a, b) for a, b in zip(moved, before[0]))
    with pytest.raises(ValueError, match=r"`counts`. Expected 2 non-negative sample counts summing to 4"):
        policies.step(samples, rewards, 0.5, counts=[3, 0])


def test_samples_come_from_their_owners_policy_and_rewards_from_their_owners_target():
    policies = _policies(TARGETS, 6)
    assert [policies.owner(index) for index in range(6)] == [0, 0, 1, 1, 2, 2]
    seeds = [tf.constant([7, index]) for index in range(6)]
    function = tf.function(lambda index, seed: policies.sample_with_warmup(index, seed, 0.0, 0.0).indices)
    for index, seed in enumerate(seeds):  # the gathered logits inside a traced function (as the search's loop)
        own = policies.controllers[index // 2].sample_with_warmup(seed, 0.0, 0.0).indices
        np.testing.assert_array_equal(function(tf.constant(index), seed), own)
    quality, cost = tf.constant([0.5, 0.6, 0.7, 0.5, 0.4, 0.9]), tf.constant([5.0, 6.0, 8.0, 9.0, 11.0, 5.5])
    expected = [Reward("abs", target=TARGETS[index // 2], beta=-0.5)(quality[index], cost[index]) for index in range(6)]
    np.testing.assert_allclose(policies.reward(quality, cost), expected, rtol=1e-6)
    blocks = np.asarray(policies.sample(tf.constant([1, 2])))
    for index, controller in enumerate(policies.controllers):
        seed = tf.random.experimental.stateless_fold_in(tf.constant([1, 2]), index)
        np.testing.assert_array_equal(blocks[2 * index : 2 * index + 2], controller.sample(seed, 2))
