"""SSDLite: anchors, head outputs per level, the head's MACs, the detection supernet vs its children."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import detection
import tunas_keras
from detection.anchors import AnchorConfig, feature_sizes, multilevel_anchor_boxes, num_anchors
from detection.cost import head_macs
from detection.model import SSDLiteHead, build_detector, decode_detections
from detection.supernet import build_detection_supernet
from tests.conftest import random_indices, small_architecture
from tunas_keras import masks
from tunas_keras.export import sources

SIDES_320 = {"4": 20, "5": 10, "6": 5, "7": 3, "8": 2, "9": 1}


def test_ssd_anchors_at_320_and_a_small_size():
    config = AnchorConfig()
    assert feature_sizes(320, config.levels) == SIDES_320
    assert config.anchors_per_location() == {"4": 3, "5": 6, "6": 6, "7": 6, "8": 6, "9": 6}
    # 20²·3 + (10² + 5² + 3² + 2² + 1²)·6: the anchor count of SSDLite at 320 px.
    assert num_anchors(320) == detection.num_anchors(320) == 2034
    assert num_anchors(64) == 4 * 4 * 3 + (2 * 2 + 4) * 6 == 96
    boxes = multilevel_anchor_boxes(320)
    assert {level: tuple(value.shape) for level, value in boxes.items()} == {
        level: (side, side, config.anchors_per_location()[level] * 4) for level, side in SIDES_320.items()
    }
    np.testing.assert_allclose(config.scales(), [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0], atol=1e-9)
    # Level 5 (index 1), top-left location: centre (16, 16); 5 ratios at 0.35, then √(0.35·0.5) square.
    first = boxes["5"].numpy()[0, 0].reshape(6, 4)
    heights, widths = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    np.testing.assert_allclose((first[:, :2] + first[:, 2:]) / 2, 16.0, atol=1e-4)
    ratios = np.array([1.0, 2.0, 0.5, 3.0, 1.0 / 3.0, 1.0])
    scales = np.array([0.35] * 5 + [math.sqrt(0.35 * 0.5)])
    np.testing.assert_allclose(widths / heights, ratios, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(widths * heights), scales * 320, rtol=1e-5)
    lowest = boxes["4"].numpy()[0, 0].reshape(3, 4)
    np.testing.assert_allclose(np.sqrt(np.prod(lowest[:, 2:] - lowest[:, :2], axis=1)), [32.0, 64.0, 64.0], rtol=1e-5)


def test_head_output_shapes_per_level_at_320_and_64():
    detector = build_detector("mobilenet_v3_large", num_classes=80)
    counts = AnchorConfig().anchors_per_location()
    for key, per_anchor in (("scores", 81), ("boxes", 4)):
        shapes = {level: tuple(tensor.shape[1:]) for level, tensor in detector.output[key].items()}
        assert shapes == {level: (side, side, counts[level] * per_anchor) for level, side in SIDES_320.items()}
    small = build_detector("mobilenet_v3_large", num_classes=10, input_shape=(64, 64, 3))
    outputs = small(np.zeros((2, 64, 64, 3), np.float32), training=False)
    sides = {"4": 4, "5": 2, "6": 1, "7": 1, "8": 1, "9": 1}
    assert {level: tuple(value.shape) for level, value in outputs["scores"].items()} == {
        level: (2, side, side, counts[level] * 11) for level, side in sides.items()
    }
    detections = decode_detections(outputs, 64)
    assert tuple(detections["detection_boxes"].shape) == (2, 100, 4)
    # The backbone reads C4 = block 5's first expansion (672) at stride 16 and C5 = the 960 conv.
    head = small.get_layer("ssdlite_head")
    assert [tuple(shape[1:]) for shape in (head.input["c4"].shape, head.input["c5"].shape)] == [
        (4, 4, 672),
        (2, 2, 960),
    ]
    config = head.get_config()
    assert SSDLiteHead.from_config(config).get_config() == config


def _weights_macs(head, image_size: int) -> int:
    """MACs from the head's own kernels and the known map sizes (independent of `head_macs`)."""
    sides = feature_sizes(image_size, AnchorConfig().levels)
    total = 0
    for layers, level, previous in zip(head.extra_blocks, ["6", "7", "8", "9"], ["5", "6", "7", "8"], strict=True):
        reduce, _, depthwise, _, expand, _ = layers
        total += sides[previous] ** 2 * int(np.prod(reduce.kernel.shape))
        total += sides[level] ** 2 * (
            int(np.prod(depthwise.depthwise_kernel.shape)) + int(np.prod(expand.kernel.shape))
        )
    predictors = head.predictor._classifier + head.predictor._box_regressor  # pylint: disable=protected-access
    for layer in predictors:
        level = layer.name.rsplit("-", 1)[-1]
        weights = int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape))
        total += sides[level] ** 2 * weights
    return total


def test_head_macs_formula_matches_the_built_head():
    detector = build_detector("mobilenet_v3_large", num_classes=80)
    head = detector.get_layer("ssdlite_head")
    assert head_macs(672, 960, 320, 80) == _weights_macs(head, 320)
    # MobileNetV3-Large + SSDLite has ~0.6 G MACs (Howard et al. 2019, Table 6: 0.62 B MAdds).
    total = tunas_keras.count_network("mobilenet_v3_large", input_shape=(320, 320, 3)).macs + head_macs(
        672, 960, 320, 80
    )
    assert 0.55e9 < total < 0.65e9


def _assert_close_per_level(expected: dict, received: dict):
    for key in ("scores", "boxes"):
        for level, value in expected[key].items():
            scale = float(tf.reduce_max(tf.abs(value)))
            np.testing.assert_allclose(received[key][level], value, atol=1e-4 * scale)


def test_detection_supernet_children_equal_their_standalone_detectors():
    supernet = build_detection_supernet("mobilenet_v3_like", num_classes=3, input_shape=(32, 32, 3), execution="slice")
    assert supernet.endpoint_channels == {"c4": 1536, "c5": 1024}  # the largest widths: 256 × 6 and 1024
    images = tf.random.stateless_normal((4, 32, 32, 3), seed=[3, 4])
    architecture = supernet.space.architecture(random_indices(supernet.space, 1))
    child = supernet.extract_child(architecture)
    expected = child(images, training=True)
    one_hot = masks.one_hot_masks(supernet.space, architecture)
    for execution, promise in (("slice", True), ("slice", False), ("mask", True)):
        received = supernet(images, one_hot, training=True, one_hot=promise, execution=execution)
        _assert_close_per_level(expected, received)
    # Traced in the "slice" execution, the head still sees static C4 / C5 widths (zero-padded features).
    traced = tf.function(lambda x, m: supernet.head_inputs(x, m, one_hot=True)).get_concrete_function(
        tf.TensorSpec((None, 32, 32, 3)), [tf.TensorSpec(mask.shape) for mask in one_hot]
    )
    assert [tensor.shape[-1] for tensor in tf.nest.flatten(traced.structured_outputs)] == [1536, 1024]
    # The public endpoints: C4 / C5 of the supernet are the child backbone's, zero-padded.
    backbone = tunas_keras.build_backbone(architecture, (32, 32, 3))
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(child.get_layer(layer.name).get_weights())
    endpoints = backbone(images, training=True)
    features = supernet.head_inputs(images, architecture)
    for name in ("c4", "c5"):
        channels = endpoints[name].shape[-1]
        assert channels < features[name].shape[-1]  # a child narrower than the supernet
        np.testing.assert_allclose(features[name][..., :channels], endpoints[name], atol=1e-4)
        assert not np.any(features[name][..., channels:].numpy())
    # The supernet's L2: the backbone's active kernels + every head kernel.
    head = sum(float(np.sum(np.square(w.numpy()))) for w in supernet.head.trainable_weights if "kernel" in w.name)
    penalty = float(supernet.regularization_loss(one_hot))
    assert penalty == pytest.approx(float(supernet.backbone.regularization_loss(one_hot)) + head, rel=1e-5)


def test_detector_weights_round_trip_through_the_weights_file(tmp_path):
    """Every weight, the head's extra layers included, survives `model.weights.h5` (what train writes)."""
    keras.utils.set_random_seed(1)
    architecture = small_architecture()
    trained = build_detector(architecture, num_classes=3, input_shape=(64, 64, 3))
    path = str(tmp_path / "model.weights.h5")
    trained.save_weights(path)
    keras.utils.set_random_seed(2)  # other initial values
    loaded = build_detector(architecture, num_classes=3, input_shape=(64, 64, 3))
    sources.load_weights(loaded, path)
    assert len(loaded.weights) == len(trained.weights)
    for expected, received in zip(trained.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(received.numpy(), expected.numpy(), err_msg=expected.name)


def test_bad_detector_arguments():
    with pytest.raises(ValueError, match=r"`num_classes`. Expected an int >= 1. Received: 0"):
        build_detector("mobilenet_v2", num_classes=0, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match=r"`anchors_per_location`"):
        SSDLiteHead(3, {"4": 3, "5": 6})
    with pytest.raises(ValueError, match=r"`image_size`. Expected a positive int"):
        multilevel_anchor_boxes(0)
