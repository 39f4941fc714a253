"""TFLite export of an SSDLite detector with TFLite's detection post-processing op.

The exported graph is the detector at batch 1 followed by Model Garden's
`MultilevelDetectionGenerator(nms_version="tflite")`: decoding of the box offsets against the
(normalised) anchors and fast class-agnostic NMS run inside one `TFLite_Detection_PostProcess`
op, which LiteRT ships. Model Garden marks that op with `experimental_implements`, which the
converter only legalises from a SavedModel (from a concrete function it inlines the dummy body
and the outputs become constants), so the export goes through a temporary SavedModel.

The background column is dropped before the op (its class 0 would otherwise compete in the
per-anchor maximum): the op's classes 0 … K-1 are the detector's classes 1 … K. Outputs, by
signature name: `detection_boxes` (1, N, 4) normalised `ymin, xmin, ymax, xmax`,
`detection_classes` (1, N), `detection_scores` (1, N), `num_detections` (1,).

Parity: on a batch of images, the LiteRT detections are matched to the Keras model's, decoded by
the same generator with class-agnostic NMS v2 and no clipping (the op does not clip), image by
image: same count, same classes, scores and boxes equal to a small tolerance.

    >>> result = export_detector(detector, "/tmp/ssdlite.tflite", image_size=320)
    >>> result.parity["max_score_diff"], result.parity["ops"]
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf
from official.vision.modeling.layers.detection_generator import MultilevelDetectionGenerator

from detection.anchors import SSD_ANCHORS, AnchorConfig, multilevel_anchor_boxes
from detection.model import BOX_CODER_WEIGHTS, DEFAULT_POSTPROCESS, PostprocessConfig, decode_detections
from tunas_keras.export import tflite
from tunas_keras.training.trainer import write_atomic

OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
EXPORT_QUANTIZATIONS = ("none", "fp16", "dynamic")
POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def _without_background(scores: dict, boxes: dict) -> dict:
    """Per-level logits without the background column of every anchor."""
    result = {}
    for level, logits in scores.items():
        anchors = boxes[level].shape[-1] // 4
        shape = tf.shape(logits)
        per_anchor = tf.reshape(logits, [shape[0], shape[1], shape[2], anchors, -1])[..., 1:]
        result[level] = tf.reshape(per_anchor, [shape[0], shape[1], shape[2], -1])
    return result


def tflite_generator(image_size: int, config: PostprocessConfig) -> MultilevelDetectionGenerator:
    """The generator whose `tflite` path becomes `TFLite_Detection_PostProcess`."""
    return MultilevelDetectionGenerator(
        nms_version="tflite",
        box_coder_weights=list(BOX_CODER_WEIGHTS),
        tflite_post_processing_config={
            "max_detections": config.max_detections,
            "max_classes_per_detection": 1,
            "use_regular_nms": False,
            "nms_score_threshold": config.score_threshold,
            "nms_iou_threshold": config.iou_threshold,
            "normalize_anchor_coordinates": True,
            "input_image_size": [image_size, image_size],
        },
    )


def check_quantization(quantization: str) -> str:
    """`quantization` if a detector can be exported with it; a ValueError naming the argument otherwise."""
    if quantization not in EXPORT_QUANTIZATIONS:
        raise ValueError(
            f"Invalid value for argument `quantization`. Expected one of {list(EXPORT_QUANTIZATIONS)} for a detector "
            f"(int8 with the post-processing op is not supported yet). Received: quantization={quantization!r}"
        )
    return quantization


def convert_detector(
    model,
    image_size: int,
    config: PostprocessConfig = DEFAULT_POSTPROCESS,
    anchor_config=SSD_ANCHORS,
    quantization: str = "none",
) -> bytes:
    """The `.tflite` flatbuffer of a detector with the post-processing op (see the module docstring)."""
    check_quantization(quantization)
    anchors = multilevel_anchor_boxes(image_size, anchor_config)
    generator = tflite_generator(image_size, config)
    signature = tf.TensorSpec((1, image_size, image_size, 3), tf.float32, name="images")

    @tf.function(input_signature=[signature])
    def detect(images):
        outputs = model(images, training=False)
        detections = generator(
            outputs["boxes"], _without_background(outputs["scores"], outputs["boxes"]), anchors, None
        )
        return {name: detections[name] for name in OUTPUT_NAMES}

    # Track the variables only: saving the Keras model itself would serialise every layer's call
    # function (a minute on a CPU) for nothing the converter needs.
    module = tf.Module()
    module.variables_to_save = list(model.variables)
    with tempfile.TemporaryDirectory() as directory:
        tf.saved_model.save(module, directory, signatures={"serving_default": detect.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        tflite.get_quantization(quantization).setup(converter, None)
        return converter.convert()


def run_tflite_detector(model_content: bytes, images: np.ndarray) -> list:
    """LiteRT detections of each image: `[{"boxes": (n, 4) normalised, "classes": (n,) 1 … K, "scores"}]`."""
    interpreter = tflite.make_interpreter(model_content)
    runner = interpreter.get_signature_runner("serving_default")
    results = []
    for image in np.asarray(images, np.float32):
        outputs = runner(images=image[np.newaxis])
        count = int(outputs["num_detections"][0])
        results.append(
            {
                "boxes": outputs["detection_boxes"][0, :count],
                "classes": outputs["detection_classes"][0, :count].astype(np.int64) + 1,
                "scores": outputs["detection_scores"][0, :count],
            }
        )
    return results


def keras_detections(model, images, image_size, config=DEFAULT_POSTPROCESS, anchor_config=SSD_ANCHORS) -> list:
    """The Keras model's detections decoded as the TFLite op does (class-agnostic, unclipped)."""
    outputs = model(np.asarray(images, np.float32), training=False)
    decoded = decode_detections(outputs, image_size, config, anchor_config, class_agnostic=True, clip=False)
    results = []
    for index in range(len(images)):
        count = int(decoded["num_detections"][index])
        results.append(
            {
                "boxes": decoded["detection_boxes"][index, :count].numpy() / image_size,
                "classes": decoded["detection_classes"][index, :count].numpy().astype(np.int64),
                "scores": decoded["detection_scores"][index, :count].numpy(),
            }
        )
    return results


def _pair_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=-1)
    areas = [np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=-1) for boxes in (first, second)]
    return intersection / np.maximum(areas[0][:, None] + areas[1][None, :] - intersection, 1e-12)


def compare_detections(expected: list, received: list) -> dict:
    """Matches each image's detections (same class, best IoU) and summarises the differences.

    Returns:
      `{"num_images", "num_detections" (Keras), "count_mismatches", "unmatched", "max_score_diff",
      "max_box_diff", "min_matched_iou"}` over the batch.
    """
    summary = {"num_images": len(expected), "num_detections": 0, "count_mismatches": 0, "unmatched": 0}
    score_diffs, box_diffs, ious = [0.0], [0.0], [1.0]
    for keras_image, lite_image in zip(expected, received, strict=True):
        summary["num_detections"] += len(keras_image["scores"])
        summary["count_mismatches"] += int(len(keras_image["scores"]) != len(lite_image["scores"]))
        overlaps = _pair_iou(lite_image["boxes"], keras_image["boxes"])
        overlaps[lite_image["classes"][:, None] != keras_image["classes"][None, :]] = -1.0
        taken = set()
        for row in np.argsort(-lite_image["scores"], kind="stable"):
            order = [
                column for column in np.argsort(-overlaps[row]) if column not in taken and overlaps[row, column] >= 0
            ]
            if not order:
                summary["unmatched"] += 1
                continue
            column = order[0]
            taken.add(column)
            ious.append(float(overlaps[row, column]))
            score_diffs.append(abs(float(lite_image["scores"][row] - keras_image["scores"][column])))
            box_diffs.append(float(np.abs(lite_image["boxes"][row] - keras_image["boxes"][column]).max()))
    summary.update(max_score_diff=max(score_diffs), max_box_diff=max(box_diffs), min_matched_iou=min(ious))
    return summary


def export_detector(
    model,
    output_path: str,
    image_size: int,
    config: PostprocessConfig = DEFAULT_POSTPROCESS,
    anchor_config: AnchorConfig = SSD_ANCHORS,
    parity_images: Optional[np.ndarray] = None,
    quantization: str = "none",
    metadata: Optional[dict] = None,
) -> tflite.ExportResult:
    """Converts a detector, checks parity on `parity_images` and writes `.tflite` + `.parity.json`.

    Args:
      model: a detector from `detection.build_detector` (trained weights loaded).
      output_path: the `.tflite` path (its directory must exist).
      image_size: its input size.
      config: NMS settings of the exported op.
      anchor_config: the anchors it was trained with.
      parity_images: `(n, s, s, 3)` normalised images (default: a fixed synthetic batch of 8).
      quantization: "none", "fp16" or "dynamic".
      metadata: extra JSON fields for the parity file.
    """
    tflite.check_output_path(output_path)
    content = convert_detector(model, image_size, config, anchor_config, quantization)
    images = parity_images if parity_images is not None else tflite.fixed_parity_images((image_size, image_size, 3), 8)
    parity = {
        "format_version": tflite.PARITY_FORMAT_VERSION,
        "model": os.path.basename(output_path),
        "quantization": quantization,
        **compare_detections(
            keras_detections(model, images, image_size, config, anchor_config), run_tflite_detector(content, images)
        ),
        "ops": sorted(set(tflite.tflite_op_names(content))),
        **(metadata or {}),
    }
    write_atomic(output_path, content)
    parity_path = tflite.parity_path_for(output_path)
    try:
        write_atomic(parity_path, json.dumps(parity, indent=2))
    except BaseException:
        os.remove(output_path)  # A model without its parity report is a half-finished export.
        raise
    return tflite.ExportResult(output_path, parity_path, parity, len(content))
