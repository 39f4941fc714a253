"""The controller: stateless sampling, log-probabilities and entropy over active decisions."""

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tunas_keras.cost_models import get_cost_model
from tunas_keras.masks import is_filter_decision, unpad_masks
from tunas_keras.schema import decision_parents
from tunas_keras.search import Controller


def parents_from_paths(space):
    """Independent of `decision_parents`: a path component "tag=c" names the enclosing OneOf."""
    parents = []
    for decision in space.decisions:
        parent = None
        for depth, part in enumerate(decision.path):
            if isinstance(part, str) and "=" in part:
                tag, choice = part.split("=")
                prefix = decision.path[:depth]
                position = next(i for i, d in enumerate(space.decisions) if d.path == prefix and d.tag == tag)
                parent = (position, int(choice))  # the innermost one wins
        parents.append(parent)
    return parents


def numpy_active(space, indices):
    parents = parents_from_paths(space)
    active = []
    for position in range(space.num_decisions):
        ok, parent = True, parents[position]
        while parent is not None:
            ok = ok and indices[parent[0]] == parent[1]
            parent = parents[parent[0]]
        active.append(ok)
    return np.array(active)


def randomise(controller, seed):
    rng = np.random.default_rng(seed)
    for logits in controller.logits:
        logits.assign(rng.normal(size=logits.shape).astype(np.float32))


def test_decision_parents_match_paths(space):
    assert list(decision_parents(space.spec)) == parents_from_paths(space)
    if space.name == "proxyless":  # cost-model.md §3.1: block2 layer2 is positions 6, 7, 8
        assert decision_parents(space.spec)[6:9] == ((8, 0), (8, 0), None)


def test_initial_policy_is_uniform(space):
    controller = Controller(space)
    assert len(controller.logits) == space.num_decisions
    for probabilities, count in zip(controller.probabilities(), space.num_choices):
        np.testing.assert_allclose(probabilities, np.full(count, 1 / count), rtol=1e-6)


def test_sampling_is_stateless_and_in_range(space):
    controller = Controller(space)
    first = controller.sample(tf.constant([3, 4]))
    assert first.dtype == tf.int32 and first.shape == (space.num_decisions,)
    np.testing.assert_array_equal(first, controller.sample(tf.constant([3, 4])))
    assert not np.array_equal(first, controller.sample(tf.constant([3, 5])))
    batch = controller.sample(tf.constant([0, 1]), batch_size=4000).numpy()
    assert batch.shape == (4000, space.num_decisions)
    assert (batch >= 0).all() and (batch < np.array(space.num_choices)).all()
    for position, count in enumerate(space.num_choices):  # uniform: each frequency ~ 1/count
        frequencies = np.bincount(batch[:, position], minlength=count) / len(batch)
        np.testing.assert_allclose(frequencies, 1 / count, atol=0.04)
    assert get_cost_model("pixel1", space).batch_cost(batch).shape == (4000,)


def test_log_prob_counts_only_active_decisions(space):
    controller = Controller(space)
    randomise(controller, 0)
    logits = [variable.numpy().astype(np.float64) for variable in controller.logits]
    samples = controller.sample(tf.constant([7, 7]), batch_size=16).numpy()
    log_probs = controller.log_prob(samples).numpy()
    for indices, log_prob in zip(samples, log_probs):
        active = numpy_active(space, indices)
        expected = 0.0
        for position, vector in enumerate(logits):
            log_softmax = vector - np.log(np.sum(np.exp(vector)))
            expected += log_softmax[indices[position]] if active[position] else 0.0
        assert log_prob == pytest.approx(expected, abs=1e-3)
        assert float(controller.log_prob(indices)) == pytest.approx(expected, abs=1e-3)
    skipped = [p for p, d in enumerate(space.decisions) if d.tag == "op" and d.num_choices == 2]
    assert not numpy_active(space, np.where(np.isin(np.arange(space.num_decisions), skipped), 1, 0)).all()


def test_entropy(space):
    controller = Controller(space)
    # Uniform policy: top-level decisions count log(n); nested ones P(parent choice) * log(n).
    parents = parents_from_paths(space)
    expected = 0.0
    for position, count in enumerate(space.num_choices):
        weight, parent = 1.0, parents[position]
        while parent is not None:
            weight /= space.num_choices[parent[0]]
            parent = parents[parent[0]]
        expected += weight * np.log(count)
    assert float(controller.entropy()) == pytest.approx(expected, rel=1e-5)
    indices = controller.sample(tf.constant([1, 1])).numpy()
    active = numpy_active(space, indices)
    per_sample = sum(np.log(count) for count, on in zip(space.num_choices, active) if on)
    assert float(controller.entropy(indices)) == pytest.approx(per_sample, rel=1e-5)


def test_most_likely():
    space = tunas_keras.get_search_space("proxyless")
    controller = Controller(space)
    target = tunas_keras.reference_architecture("proxylessnas_mobile")
    for logits, index in zip(controller.logits, target.indices):
        logits.assign(tf.one_hot(index, logits.shape[0]) * 2.0)
    np.testing.assert_array_equal(controller.most_likely(), target.indices)
    assert controller.most_likely().dtype == tf.int32
    assert controller.most_likely_architecture() == target
    assert float(controller.probabilities()[1][0]) == pytest.approx(np.exp(2) / (np.exp(2) + 2), rel=1e-6)


def test_sample_masks_with_warmup():
    space = tunas_keras.get_search_space("mobilenet_v3_like")
    controller = Controller(space)
    indices, masks = controller.sample_masks(tf.constant([5, 6]), 0.0, 0.0)
    assert [int(np.argmax(mask)) for mask in masks] == list(indices.numpy())
    indices_again, warm = controller.sample_masks(tf.constant([5, 6]), 1.0, 1.0)
    np.testing.assert_array_equal(indices, indices_again)
    for decision, mask in zip(space.decisions, warm):
        if is_filter_decision(decision):
            assert mask.numpy()[-1] == 1.0
        else:
            np.testing.assert_allclose(mask, np.full(decision.num_choices, 1 / decision.num_choices))


def numpy_warmup_score(space, sample, logits):
    """The reference's score of a warmup sample: per active decision (by mask weight > 1e-6),
    log q if replaced, else log(1 - q) + log pi(choice); and the sum of their entropies."""
    parents = parents_from_paths(space)
    masks, replaced, probability = sample.masks.numpy(), sample.replaced.numpy(), sample.probability.numpy()
    log_prob = entropy = 0.0
    for position, index in enumerate(sample.indices.numpy()):
        active, parent = True, parents[position]
        while parent is not None:
            active = active and masks[parent[0], parent[1]] > 1e-6
            parent = parents[parent[0]]
        if not active:
            continue
        z = logits[position]
        log_p = z - np.log(np.exp(z).sum())
        entropy -= (np.exp(log_p) * log_p).sum()
        q = probability[position]
        log_prob += np.log(q) if replaced[position] else np.log(1 - q) + log_p[index]
    return log_prob, entropy


def test_warmup_samples_are_scored_as_the_reference():
    space = tunas_keras.get_search_space("proxyless_enlarged")
    controller = Controller(space)
    rng = np.random.default_rng(3)
    for logits in controller.logits:
        logits.assign(rng.normal(size=logits.shape[0]).astype(np.float32))
    values = [logits.numpy() for logits in controller.logits]
    plain = controller.sample_with_warmup(tf.constant([4, 2]), 0.0, 0.0)
    indices, masks = controller.sample_masks(tf.constant([4, 2]), 0.0, 0.0)
    np.testing.assert_array_equal(plain.indices, indices)
    assert not np.any(plain.replaced.numpy())
    assert float(controller.log_prob(plain)) == pytest.approx(float(controller.log_prob(indices)), rel=1e-6)
    assert float(controller.entropy(plain)) == pytest.approx(float(controller.entropy(indices)), rel=1e-6)
    replaced_somewhere = False
    for seed in range(4):
        sample = controller.sample_with_warmup(tf.constant([seed, 9]), 0.4, 0.3)
        _, masks = controller.sample_masks(tf.constant([seed, 9]), 0.4, 0.3)
        for padded, mask in zip(unpad_masks(space, sample.masks), masks):
            np.testing.assert_array_equal(padded, mask)
        log_prob, entropy = numpy_warmup_score(space, sample, values)
        assert float(controller.log_prob(sample)) == pytest.approx(log_prob, rel=1e-5)
        assert float(controller.entropy(sample)) == pytest.approx(entropy, rel=1e-5)
        replaced = sample.replaced.numpy()
        replaced_somewhere |= bool(replaced.any() and not replaced.all())
        with tf.GradientTape() as tape:
            score = controller.log_prob(sample)
        gradients = tape.gradient(score, controller.logits)
        # A replaced decision's log-probability is the constant log q: no gradient.
        for position in np.flatnonzero(replaced):
            assert gradients[position] is None or not np.any(gradients[position].numpy())
    assert replaced_somewhere
    # Batched samples score row by row.
    batch = tf.nest.map_structure(
        lambda *fields: tf.stack(fields),
        *[controller.sample_with_warmup(tf.constant([s, 1]), 0.5, 0.5) for s in range(3)],
    )
    rows = [float(controller.log_prob(controller.sample_with_warmup(tf.constant([s, 1]), 0.5, 0.5))) for s in range(3)]
    np.testing.assert_allclose(controller.log_prob(type(plain)(*batch)).numpy(), rows, rtol=1e-5)


def test_gradients_only_reach_active_decisions():
    space = tunas_keras.get_search_space("proxyless")
    controller = Controller(space)
    indices = np.zeros(space.num_decisions, np.int32)
    indices[8] = 1  # block2 layer2 skipped: its kernel (6) and expansion (7) do not count
    with tf.GradientTape() as tape:
        log_prob = controller.log_prob(indices)
    gradients = tape.gradient(log_prob, controller.logits)
    assert not np.any(gradients[6].numpy()) and not np.any(gradients[7].numpy())
    assert np.any(gradients[8].numpy()) and np.any(gradients[3].numpy())


def test_bad_inputs():
    controller = Controller(tunas_keras.get_search_space("proxyless"))
    with pytest.raises(ValueError, match=r"Expected an int tensor of shape \[2\]"):
        controller.sample(tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match=r"Expected an int tensor of shape \[\.\.\., 73\]. Received: shape=\(72,\)"):
        controller.log_prob(tf.zeros([72], tf.int32))
    with pytest.raises(ValueError, match=r"Expected an int tensor of shape"):
        controller.log_prob(tf.zeros([73], tf.float32))
