"""The weight-sharing supernet: equivalence with extracted children, gradients, regularisation, errors."""

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tests.conftest import assert_close_to_scale, random_indices
from tunas_keras import specs
from tunas_keras.cost_models.sampling import extreme_indices
from tunas_keras.masks import one_hot_masks, uniform_masks
from tunas_keras.models import supernet_blocks as blocks
from tunas_keras.models.supernet import build_supernet

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
BATCH = 8  # Batch-norm statistics of 1×1 maps over fewer images amplify float32 rounding.


@pytest.fixture(scope="module")
def supernets():
    cache = {}

    def get(space, weight_sharing="aggressive"):
        key = (space, weight_sharing)
        if key not in cache:
            cache[key] = build_supernet(space, NUM_CLASSES, INPUT_SHAPE, weight_sharing=weight_sharing)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_normal((BATCH,) + INPUT_SHAPE, seed=[7, 7])


def _assert_child_equivalent(supernet, architecture, images):
    logits = supernet(images, architecture, training=True)
    # The one-hot-only graph (used by the search's validation pass) computes the same logits.
    # Tolerances relative to the logits' scale: other CPUs' kernels round differently (tests/conftest.py).
    assert_close_to_scale(supernet(images, architecture, training=True, one_hot=True), logits, 1e-5)
    child = supernet.extract_child(architecture)
    expected = child(images, training=True)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert_close_to_scale(logits, expected, 1e-4)
    assert float(tf.reduce_max(tf.abs(expected))) > 1e-2  # Not trivially zero.
    return child


SLOW = pytest.mark.slow  # Each supernet build + eager equivalence check takes 20-50 s on 2 shared cores.
SPACES_FAST_FIRST = [
    "proxyless",
    pytest.param("proxyless_enlarged", marks=SLOW),
    pytest.param("mobilenet_v3_like", marks=SLOW),
]


@pytest.mark.parametrize("space_name", SPACES_FAST_FIRST)
def test_random_children_equal_extracted_models(supernets, images, space_name):
    supernet = supernets(space_name)
    for seed in (0, 1):
        _assert_child_equivalent(supernet, supernet.space.architecture(random_indices(supernet.space, seed)), images)


@pytest.mark.parametrize(
    "name, space_name",
    [
        pytest.param("mobilenet_v2", "proxyless_enlarged", marks=SLOW),
        pytest.param("mnasnet_b1", "proxyless_enlarged", marks=SLOW),
        pytest.param("proxylessnas_mobile", "proxyless_enlarged", marks=SLOW),
        ("proxylessnas_mobile", "proxyless"),
    ],
)
def test_reference_architectures_equal_extracted_models(supernets, images, name, space_name):
    architecture = tunas_keras.reference_architecture(name, space=space_name)
    child = _assert_child_equivalent(supernets(space_name), architecture, images)
    reference = tunas_keras.build_model(name, NUM_CLASSES, INPUT_SHAPE)
    assert [layer.name for layer in child.layers] == [layer.name for layer in reference.layers]
    assert child.count_params() == reference.count_params()


@SLOW
def test_unshared_supernet_children_and_space_check(supernets, images):
    supernet = supernets("proxyless", "none")
    shared = supernets("proxyless")
    assert supernet.count_params() > 2 * shared.count_params()
    for architecture in (
        tunas_keras.reference_architecture("proxylessnas_mobile"),
        supernet.space.architecture(random_indices(supernet.space, 4)),
    ):
        _assert_child_equivalent(supernet, architecture, images)
    with pytest.raises(ValueError, match="'none' is implemented for spaces"):
        build_supernet("mobilenet_v3_like", weight_sharing="none")
    with pytest.raises(ValueError, match="Invalid value for argument `weight_sharing`"):
        build_supernet("proxyless", weight_sharing="partial")


def _unselected_variables(supernet, architecture) -> set:
    """Refs of the variables of every branch that `architecture` does not select."""
    unselected = set()
    for module in supernet.submodules:
        if isinstance(module, blocks.Choice):
            chosen = module.selection.index(architecture.indices)
            for index, branch in enumerate(module.block.branches):
                if index != chosen:
                    unselected.update(variable.ref() for variable in branch.weights)
    return unselected


@SLOW  # Tracing the supernet's gradient in tf.function takes minutes on 2 shared cores.
def test_one_hot_unselected_branches_get_no_gradient_and_do_not_run(supernets, images):
    supernet = supernets("proxyless")
    arch = tunas_keras.reference_architecture("proxylessnas_mobile")
    unselected = _unselected_variables(supernet, arch)
    before = [variable.numpy() for variable in supernet.non_trainable_variables]

    @tf.function
    def gradients(masks):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(supernet(images, list(masks), training=True)))
        return tape.gradient(loss, supernet.trainable_variables)

    grads = gradients(one_hot_masks(supernet.space, arch))
    num_selected = 0
    for variable, grad in zip(supernet.trainable_variables, grads):
        if variable.ref() in unselected:
            assert grad is None or not np.any(grad.numpy())
        else:
            num_selected += 1
            assert grad is not None and np.any(grad.numpy())
    assert num_selected > 100 and len(unselected) > 100
    # Not executed: the (training=True) moving statistics moved only in selected branches.
    for variable, old in zip(supernet.non_trainable_variables, before):
        assert np.array_equal(old, variable.numpy()) == (variable.ref() in unselected)


@pytest.mark.parametrize("space_name", SPACES_FAST_FIRST)
def test_every_weight_gets_a_gradient_under_full_warmup(supernets, images, space_name):
    supernet = supernets(space_name)
    masks = uniform_masks(supernet.space)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(supernet(images, masks, training=True)))
    grads = tape.gradient(loss, supernet.trainable_variables)
    missing = [v.name for v, g in zip(supernet.trainable_variables, grads) if g is None or not np.any(g.numpy())]
    assert not missing


@SLOW
def test_unshared_every_path_gets_a_gradient(supernets, images):
    supernet = supernets("proxyless", "none")
    masks = [tf.fill([decision.num_choices], 1.0 / decision.num_choices) for decision in supernet.space.decisions]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(supernet(images, masks, training=True)))
    grads = tape.gradient(loss, supernet.trainable_variables)
    assert all(g is not None and np.any(g.numpy()) for g in grads)


@pytest.mark.parametrize("space_name", [pytest.param("proxyless_enlarged", marks=SLOW), "mobilenet_v3_like"])
def test_regularization_counts_exactly_the_child_kernels(supernets, space_name):
    supernet = supernets(space_name)
    arch = supernet.space.architecture(random_indices(supernet.space, 5))
    child = supernet.extract_child(arch)
    expected = sum(float(np.sum(w.numpy() ** 2)) for w in child.trainable_weights if "kernel" in w.name)
    np.testing.assert_allclose(float(supernet.regularization_loss(arch)), expected, rtol=1e-5)
    everything = sum(float(np.sum(w.numpy() ** 2)) for w in supernet.trainable_weights if "kernel" in w.name)
    warm = float(supernet.regularization_loss(uniform_masks(supernet.space)))
    assert expected < warm <= everything * (1 + 1e-6)


@SLOW
def test_features_match_the_child_backbone(supernets, images):
    supernet = supernets("mobilenet_v3_like")
    arch = supernet.space.architecture(random_indices(supernet.space, 2))
    child = supernet.extract_child(arch)
    backbone = tunas_keras.build_backbone(arch, INPUT_SHAPE)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(child.get_layer(layer.name).get_weights())
    expected = backbone(images, training=True)
    features = supernet.features(images, arch, training=True)
    assert sorted(features) == sorted(expected) == ["stride_16", "stride_32", "stride_4", "stride_8"]
    for name, value in expected.items():
        channels = value.shape[-1]
        assert_close_to_scale(features[name][..., :channels], value, 1e-4)
        assert not np.any(features[name][..., channels:].numpy())


def test_zero_init_residual_makes_every_skippable_layer_start_as_skipped(supernets, images):
    supernet = build_supernet("proxyless", NUM_CLASSES, INPUT_SHAPE, zero_init_residual=True)
    space = supernet.space
    smallest, largest = extreme_indices(space)
    skippable = [any(isinstance(choice, specs.Zero) for choice in d.choices) for d in space.decisions]
    all_skipped = [small if skip else large for small, large, skip in zip(smallest, largest, skippable)]
    kept, skipped = space.architecture(largest), space.architecture(all_skipped)
    assert sum(skippable) == 15
    assert_close_to_scale(supernet(images, kept, training=True), supernet(images, skipped, training=True), 1e-5)
    # Without it the residual branches contribute; the child keeps its zero gammas.
    reference = supernets("proxyless")
    difference = reference(images, kept, training=True) - reference(images, skipped, training=True)
    assert float(tf.reduce_max(tf.abs(difference))) > 1e-2
    child = _assert_child_equivalent(supernet, kept, images)
    assert not np.any(child.get_layer("block2_layer1_project_bn").gamma.numpy())


def test_bad_inputs_raise_clear_errors(supernets, images):
    supernet = supernets("proxyless")
    masks = one_hot_masks(supernet.space, [0] * supernet.space.num_decisions)
    with pytest.raises(ValueError, match="Expected a list of 73 mask vectors"):
        supernet(images, masks[:-1])
    with pytest.raises(ValueError, match=r"Expected mask 0 .* of shape \(1,\)"):
        supernet(images, [tf.ones([2])] + masks[1:])
    with pytest.raises(ValueError, match="Invalid value for argument `images`"):
        supernet(images[0], masks)
    with pytest.raises(ValueError, match="Invalid value for argument `images`"):
        supernet(tf.zeros([2, 48, 48, 3]), masks)
    with pytest.raises(ValueError, match="Expected an architecture of space 'proxyless'"):
        supernet.extract_child(tunas_keras.reference_architecture("mobilenet_v2"))
    with pytest.raises(ValueError, match="Invalid value for argument `space`"):
        build_supernet("unknown")
