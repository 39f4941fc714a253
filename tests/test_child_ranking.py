"""A search's supernet restored from its checkpoint: children's ranking, and weights for training."""

import json

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tests.conftest import assert_close_to_scale, tiny_search_space
from tunas_keras import masks
from tunas_keras.cost_models import estimate_cost
from tunas_keras.cost_models.calibration import spearman
from tunas_keras.cost_models.sampling import uniform_indices
from tunas_keras.training.child_ranking import decision_effects, evaluate_children, rank_children
from tunas_keras.training.config import SearchConfig, config_to_json
from tunas_keras.training.search_task import dataset_from_config, top1_accuracy
from tunas_keras.training.standalone_task import copy_weights_from_supernet

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A search model_dir whose checkpoint holds perturbed (not freshly initialised) weights."""
    directory = tmp_path_factory.mktemp("search")
    config = SearchConfig(image_size=SHAPE[0], model_dir=str(directory))
    (directory / "config.json").write_text(config_to_json(config))
    supernet = tunas_keras.build_supernet("proxyless", num_classes=10, input_shape=SHAPE)
    supernet(tf.zeros((1,) + SHAPE), masks.uniform_masks(supernet.space), training=False)
    checkpoint = tf.train.Checkpoint(step=tf.Variable(7, dtype=tf.int64), supernet=supernet)
    checkpoint.write(str(directory / "checkpoints" / "rl_start"))  # a kept checkpoint: the initial weights
    rng = np.random.default_rng(0)
    for variable in supernet.trainable_variables:
        variable.assign_add(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
    tf.train.CheckpointManager(checkpoint, str(directory / "checkpoints"), max_to_keep=1).save()
    found = tunas_keras.reference_architecture("proxylessnas_mobile", space="proxyless")
    index = {"architectures": [{"target_latency": 84.0, "indices": list(found.indices)}]}
    (directory / "architectures.json").write_text(json.dumps(index))  # what a search writes
    return str(directory), supernet, config


def test_rank_children_evaluates_each_child_like_its_extracted_model(search):
    search_dir, supernet, config = search
    result = rank_children(search_dir, num_architectures=3, num_batches=1, batch_size=16, seed=0)
    images, labels = next(iter(dataset_from_config(config).make("valid", 16, training=False, repeat=False)))
    entries = result["children"] + [result["smallest"], result["largest"]] + result["found"]
    assert len(result["children"]) == 3 and result["num_images"] == 16
    assert [entry["target_latency"] for entry in result["found"]] == [84.0]
    for entry in entries:
        architecture = supernet.space.architecture(entry["indices"])
        assert entry["cost"] == pytest.approx(estimate_cost(architecture), abs=1e-9)
        logits = supernet.extract_child(architecture)(images, training=True)  # batch statistics
        assert entry["accuracy"] == pytest.approx(float(top1_accuracy(labels, logits)), abs=1e-6)
    assert result["smallest"]["cost"] < min(child["cost"] for child in result["children"])
    assert result["largest"]["cost"] > max(child["cost"] for child in result["children"])
    costs = [child["cost"] for child in result["children"]]
    accuracies = [child["accuracy"] for child in result["children"]]
    np.testing.assert_equal(result["spearman"], spearman(costs, accuracies))
    assert result["accuracy_by_cost_tercile"] == [accuracies[i] for i in np.argsort(costs)]


def test_rank_children_restores_a_kept_checkpoint(search):
    search_dir, _, config = search
    kept = rank_children(search_dir, num_architectures=3, num_batches=1, batch_size=16, seed=0, checkpoint="rl_start")
    fresh = tunas_keras.build_supernet("proxyless", num_classes=10, input_shape=SHAPE)
    fresh(tf.zeros((1,) + SHAPE), masks.uniform_masks(fresh.space), training=False)
    tf.train.Checkpoint(supernet=fresh).restore(f"{search_dir}/checkpoints/rl_start").expect_partial()
    batches = list(dataset_from_config(config).make("valid", 16, training=False, repeat=False).take(1))
    indices = np.asarray([child["indices"] for child in kept["children"]])
    np.testing.assert_allclose(
        [child["accuracy"] for child in kept["children"]], evaluate_children(fresh, indices, batches)
    )
    latest = rank_children(search_dir, num_architectures=3, num_batches=1, batch_size=16, seed=0)
    assert kept["checkpoint"] == "rl_start" and latest["checkpoint"] == "latest"
    assert [child["indices"] for child in latest["children"]] == indices.tolist()  # same children, other weights
    with pytest.raises(ValueError, match=r"`checkpoint`. Expected 'latest' or a checkpoint kept in .* Received: 'x'"):
        rank_children(search_dir, checkpoint="x")


def test_standalone_model_starts_from_the_searched_weights(search):
    search_dir, supernet, _ = search
    architecture = supernet.space.architecture(tuple(i % n for i, n in enumerate(supernet.space.num_choices)))
    model = tunas_keras.build_model(architecture, num_classes=10, input_shape=SHAPE)
    copy_weights_from_supernet(model, architecture, search_dir)
    images = tf.random.stateless_normal((8,) + SHAPE, seed=[1, 2])
    assert_close_to_scale(model(images, training=True), supernet(images, architecture, training=True), 5e-4)
    with pytest.raises(ValueError, match="`init_from_supernet`: the search used space 'proxyless'"):
        other = tunas_keras.reference_architecture("mobilenet_v2", space="proxyless_enlarged")
        copy_weights_from_supernet(model, other, search_dir)


def test_bad_arguments_name_the_argument(search, tmp_path):
    search_dir, supernet, _ = search
    with pytest.raises(ValueError, match=r"`search_dir`. Expected a search model_dir .* Received: '.*empty'"):
        rank_children(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"`num_architectures`. Expected an int >= 3. Received: 2"):
        rank_children(search_dir, num_architectures=2)
    with pytest.raises(ValueError, match=r"`batch_size`. Expected an int >= 1. Received: 0"):
        rank_children(search_dir, batch_size=0)
    with pytest.raises(ValueError, match=r"`init_from_supernet`. Expected a search model_dir"):
        architecture = supernet.space.architecture([0] * supernet.space.num_decisions)
        copy_weights_from_supernet(None, architecture, str(tmp_path / "empty"))


def test_decision_effects_find_the_decision_that_moves_accuracy_and_skip_inactive_children():
    """Accuracy set by the kernel of the skippable layer (decision 4, active when decision 6 is 0)
    plus a small cost term: decision 4 comes first, with the per-choice means of its active
    children; without its effect the children rank by cost."""
    space = tiny_search_space()
    rng = np.random.default_rng(0)
    indices = uniform_indices(space, rng, 64)
    costs = rng.uniform(10.0, 20.0, size=64)
    active = indices[:, 6] == 0
    accuracies = 0.5 + 0.01 * costs - 0.3 * (active & (indices[:, 4] == 1))
    effects = decision_effects(space, indices, accuracies, costs)
    first = effects[0]
    assert first["decision"] == space.decisions[4].name
    assert first["count"] == [int(np.sum(active & (indices[:, 4] == choice))) for choice in (0, 1)]
    assert sum(first["count"]) == int(active.sum()) < 64
    for choice in (0, 1):
        rows = active & (indices[:, 4] == choice)
        assert first["mean_accuracy"][choice] == pytest.approx(np.mean(accuracies[rows]), rel=1e-9)
        assert first["mean_cost"][choice] == pytest.approx(np.mean(costs[rows]), rel=1e-9)
    assert first["spread"] == pytest.approx(abs(first["mean_accuracy"][0] - first["mean_accuracy"][1]), rel=1e-9)
    assert 0.25 < first["spread"] < 0.35
    assert spearman(costs, accuracies) < 0.7 < first["spearman_without"]  # the cost term alone ranks
    assert {effect["decision"] for effect in effects} == {space.decisions[i].name for i in (1, 2, 4, 5, 6, 7)}
