"""Standalone builder and counters: parameter counts, MACs, shapes, endpoints."""

import numpy as np
import pytest
import tf_keras as keras

import tunas_keras
from tests.conftest import REFERENCE_NAMES, random_indices
from tests.harness import check_gradients_reach
from tunas_keras import registry, specs
from tunas_keras.cost_models.sampling import extreme_indices
from tunas_keras.layers.common import DepthwiseHeNormal
from tunas_keras.models import standalone
from tunas_keras.models.standalone import resolve_network

# Pinned with 1001 classes. MobileNetV2 and MobileNetV3-Large equal tf_keras.applications
# (checked by the slow test below); the others are our own numbers.
PARAMS_1001 = {
    "mobilenet_v2": 3_540_265,
    "mobilenet_v3_large": 5_508_713,
    "proxylessnas_mobile": None,
    "mnasnet_b1": None,
}


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_models_build_and_give_logits(name):
    model = tunas_keras.build_model(name, num_classes=7, input_shape=(32, 32, 3))
    logits = model(np.zeros((2, 32, 32, 3), np.float32))
    assert logits.shape == (2, 7)
    assert model.count_params() == tunas_keras.count_network(name, num_classes=7, input_shape=(32, 32, 3)).params


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_every_weight_of_a_reference_model_gets_a_gradient(name):
    model = tunas_keras.build_model(name, num_classes=5, input_shape=(32, 32, 3))
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    # Inference mode: with batch statistics, the beta of a batch norm whose output only feeds
    # linear convs and further batch norms gets an exactly-zero gradient (the next batch norm
    # removes any per-channel shift), which is not a disconnected weight.
    check_gradients_reach(model, images, {"training": False})


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "proxylessnas_mobile", "mnasnet_b1"])
def test_parameter_counts_1001_classes(name):
    counts = tunas_keras.count_network(name)
    model = tunas_keras.build_model(name)
    assert model.count_params() == counts.params
    if PARAMS_1001[name] is not None:
        assert counts.params == PARAMS_1001[name]


def test_pinned_parameter_counts():
    assert tunas_keras.count_network("proxylessnas_mobile").params == PROXYLESSNAS_MOBILE_PARAMS
    assert tunas_keras.count_network("mnasnet_b1").params == MNASNET_B1_PARAMS
    assert 4.0e6 < PROXYLESSNAS_MOBILE_PARAMS < 4.2e6
    assert 4.3e6 < MNASNET_B1_PARAMS < 4.5e6


PROXYLESSNAS_MOBILE_PARAMS = 4_116_289
MNASNET_B1_PARAMS = 4_422_513


@pytest.mark.parametrize("name, expected", [("mobilenet_v2", 300e6), ("mobilenet_v3_large", 217e6)])
def test_macs_at_224(name, expected):
    macs = tunas_keras.count_network(name).macs
    assert abs(macs / expected - 1) < 0.03, macs


def test_analytic_macs_equal_keras_walk():
    for name in ("mobilenet_v2", "mobilenet_v3_large", "mnasnet_b1"):
        model = tunas_keras.build_model(name, num_classes=10, input_shape=(64, 64, 3))
        assert tunas_keras.count_model_macs(model) == tunas_keras.count_network(name, 10, (64, 64, 3)).macs


def test_reference_name_and_architecture_are_the_same_network():
    # Same resolved spec, so `build_model(name)` and `build_model(architecture)` build the same model.
    points = 0
    for name in REFERENCE_NAMES:
        reference = registry.get_reference(name)
        if reference.indices is None:
            continue
        for space in reference.spaces:
            try:
                arch = tunas_keras.reference_architecture(name, space=space)
            except ValueError:
                continue  # not a point of this space (e.g. MobileNetV2's widths in `proxyless`)
            assert resolve_network(arch) == resolve_network(name), (name, space)
            points += 1
    assert points >= 6  # every genotype reference in at least one space; ProxylessNAS-Mobile in both
    by_name = tunas_keras.build_model("proxylessnas_mobile", num_classes=10, input_shape=(32, 32, 3))
    by_arch = tunas_keras.build_model(
        tunas_keras.reference_architecture("proxylessnas_mobile", space="proxyless_enlarged"), 10, (32, 32, 3)
    )
    assert [w.shape for w in by_arch.weights] == [w.shape for w in by_name.weights]
    assert [layer.name for layer in by_arch.layers] == [layer.name for layer in by_name.layers]


def test_random_architecture_of_each_space_builds(space):
    arch = space.architecture(random_indices(space, seed=3))
    model = tunas_keras.build_model(arch, num_classes=5, input_shape=(32, 32, 3))
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 5)
    assert model.count_params() == tunas_keras.count_network(arch, 5, (32, 32, 3)).params


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_models_build_at_224(name):
    model = tunas_keras.build_model(name, num_classes=1001)
    assert model(np.zeros((1, 224, 224, 3), np.float32)).shape == (1, 1001)


def test_largest_architectures_build_at_224(space):
    arch = space.architecture([count - 1 for count in space.num_choices])
    model = tunas_keras.build_model(arch, num_classes=1001)
    assert model.output_shape == (None, 1001)


def test_endpoints_of_the_backbone():
    backbone = tunas_keras.build_backbone("proxylessnas_mobile", input_shape=(64, 64, 3))
    shapes = {name: tuple(tensor.shape[1:]) for name, tensor in backbone.output.items()}
    assert shapes == {
        "stride_4": (16, 16, 32),
        "stride_8": (8, 8, 40),
        "stride_16": (4, 4, 96),
        "stride_32": (2, 2, 320),
        "c4": (4, 4, 576),
        "c5": (2, 2, 1280),  # C4: block 6's first expansion (96 × 6), C5: the head conv
    }
    assert backbone.output["c4"].node.layer.name == "block6_layer0_expand_act"
    v3 = tunas_keras.build_backbone("mobilenet_v3_large", input_shape=(64, 64, 3))
    assert {name: tuple(tensor.shape[1:]) for name, tensor in v3.output.items()} == {
        "stride_4": (16, 16, 24),
        "stride_8": (8, 8, 40),
        "stride_16": (4, 4, 112),
        "stride_32": (2, 2, 160),
        "c4": (4, 4, 672),
        "c5": (2, 2, 960),  # as in MobileNetV3's SSDLite (Howard et al. 2019, §6.2)
    }


def test_initialisers_and_batch_norm():
    model = tunas_keras.build_model("mobilenet_v2", num_classes=1001, input_shape=(32, 32, 3))
    depthwise = model.get_layer("block2_layer0_depthwise")
    assert isinstance(depthwise.depthwise_initializer, DepthwiseHeNormal)
    kernel = DepthwiseHeNormal(seed=1)((7, 7, 512, 1)).numpy()
    assert abs(kernel.std() / np.sqrt(2 / 49) - 1) < 0.03  # fan-in = kh·kw, not kh·kw·channels
    batch_norm = model.get_layer("block2_layer0_expand_bn")
    assert (batch_norm.momentum, batch_norm.epsilon) == (0.99, 1e-3)
    classifier = model.get_layer("classifier")
    assert classifier.kernel_initializer.stddev == 0.01
    assert isinstance(model.get_layer("block0_layer0_conv").kernel_initializer, keras.initializers.HeNormal)


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "largest_proxyless"])
def test_zero_init_residual_starts_every_residual_block_as_identity(name):
    space = tunas_keras.get_search_space("proxyless")
    architecture = space.architecture(extreme_indices(space)[1]) if name == "largest_proxyless" else name
    model = tunas_keras.build_model(architecture, 10, (32, 32, 3), zero_init_residual=True)
    reference = tunas_keras.build_model(architecture, 10, (32, 32, 3))
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    network = resolve_network(architecture)
    residuals = [layer for block in network.blocks for layer in block.layers if isinstance(layer, specs.Residual)]
    assert len(adds) == len(residuals) == {"largest_proxyless": 15, "mobilenet_v3_large": 10}[name]
    for add in adds:
        branch_end = add._inbound_nodes[0].inbound_layers[1]  # pylint: disable=protected-access
        assert not np.any(branch_end.gamma.numpy())
        assert np.all(reference.get_layer(branch_end.name).gamma.numpy() == 1.0)
    zeroed = {add._inbound_nodes[0].inbound_layers[1].name for add in adds}  # pylint: disable=protected-access
    other = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(np.all(layer.gamma.numpy() == 1.0) for layer in other if layer.name not in zeroed)
    probe = keras.Model(model.input, [[add.input[0], add.output] for add in adds])
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    for shortcut, output in probe(images, training=True):
        np.testing.assert_array_equal(output, shortcut)


def test_bad_input_to_build_model():
    with pytest.raises(ValueError, match=r"Expected one of .*mobilenet_v2.*Received: name='resnet50'"):
        tunas_keras.build_model("resnet50")
    with pytest.raises(ValueError, match=r"`input_shape`.*Received: input_shape=\(32, 32\)"):
        tunas_keras.build_model("mobilenet_v2", input_shape=(32, 32))
    with pytest.raises(ValueError, match=r"`num_classes`.*Received: 0"):
        tunas_keras.build_model("mobilenet_v2", num_classes=0)
    with pytest.raises(ValueError, match=r"`dropout_rate`.*Received: 1.5"):
        tunas_keras.build_model("mobilenet_v2", dropout_rate=1.5)


def test_parameter_counts_equal_keras_applications():
    reference_v2 = keras.applications.MobileNetV2(weights=None, classes=1001, input_shape=(224, 224, 3))
    assert reference_v2.count_params() == 3_540_265 == tunas_keras.count_network("mobilenet_v2").params
    reference_v3 = keras.applications.MobileNetV3Large(
        weights=None, classes=1001, include_preprocessing=False, input_shape=(224, 224, 3)
    )
    # Same structure as ours (Keras gates squeeze-excite with a hard sigmoid, we with a sigmoid:
    # no parameters either way), so the counts agree exactly.
    assert reference_v3.count_params() == 5_508_713 == tunas_keras.count_network("mobilenet_v3_large").params
    assert abs(tunas_keras.count_model_macs(reference_v2) / tunas_keras.count_network("mobilenet_v2").macs - 1) < 0.01


@pytest.mark.parametrize(
    "argument, value",
    [
        ("input_shape", (32, 32)),
        ("input_shape", (32, 0, 3)),
        ("input_shape", (32, 32.0, 3)),
        ("input_shape", 32),
        ("num_classes", 0),
        ("num_classes", True),
        ("num_classes", 2.0),
        ("dropout_rate", 1.0),
        ("dropout_rate", -0.1),
        ("dropout_rate", "0.1"),
    ],
)
def test_builder_arguments_are_checked(argument, value):
    with pytest.raises(ValueError, match=rf"Invalid value for argument `{argument}`. Expected .* Received: "):
        tunas_keras.build_model("mobilenet_v2", **{"input_shape": (32, 32, 3), argument: value})


def test_squeeze_excite_width_is_the_mobilenet_v3_formula():
    # MobileNetV3-Large's SE widths: a quarter of the expanded width, rounded to 8 (never 10 % down).
    assert [specs.squeeze_excite_filters(inner) for inner in (72, 120, 480, 672, 960)] == [24, 32, 120, 168, 240]


def test_kernel_weights_are_the_conv_depthwise_and_dense_kernels():
    model = tunas_keras.build_model("mobilenet_v3_large", num_classes=5, input_shape=(32, 32, 3))
    kinds = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            kinds[type(layer)] = kinds.get(type(layer), 0) + 1
    kernels = standalone.kernel_weights(model)
    assert len(kernels) == sum(kinds.values())  # one kernel per conv, depthwise and dense layer
    assert all(variable.trainable and "bias" not in variable.name for variable in kernels)
