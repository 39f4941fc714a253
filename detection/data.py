"""Detection data: the SSD input pipeline on top of the classification one, and its sources.

A source yields one dict per image (`_examples`) and turns it into a standard form
(`_standardize`): a `uint8` image, normalised `ymin, xmin, ymax, xmax` boxes, head classes
1 … num_classes, crowd flags, an image id and the original size. `DetectionDataset.make` (the
tf.data pipeline of `tunas_keras.datasets.ImageDataset`: sharding, shuffling, stateless
per-element seeds, batching) then applies:

- training: SSD's random crop (one of "whole image" or "the crop covers at least {0.1, 0.3,
  0.5, 0.7, 0.9} of some box", aspect ratio in [1/2, 2], area in [0.1, 1]; boxes whose centre
  leaves the crop are dropped, the others clipped; crowd boxes are not trained on) and a
  horizontal flip; evaluation: the whole image;
- a bilinear resize to `image_size` × `image_size` and the backbone's ImageNet normalisation;
- anchor targets from Model Garden's `AnchorLabeler` (IoU ≥ 0.5 positive, < 0.5 negative,
  every box matched to its best anchor) with SSD's box coder;
- the ground truth for `COCOEvaluator` in original image pixels, padded to `max_instances`.

Each element is `(images, labels)` with `labels = {"cls_targets": {level: ...}, "box_targets":
{level: ...}, "cls_weights", "box_weights", "groundtruths": {...}}`.

The random crop is written here rather than taken from Model Garden
(`preprocess_ops.random_crop_image_with_boxes_and_labels`) because that one draws from stateful
random ops; ours uses `tf.image.stateless_sample_distorted_bounding_box` keyed per element, so a
resumed run sees the same augmentation as an uninterrupted one (the trainer's contract).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from official.vision.ops import anchor as anchor_ops
from official.vision.ops import box_ops, preprocess_ops

from detection.anchors import SSD_ANCHORS, multilevel_anchor_boxes
from detection.model import BOX_CODER_WEIGHTS
from tunas_keras.datasets.base import ImageDataset
from tunas_keras.datasets.preprocessing import normalize

MIN_COVERED_CHOICES = (0.1, 0.3, 0.5, 0.7, 0.9)  # plus "no crop" (SSD's sampler)
CROP_ASPECT_RATIO_RANGE = (0.5, 2.0)
CROP_AREA_RANGE = (0.1, 1.0)
CROP_MAX_ATTEMPTS = 50
MATCH_THRESHOLD = 0.5
UNMATCHED_THRESHOLD = 0.5


def sort_box_corners(boxes: tf.Tensor) -> tf.Tensor:
    """`ymin ≤ ymax`, `xmin ≤ xmax` for every box, clipped to [0, 1] (TFDS mocks are unordered)."""
    ys, xs = (
        tf.sort(tf.stack([boxes[:, 0], boxes[:, 2]], -1), -1),
        tf.sort(tf.stack([boxes[:, 1], boxes[:, 3]], -1), -1),
    )
    return tf.clip_by_value(tf.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], -1), 0.0, 1.0)


def _crop_window(image: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A normalised crop window `[y0, x0, y1, x1]` drawn as SSD's sampler (module docstring)."""
    choice_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(MIN_COVERED_CHOICES) + 1, tf.int32)
    min_covered = tf.gather(tf.constant(MIN_COVERED_CHOICES + (0.0,), tf.float32), choice)
    shape = tf.shape(image)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=boxes[tf.newaxis],
        seed=box_seed,
        min_object_covered=min_covered,
        aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE,
        max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    begin, size = tf.cast(begin, tf.float32), tf.cast(size, tf.float32)
    window = tf.stack(
        [begin[0] / height, begin[1] / width, (begin[0] + size[0]) / height, (begin[1] + size[1]) / width]
    )
    return tf.where(choice == len(MIN_COVERED_CHOICES), tf.constant([0.0, 0.0, 1.0, 1.0]), window)


def random_crop_with_boxes(image, boxes, classes, seed):
    """SSD's random crop of an image and its boxes (normalised coordinates).

    Returns:
      The cropped `uint8` image, the boxes in crop coordinates (centre inside, clipped) and their
      classes.
    """
    window = _crop_window(image, boxes, seed)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    top_left = tf.cast(tf.round(window[:2] * shape), tf.int32)
    crop_size = tf.maximum(tf.cast(tf.round((window[2:] - window[:2]) * shape), tf.int32), 1)
    cropped = tf.slice(image, tf.concat([top_left, [0]], 0), tf.concat([crop_size, [-1]], 0))
    scale = tf.tile(window[2:] - window[:2], [2])
    moved = (boxes - tf.tile(window[:2], [2])) / scale
    centres = (moved[:, :2] + moved[:, 2:]) / 2.0
    inside = tf.reduce_all((centres > 0.0) & (centres < 1.0), axis=-1)
    moved = tf.clip_by_value(tf.boolean_mask(moved, inside), 0.0, 1.0)
    return cropped, moved, tf.boolean_mask(classes, inside)


def random_flip_with_boxes(image, boxes, seed):
    """Stateless horizontal flip of an image and its normalised boxes (probability 1/2)."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: preprocess_ops.horizontal_flip_image(image), lambda: image)
    boxes = tf.cond(flip, lambda: box_ops.horizontal_flip_boxes(boxes), lambda: boxes)
    return image, boxes


class DetectionDataset(ImageDataset):
    """An object-detection dataset with the TuNAS splits (see the module docstring).

    Subclasses implement `num_examples`, `_examples` and `_standardize`.

    Attributes:
      num_classes: object classes (the detector adds background).
      category_ids: COCO category id of head class k at position k - 1 (for the evaluator).
      max_instances: ground-truth boxes kept per image for evaluation.
      anchor_config: the SSD anchor scheme.
    """

    def __init__(self, name, num_classes, image_size, category_ids, max_instances, anchor_config=SSD_ANCHORS):
        super().__init__(name, num_classes=num_classes, image_size=image_size)
        if len(category_ids) != num_classes:
            raise ValueError(f"Expected {num_classes} category ids. Received: {len(category_ids)}")
        self.category_ids = tuple(int(value) for value in category_ids)
        self.max_instances = int(max_instances)
        self.anchor_config = anchor_config
        self.labeler = anchor_ops.AnchorLabeler(MATCH_THRESHOLD, UNMATCHED_THRESHOLD, list(BOX_CODER_WEIGHTS))

    @functools.cached_property
    def anchor_boxes(self) -> dict:
        """The anchors of the targets (made at first use: creating a dataset runs no TensorFlow op, so
        the tools can still set TensorFlow's threads after validating). Eager constants, also when the
        first use is inside a traced function (the pipeline's map)."""
        with tf.init_scope():
            return multilevel_anchor_boxes(self.image_size, self.anchor_config)

    def _standardize(self, example) -> dict:
        """`{"image": uint8 [h, w, 3], "boxes": [n, 4] normalised, "classes": int32 [n] in 1 … num_classes,
        "is_crowd": bool [n], "source_id": int64, "height": int32, "width": int32}`."""
        raise NotImplementedError

    def _preprocess_fn(self, training: bool, seed: int, pipeline_id: int):
        base_seed = tf.constant([seed, pipeline_id], tf.int64)

        def preprocess(index, example):
            example = self._standardize(example)
            image, boxes, classes = example["image"], example["boxes"], example["classes"]
            groundtruths = self._groundtruths(example)
            if training:
                element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
                crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))
                keep = tf.logical_not(example["is_crowd"])
                boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
                image, boxes, classes = random_crop_with_boxes(image, boxes, classes, crop_seed)
                image, boxes = random_flip_with_boxes(image, boxes, flip_seed)
            size = self.image_size
            image = tf.image.resize(image, [size, size], method="bilinear")
            image = tf.ensure_shape(normalize(tf.clip_by_value(image, 0.0, 255.0)), [size, size, 3])
            labels = self._anchor_targets(boxes * float(size), classes)
            labels["groundtruths"] = groundtruths
            return image, labels

        return preprocess

    def _anchor_targets(self, pixel_boxes, classes) -> dict:
        cls_targets, box_targets, _, cls_weights, box_weights = self.labeler.label_anchors(
            self.anchor_boxes, pixel_boxes, tf.cast(classes, tf.int32)[:, tf.newaxis]
        )
        return {
            "cls_targets": cls_targets,
            "box_targets": box_targets,
            "cls_weights": cls_weights,
            "box_weights": box_weights,
        }

    def _groundtruths(self, example) -> dict:
        """Evaluator ground truth: boxes in original pixels, COCO category ids, padded."""
        height, width = tf.cast(example["height"], tf.float32), tf.cast(example["width"], tf.float32)
        boxes = example["boxes"] * tf.stack([height, width, height, width])
        categories = tf.gather(tf.constant((0,) + self.category_ids, tf.int32), example["classes"])
        count = tf.minimum(tf.shape(boxes)[0], self.max_instances)
        pad = preprocess_ops.clip_or_pad_to_fixed_size
        return {
            "source_id": tf.cast(example["source_id"], tf.int64),
            "height": tf.cast(example["height"], tf.int32),
            "width": tf.cast(example["width"], tf.int32),
            "num_detections": count,
            "boxes": pad(boxes, self.max_instances, -1),
            "classes": pad(categories, self.max_instances, -1),
            "is_crowds": pad(tf.cast(example["is_crowd"], tf.int32), self.max_instances, 0),
        }

    def category_table(self) -> np.ndarray:
        """Head class (0 = background) → COCO category id."""
        return np.asarray((0,) + self.category_ids, np.int64)
