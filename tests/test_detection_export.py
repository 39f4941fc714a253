"""TFLite export of a detector: TFLite_Detection_PostProcess runs in LiteRT and matches Keras."""

import json

import numpy as np
import pytest

from detection.export import compare_detections, export_detector
from detection.model import build_detector
from tests.conftest import small_architecture


def _spread_scores(detector, seed: int = 0) -> None:
    """Random class biases: distinct scores, so that NMS order does not hinge on float ties."""
    rng = np.random.default_rng(seed)
    for weight in detector.get_layer("ssdlite_head").weights:
        if "scores" in weight.name and "bias" in weight.name:
            weight.assign(rng.normal(-2.0, 1.5, weight.shape).astype(np.float32))


def test_exported_detector_runs_in_litert_and_matches_keras(tmp_path):
    detector = build_detector(small_architecture(), num_classes=10, input_shape=(64, 64, 3))
    _spread_scores(detector)
    result = export_detector(detector, str(tmp_path / "ssdlite.tflite"), image_size=64, metadata={"source": "test"})
    parity = json.load(open(tmp_path / "ssdlite.parity.json"))
    assert parity == result.parity and parity["source"] == "test"
    assert "TFLite_Detection_PostProcess" in parity["ops"]
    assert parity["num_images"] == 8 and parity["num_detections"] > 8 * 10
    assert parity["count_mismatches"] == 0 and parity["unmatched"] == 0
    assert parity["max_score_diff"] < 1e-4 and parity["max_box_diff"] < 1e-4 and parity["min_matched_iou"] > 0.999
    with pytest.raises(ValueError, match=r"`quantization`. Expected one of \['none', 'fp16', 'dynamic'\]"):
        export_detector(detector, str(tmp_path / "int8.tflite"), image_size=64, quantization="int8")


def test_compare_detections_reports_differences():
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]], np.float32)
    keras = [{"boxes": boxes, "classes": np.array([1, 2]), "scores": np.array([0.9, 0.8], np.float32)}]
    lite = [{"boxes": boxes[::-1] + 0.01, "classes": np.array([2, 1]), "scores": np.array([0.8, 0.85], np.float32)}]
    summary = compare_detections(keras, lite)
    assert summary["unmatched"] == 0 and summary["count_mismatches"] == 0
    assert summary["max_score_diff"] == pytest.approx(0.05) and summary["max_box_diff"] == pytest.approx(0.01)
    lite[0]["classes"] = np.array([3, 1])
    assert compare_detections(keras, lite)["unmatched"] == 1
