"""COCO mAP of a detector through Model Garden's `COCOEvaluator` (pycocotools), offline.

The ground truth comes from the data pipeline (`labels["groundtruths"]`, original image pixels,
COCO category ids) and is passed to `update_state` with the predictions, so no annotation file
is needed. Predictions are decoded at the detector's input size and scaled back to the original
image, so COCO's small / medium / large areas refer to the original pixels.

Quirk kept from `COCOEvaluator`: it scores the images that have predictions; with the score
threshold at 0.01 and `max_detections` slots per image (padded slots have score 0) every image
has some.

    >>> metrics = evaluate_detection(lambda images: detector(images, training=False), data, "valid", 32)
    >>> metrics["AP"], metrics["AP50"]
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable, Optional

import tensorflow as tf
from absl import logging
from official.vision.evaluation.coco_evaluator import COCOEvaluator

from detection.model import DEFAULT_POSTPROCESS, PostprocessConfig, decode_detections, detection_generator

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100")


def to_evaluator_predictions(detections: dict, groundtruths: dict, image_size: int, category_table) -> dict:
    """Decoded detections (input-size pixels, head classes) → the evaluator's prediction dict."""
    scale = tf.cast(tf.stack([groundtruths["height"], groundtruths["width"]] * 2, axis=-1), tf.float32) / image_size
    classes = tf.gather(tf.constant(category_table, tf.int64), tf.cast(detections["detection_classes"], tf.int64))
    return {
        "source_id": groundtruths["source_id"],
        "detection_boxes": detections["detection_boxes"] * scale[:, tf.newaxis, :],
        "detection_classes": classes,
        "detection_scores": detections["detection_scores"],
        "num_detections": detections["num_detections"],
    }


class DetectionEvaluator:
    """COCO box metrics of one detector on one split, as often as asked (training's `eval_every`).

    The decoding (`predict`, NMS, the evaluator's format) is one `tf.function` traced once, at
    the first evaluation, for every batch size: later evaluations reuse it.

    Args:
      predict: `images -> {"scores": ..., "boxes": ...}` (e.g. `lambda x: detector(x, training=False)`).
      data: a `detection.data.DetectionDataset`.
      split: "valid", "test", ...
      batch_size: evaluation batch size.
      max_batches: evaluate on the first batches only.
      postprocess: NMS settings.
    """

    def __init__(
        self,
        predict: Callable,
        data,
        split: str,
        batch_size: int,
        max_batches: Optional[int] = None,
        postprocess: PostprocessConfig = DEFAULT_POSTPROCESS,
    ):
        self.predict, self.data, self.split = predict, data, split
        self.batch_size, self.max_batches, self.postprocess = batch_size, max_batches, postprocess
        self._detect = None

    def _dataset(self) -> tf.data.Dataset:
        dataset = self.data.make(self.split, self.batch_size, training=False, repeat=False)
        return dataset.take(self.max_batches) if self.max_batches else dataset

    def _detect_fn(self, element_spec):
        data, postprocess = self.data, self.postprocess
        generator = detection_generator(postprocess)
        table = data.category_table()
        images_spec, labels_spec = element_spec

        def detect(images, groundtruths):
            detections = decode_detections(
                self.predict(images), data.image_size, postprocess, data.anchor_config, generator=generator
            )
            return to_evaluator_predictions(detections, groundtruths, data.image_size, table)

        return tf.function(detect, input_signature=[images_spec, labels_spec["groundtruths"]])

    def evaluate(self, verbose: bool = False) -> dict:
        """`{"AP": ..., "AP50": ..., ..., "eval_images": n}` (AP in [0, 1], COCO's definitions) of the
        current weights; `verbose` prints pycocotools' summary table."""
        dataset = self._dataset()
        self._detect = self._detect or self._detect_fn(dataset.element_spec)
        evaluator = COCOEvaluator(annotation_file=None, include_mask=False, need_rescale_bboxes=False)
        count = 0
        for images, labels in dataset:
            evaluator.update_state(labels["groundtruths"], self._detect(images, labels["groundtruths"]))
            count += int(images.shape[0])
        if count == 0:
            raise ValueError(f"Invalid evaluation: split {self.split!r} yielded no images.")
        output = io.StringIO()
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # Model Garden logs every conversion step at INFO
        try:
            with contextlib.redirect_stdout(output):  # pycocotools prints its progress and table
                metrics = evaluator.result()
        finally:
            logging.set_verbosity(verbosity)
        if verbose:
            print(output.getvalue())
        result = {name: float(metrics[name]) for name in METRIC_NAMES if name in metrics}
        result["eval_images"] = count
        return result


def evaluate_detection(
    predict: Callable,
    data,
    split: str,
    batch_size: int,
    max_batches: Optional[int] = None,
    postprocess: PostprocessConfig = DEFAULT_POSTPROCESS,
    verbose: bool = False,
) -> dict:
    """COCO box metrics of `predict` on one pass over `split` (see `DetectionEvaluator`).

    Returns:
      `{"AP": ..., "AP50": ..., ..., "eval_images": n}` (AP in [0, 1], COCO's definitions).
    """
    return DetectionEvaluator(predict, data, split, batch_size, max_batches, postprocess).evaluate(verbose)
