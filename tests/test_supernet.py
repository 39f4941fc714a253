"""The weight-sharing supernet: equivalence with extracted children, gradients, regularisation, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

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
            keras.utils.set_random_seed(len(cache))  # the same weights in any test order
            cache[key] = build_supernet(space, NUM_CLASSES, INPUT_SHAPE, weight_sharing=weight_sharing)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_normal((BATCH,) + INPUT_SHAPE, seed=[7, 7])


MODES = [("mask", False), ("mask", True), ("slice", False), ("slice", True)]


# Gradients pass through ~50 batch norms, some over 1×1 / 2×2 maps of 8 images: float32 rounding
# differences of 1e-7 between two ways of summing (another kernel, XLA, sliced channels) grow to
# ~1e-4 relative there, so gradients are compared at 1e-3 (logits at 1e-4).
GRADIENT_TOLERANCE = 1e-3


def _close(actual, expected, relative=1e-4):
    """`max|Δ| ≤ relative · max(1, max|expected|)` (float32 sums differ in the last bits across kernels)."""
    assert_close_to_scale(actual, expected, relative)


_FUNCTIONS = {}  # traced once per (supernet, mode): tracing dominates these tests' time


def _logits_fn(supernet, execution, one_hot):
    """The supernet's forward pass as a tf.function with unknown mask values (as in the search)."""
    key = (id(supernet), execution, one_hot)
    if key not in _FUNCTIONS:
        spec = [tf.TensorSpec([count]) for count in supernet.space.num_choices]
        _FUNCTIONS[key] = (
            supernet,
            tf.function(
                lambda images, masks: supernet(
                    images, list(masks), training=True, execution=execution, one_hot=one_hot
                ),
                input_signature=[tf.TensorSpec((None,) + INPUT_SHAPE), spec],
            ),
        )
    return _FUNCTIONS[key][1]


def _assert_child_equivalent(supernet, architecture, images, modes=MODES):
    child = supernet.extract_child(architecture)
    expected = child(images, training=True).numpy()
    assert expected.shape == (BATCH, NUM_CLASSES)
    assert float(np.max(np.abs(expected))) > 1e-2  # Not trivially zero.
    masks = one_hot_masks(supernet.space, architecture)
    for execution, one_hot in modes:
        _close(_logits_fn(supernet, execution, one_hot)(images, masks), expected)
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
    """Refs of the variables of every branch (and unchosen SE) that `architecture` does not select."""
    unselected = set()
    for module in supernet.submodules:
        if isinstance(module, blocks.Choice):
            chosen = module.selection.index(architecture.indices)
            for index, branch in enumerate(module.block.branches):
                if index != chosen:
                    unselected.update(variable.ref() for variable in branch.weights)
        elif isinstance(module, blocks.SqueezeExcite) and module.selection is not None:
            if module.selection.index(architecture.indices) == 0:
                unselected.update(variable.ref() for variable in module.weights)
    return unselected


def _gradients(supernet, images, masks, execution, one_hot):
    labels = tf.range(BATCH) % NUM_CLASSES

    @tf.function
    def gradients(masks):
        with tf.GradientTape() as tape:
            logits = supernet(images, list(masks), training=True, execution=execution, one_hot=one_hot)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += 2e-5 * supernet.regularization_loss(list(masks))
        return tape.gradient(loss, supernet.trainable_variables)

    return [None if grad is None else grad.numpy() for grad in gradients(masks)], gradients


@pytest.mark.parametrize("every_mode", [False, pytest.param(True, marks=SLOW)])
@pytest.mark.parametrize("space_name", SPACES_FAST_FIRST)
def test_gradients_are_equal_across_modes_and_unselected_branches_get_none(supernets, images, space_name, every_mode):
    supernet = supernets(space_name)
    architecture = supernet.space.architecture(random_indices(supernet.space, 11))
    masks = one_hot_masks(supernet.space, architecture)
    unselected = _unselected_variables(supernet, architecture)
    # By default three modes (each a gradient trace of a whole supernet, tens of seconds in CI): the
    # merged one-hot kernels of the 'mask' mode (GPU / TPU) get their gradient check under -m slow.
    modes = MODES if every_mode else [mode for mode in MODES if mode != ("mask", True)]
    results = {mode: _gradients(supernet, images, masks, *mode) for mode in modes}
    reference = results[("mask", False)][0]
    for grads, function in results.values():
        num_selected = 0
        for variable, grad, expected in zip(supernet.trainable_variables, grads, reference):
            if variable.ref() in unselected:
                assert grad is None or not np.any(grad), variable.name
            else:
                num_selected += 1
                assert np.any(grad), variable.name
                _close(grad, expected, GRADIENT_TOLERANCE)
        assert num_selected > 50 and len(unselected) > 50
        # No control flow anywhere in the training graph (forward and backward).
        graph = function.get_concrete_function([tf.TensorSpec([n]) for n in supernet.space.num_choices]).graph
        assert not {op.type for op in graph.get_operations()} & {"If", "StatelessIf", "Case", "StatelessCase"}


def test_fractional_masks_are_the_weighted_sum_of_the_branches_in_every_mode(supernets):
    """One bottleneck's kernel choice under op warmup: Σ_k w_k · branch_k(x), in both executions."""
    supernet = supernets("proxyless")
    choice = next(
        op for op in supernet.submodules if isinstance(op, blocks.Choice) and op.name.endswith("kernel_choice")
    )
    branches = choice.block.branches
    width = branches[0].width.max_value
    features = tf.random.stateless_normal([BATCH, 8, 8, width], seed=[3, 3])
    masks = one_hot_masks(supernet.space, random_indices(supernet.space, 2))
    (position,) = choice.selection.factors
    masks[position] = tf.constant([0.2, 0.3, 0.5])
    for execution in ("mask", "slice"):
        context = supernet._context(supernet._check_masks(masks), execution=execution)  # pylint: disable=protected-access
        if execution == "slice":
            features = features[..., : context.channels(branches[0].width)]
        expected = sum(w * branch(features, context=context) for w, branch in zip((0.2, 0.3, 0.5), branches))
        outputs = choice(features, context=context)
        _close(outputs, expected, 1e-5)
        assert outputs.shape[-1] == (width if execution == "mask" else features.shape[-1])
    assert features.shape[-1] < width  # a masked width: the test means something


@pytest.mark.parametrize("space_name", SPACES_FAST_FIRST)
def test_every_weight_gets_a_gradient_under_full_warmup(supernets, images, space_name):
    supernet = supernets(space_name)
    masks = uniform_masks(supernet.space)
    for execution in ("mask", "slice"):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(supernet(images, masks, training=True, execution=execution)))
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


def _child_kernel_l2(supernet, indices) -> float:
    """Σw² over the extracted child's kernels except the classifier's (the reference's L2 rule)."""
    child = supernet.extract_child(supernet.space.architecture(indices))
    kernels = [w for w in child.trainable_weights if "kernel" in w.name and not w.name.startswith("classifier")]
    assert kernels
    return sum(float(np.sum(np.square(w.numpy()), dtype=np.float64)) for w in kernels)


@pytest.mark.parametrize("space_name", [pytest.param("proxyless_enlarged", marks=SLOW), "mobilenet_v3_like"])
def test_regularization_counts_exactly_the_child_kernels(supernets, space_name):
    supernet = supernets(space_name)
    indices = random_indices(supernet.space, 5)
    expected = _child_kernel_l2(supernet, indices)
    np.testing.assert_allclose(
        float(supernet.regularization_loss(supernet.space.architecture(indices))), expected, rtol=1e-5
    )
    everything = sum(float(np.sum(w.numpy() ** 2)) for w in supernet.trainable_weights if "kernel" in w.name)
    warm = float(supernet.regularization_loss(uniform_masks(supernet.space)))
    assert 0 < warm < everything


def test_regularization_under_op_warmup_weights_each_branch_by_its_mask(supernets):
    """One skippable layer averaged (keep/skip 1/2, kernel 1/3 each): the expected child L2 over those choices."""
    supernet = supernets("proxyless")
    space = supernet.space
    base = list(random_indices(space, 3))
    kernel, keep = 29 + 3, 29 + 5  # block 4, layer 2: kernel and keep/skip positions (cost-model.md §3.1)
    assert space.decisions[kernel].tag == "kernel_size" and space.decisions[keep].tag == "op"
    skipped = _child_kernel_l2(supernet, base[:keep] + [1] + base[keep + 1 :])
    kept = []
    for choice in range(3):
        indices = base[:kernel] + [choice] + base[kernel + 1 :]
        kept.append(_child_kernel_l2(supernet, indices[:keep] + [0] + indices[keep + 1 :]))
    expected = skipped + 0.5 * (np.mean(kept) - skipped)
    masks = one_hot_masks(space, base)
    masks[kernel] = tf.fill([3], 1.0 / 3.0)
    masks[keep] = tf.constant([0.5, 0.5])
    np.testing.assert_allclose(float(supernet.regularization_loss(masks)), expected, rtol=1e-5)
    # The rule this replaced (every active branch counted fully) differs by far more than rounding.
    counted_fully = skipped + sum(value - skipped for value in kept)
    assert abs(counted_fully - expected) > 1e-3 * expected


def test_features_match_the_child_backbone(supernets, images):
    supernet = supernets("mobilenet_v3_like")
    arch = supernet.space.architecture(random_indices(supernet.space, 2))
    child = supernet.extract_child(arch)
    backbone = tunas_keras.build_backbone(arch, INPUT_SHAPE)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(child.get_layer(layer.name).get_weights())
    expected = backbone(images, training=True)
    for execution in ("mask", "slice"):
        features = supernet.features(images, arch, training=True, execution=execution)
        assert sorted(features) == sorted(expected) == ["c4", "c5", "stride_16", "stride_32", "stride_4", "stride_8"]
        for name, value in expected.items():
            channels = value.shape[-1]
            key = int(name[7:]) if name.startswith("stride_") else name
            assert features[name].shape[-1] == supernet._plan.endpoint_widths[key].max_value
            _close(features[name][..., :channels], value)
            assert not np.any(features[name][..., channels:].numpy())
    # Traced with dynamic channel counts ("slice"), the padded features keep their static width.
    one_hot = one_hot_masks(supernet.space, arch)
    traced = tf.function(lambda x, m: supernet.features(x, m, execution="slice")).get_concrete_function(
        tf.TensorSpec((None,) + INPUT_SHAPE), [tf.TensorSpec(mask.shape) for mask in one_hot]
    )
    widths = {name: tensor.shape[-1] for name, tensor in traced.structured_outputs.items()}
    assert widths == {name: features[name].shape[-1] for name in features}


def test_zero_init_residual_makes_every_skippable_layer_start_as_skipped(supernets, images):
    keras.utils.set_random_seed(1)
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


def test_proxyless_stem_separable_convs_are_three_whole_ops(supernets):
    """As the reference: each kernel size has its own depthwise AND its own 1×1 projection."""
    supernet = supernets("proxyless")
    choice = supernet.ops[2]  # stem conv, ReLU, then the separable-conv choice
    assert isinstance(choice, blocks.Choice) and len(choice.block.branches) == 3
    depthwise, projections = zip(*(branch.parts for branch in choice.block.branches))
    assert len({id(project.conv.kernel) for project in projections}) == 3
    assert [op.depthwise.kernel_size for op in depthwise] == [3, 5, 7]


@SLOW  # XLA compiles the whole training step: minutes on 2 CPU cores
def test_mask_execution_compiles_with_xla(supernets, images):
    """The "mask" training step (logits and gradients) under `jit_compile=True` equals the plain graph."""
    supernet = supernets("proxyless")
    masks = one_hot_masks(supernet.space, random_indices(supernet.space, 6))
    for one_hot in (False, True):
        labels = tf.range(BATCH) % NUM_CLASSES

        def step(masks, one_hot=one_hot, labels=labels):
            with tf.GradientTape() as tape:
                logits = supernet(images, list(masks), training=True, execution="mask", one_hot=one_hot)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            return logits, tape.gradient(loss, supernet.trainable_variables)

        compiled, plain = tf.function(step, jit_compile=True)(masks), tf.function(step)(masks)
        _close(compiled[0], plain[0])
        # XLA's CPU batch norm takes the variance in one pass (E[x²] − E[x]²), less exact than
        # TF's kernel; through ~50 batch norms the gradients then differ by up to ~1e-2 of their
        # scale (seen: 2e-4 – 7e-3 over random initialisations). A wrong mask or branch is O(1).
        for grad, expected in zip(compiled[1], plain[1]):
            _close(grad, expected, 3e-2)


def test_get_config_rebuilds_the_same_supernet(supernets):
    supernet = build_supernet("mobilenet_v3_like", NUM_CLASSES, INPUT_SHAPE, zero_init_residual=True, execution="slice")
    config = supernet.get_config()
    assert config["space"] == "mobilenet_v3_like" and config["zero_init_residual"] and config["execution"] == "slice"
    rebuilt = tunas_keras.Supernet.from_config(config)
    rebuilt.build()
    assert rebuilt.execution == "slice" and rebuilt.get_config() == config
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in supernet.weights]
    gammas = [
        norm.gamma.numpy()
        for op in rebuilt.ops
        if isinstance(op, blocks.Residual)
        for norm in op.op.final_batch_norms()
    ]
    assert gammas and not any(np.any(gamma) for gamma in gammas)  # zero_init_residual survived the round trip
    with pytest.raises(ValueError, match="Invalid value for argument `execution`"):
        build_supernet("proxyless", NUM_CLASSES, INPUT_SHAPE, execution="switch")
