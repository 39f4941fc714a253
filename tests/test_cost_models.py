"""Cost models: the Pixel-1 linear model (golden values), MACs / params, files, batching."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tests.conftest import load_golden_vectors, random_indices
from tunas_keras.cost_models import (
    COST_MODELS,
    active_features,
    estimate_cost,
    features,
    get_cost_model,
    num_features,
    reachable_features,
    save_linear_cost_model,
)
from tunas_keras.cost_models.sampling import extreme_indices
from tunas_keras.masks import one_hot_masks, pad_masks, uniform_masks
from tunas_keras.models.counters import Counts
from tunas_keras.schema import decision_parents

# The registered cost models that count something `count_network` counts too ("macs", "params").
COUNT_MODELS = [name for name in sorted(COST_MODELS) if name in {field.name for field in dataclasses.fields(Counts)}]

FEATURE_LENGTHS = {"proxyless": 144, "proxyless_enlarged": 5983, "mobilenet_v3_like": 29068}
UNIT_TEST_VECTOR = (
    "0:0:0:1:0:0:0:0:1:0:0:1:0:0:1:0:1:1:0:1:0:0:1:0:0:0:0:0:0:2:1:0:1:1:0:2:1:0:2:1:0:0:1:1:0:0:0:0:1:0:0:1:0:0:0:1"
    ":1:0:2:0:0:0:0:0:1:0:0:0:2:1:0:0:0"
)
UNIT_TEST_ACTIVE = [0, 5, 15, 22, 29, 33, 38, 45, 50, 62, 66, 75, 82, 87, 90, 99, 106, 114, 121, 124, 133, 143]
# cost-model.md §5: (smallest, largest) cost of every space.
EXTREMES = {
    "proxyless": (30.9361, 219.0914),
    "proxyless_enlarged": (10.2874, 590.9789),
    "mobilenet_v3_like": (4.1964, 550.2819),
}


def is_skip_decision(decision):
    return decision.tag == "op" and decision.num_choices == 2


def test_feature_lengths(space):
    assert num_features(space) == FEATURE_LENGTHS[space.name]
    assert get_cost_model("pixel1", space).kernel.shape == (FEATURE_LENGTHS[space.name],)


def test_reachable_features_are_exactly_the_nonzero_coefficients(space):
    # The data's zero pattern is an independent check of the generic feature derivation.
    kernel = get_cost_model("pixel1", space).kernel
    np.testing.assert_array_equal(reachable_features(space), kernel != 0)


def test_golden_vectors():
    golden = load_golden_vectors()
    assert len(golden) == 60
    for space_name in {line["space"] for line in golden}:
        lines = [line for line in golden if line["space"] == space_name]
        model = get_cost_model("pixel1", space_name)
        for line in lines:
            assert abs(model.cost(line["indices"]) - line["cost"]) < 1e-3
            vector = features(model.space, line["indices"])
            assert vector.sum() == len(active_features(model.space, line["indices"]))
            assert abs(float(model.bias) + float(vector.astype(np.float64) @ model.kernel) - line["cost"]) < 1e-3
        batch = model.batch_cost(tf.constant([line["indices"] for line in lines], tf.int32)).numpy()
        np.testing.assert_allclose(batch, [line["cost"] for line in lines], atol=1e-3)


def test_unit_test_vector():
    space = tunas_keras.get_search_space("proxyless")
    architecture = space.parse(UNIT_TEST_VECTOR)
    assert active_features(space, architecture) == UNIT_TEST_ACTIVE
    assert estimate_cost(architecture) == pytest.approx(84.0167, abs=1e-3)


def test_proxylessnas_mobile():
    assert estimate_cost("proxylessnas_mobile") == pytest.approx(84.42, abs=0.01)
    assert estimate_cost("proxylessnas_mobile") == pytest.approx(84.4162, abs=1e-3)
    enlarged = tunas_keras.reference_architecture("proxylessnas_mobile", space="proxyless_enlarged")
    assert estimate_cost(enlarged, "pixel1") == pytest.approx(84.4051, abs=1e-3)


def test_extremes(space):
    model = get_cost_model("pixel1", space)
    smallest, largest = EXTREMES[space.name]
    assert model.cost(extreme_indices(space)[0]) == pytest.approx(smallest, abs=1e-3)
    assert model.cost(extreme_indices(space)[1]) == pytest.approx(largest, abs=1e-3)


@pytest.mark.parametrize("name", COUNT_MODELS)
def test_count_models_equal_count_network(space, name):
    model = get_cost_model(name, space)
    batch = [random_indices(space, seed) for seed in range(6)] + [list(extreme_indices(space)[1])]
    batch_costs = model.batch_cost(tf.constant(batch, tf.int32)).numpy()
    for indices, batch_value in zip(batch, batch_costs):
        expected = getattr(tunas_keras.count_network(space.architecture(indices)), name)
        assert model.cost(indices) * 1e6 == pytest.approx(expected, abs=1e-3)
        assert batch_value * 1e6 == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(COST_MODELS))
def test_nested_decisions_of_a_skipped_layer_do_not_matter(space, name):
    model = get_cost_model(name, space)
    rng = np.random.default_rng(1)
    skips = [position for position, decision in enumerate(space.decisions) if is_skip_decision(decision)]
    base = random_indices(space, 3)
    for position in skips:
        base[position] = 1
    reference = model.cost(base)
    nested = [child for child, parent in enumerate(decision_parents(space.spec)) if parent and parent[0] in skips]
    assert nested, "every space has skippable layers"
    for _ in range(5):
        changed = list(base)
        for position in nested:
            changed[position] = int(rng.integers(space.num_choices[position]))
        assert model.cost(changed) == reference
        assert float(model.batch_cost(tf.constant([changed]))[0]) == pytest.approx(float(model.batch_cost([base])[0]))


def test_batch_cost_inside_tf_function():
    model = get_cost_model("pixel1", "mobilenet_v3_like")
    golden = [line for line in load_golden_vectors() if line["space"] == "mobilenet_v3_like_search"]

    @tf.function
    def costs(indices):
        return model.batch_cost(indices)

    result = costs(tf.constant([line["indices"] for line in golden], tf.int32))
    assert result.dtype == tf.float32 and result.shape == (len(golden),)
    np.testing.assert_allclose(result.numpy(), [line["cost"] for line in golden], atol=1e-3)


@pytest.mark.parametrize("name", ["pixel1", "macs"])
def test_mask_cost_is_the_expected_cost_under_the_masks(space, name):
    model = get_cost_model(name, space)
    samples = [random_indices(space, seed) for seed in range(3)]
    padded = tf.stack([pad_masks(space, one_hot_masks(space, indices)) for indices in samples])
    np.testing.assert_allclose(model.mask_cost(padded), model.batch_cost(tf.constant(samples)), rtol=1e-5)
    # Fractional weights on three decisions (two nested in one skippable layer): the expectation
    # over their joint choices, enumerated with the scalar cost.
    parents = decision_parents(space.spec)
    child = next(position for position, parent in enumerate(parents) if parent is not None)
    chosen = [child, parents[child][0], next(p for p, c in enumerate(space.num_choices) if c > 1 and p != child)]
    rng = np.random.default_rng(1)
    weights = {position: rng.dirichlet(np.ones(space.num_choices[position])) for position in chosen}
    masks = one_hot_masks(space, samples[0])
    masks = [tf.constant(weights[p], tf.float32) if p in weights else mask for p, mask in enumerate(masks)]
    expected = 0.0
    for combination in itertools.product(*(range(space.num_choices[p]) for p in chosen)):
        indices = list(samples[0])
        for position, choice in zip(chosen, combination):
            indices[position] = choice
        expected += np.prod([weights[p][c] for p, c in zip(chosen, combination)]) * model.cost(indices)
    assert float(model.mask_cost(pad_masks(space, masks))) == pytest.approx(expected, rel=1e-5)
    # Full warmup: finite and between the cheapest and the most expensive architecture.
    smallest, largest = (model.cost(indices) for indices in extreme_indices(space))
    assert smallest <= float(model.mask_cost(pad_masks(space, uniform_masks(space)))) <= largest


def test_save_and_load_linear_cost_model(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    pixel1 = get_cost_model("pixel1", space)
    path = tmp_path / "phone.json"
    kernel = pixel1.kernel * 0.5
    save_linear_cost_model(path, space, 10.0, kernel, {"source": "test", "device": "phone"})
    enlarged = tunas_keras.get_search_space("proxyless_enlarged")
    save_linear_cost_model(path, enlarged, 1.0, get_cost_model("pixel1", enlarged).kernel, {"date": "today"})
    data = json.loads(path.read_text())
    assert sorted(data["spaces"]) == ["proxylessnas_enlarged_search", "proxylessnas_search"]
    assert data["device"] == "phone" and data["date"] == "today"
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed
    loaded = get_cost_model(str(path), space)
    np.testing.assert_array_equal(loaded.kernel, kernel)  # float32 bits round-trip
    architecture = tunas_keras.reference_architecture("proxylessnas_mobile")
    expected = 10.0 + (pixel1.cost(architecture) - float(pixel1.bias)) * 0.5
    assert loaded.cost(architecture) == pytest.approx(expected, abs=1e-4)
    assert loaded.provenance["source"] == "test"


def test_bad_inputs(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    with pytest.raises(ValueError, match=r"Expected one of \['macs', 'params', 'pixel1'\]"):
        get_cost_model("pixel2", space)
    with pytest.raises(ValueError, match="no such file"):
        get_cost_model(str(tmp_path / "missing.json"), space)
    with pytest.raises(ValueError, match=r"Expected 144 coefficients .* Received: shape=\(3,\)"):
        save_linear_cost_model(tmp_path / "x.json", space, 0.0, [1.0, 2.0, 3.0], {})
    path = tmp_path / "only_proxyless.json"
    save_linear_cost_model(path, space, 0.0, np.zeros(144), {})
    with pytest.raises(ValueError, match="Expected a key 'mobilenet_v3_like_search'"):
        get_cost_model(str(path), "mobilenet_v3_like")
    model = get_cost_model("pixel1", space)
    with pytest.raises(ValueError, match=r"Expected an int tensor of shape \[batch, 73\]"):
        model.batch_cost(tf.zeros([73], tf.int32))
    with pytest.raises(ValueError, match=r"Expected an int tensor of shape \[batch, 73\]"):
        model.batch_cost(tf.zeros([2, 72], tf.int32))
    with pytest.raises(ValueError, match="Expected an architecture of space 'proxyless'"):
        model.cost(tunas_keras.reference_architecture("proxylessnas_mobile", space="proxyless_enlarged"))
    with pytest.raises(ValueError, match="Expected 73 indices"):
        model.cost([0, 1])
