"""The SSDLite training loss: focal loss on the classes, smooth L1 on the box offsets.

Targets come from Model Garden's `AnchorLabeler` (see `detection.data`): per anchor a class
(-1 = background or ignored), encoded box offsets, and weights (`cls_weights` 0 for ignored
anchors, `box_weights` 1 for positive anchors). Both losses are summed over anchors and divided
by the number of positive anchors in the batch (at least 1), as RetinaNet and SSD do.

References: Lin et al. 2017 (focal loss, α = 0.25, γ = 2); Liu et al. 2016 (smooth L1 = Huber
with δ = 1 on offsets scaled by the box coder's (10, 10, 5, 5)).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras as keras
from official.vision.losses.focal_loss import FocalLoss


@dataclasses.dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    huber_delta: float = 1.0
    box_loss_weight: float = 1.0


DEFAULT_LOSS = LossConfig()


def _flatten_levels(per_level: dict, last_dim: int) -> tf.Tensor:
    """`{level: (batch, h, w, A · last_dim)}` → `(batch, anchors, last_dim)` in level order."""
    levels = sorted(per_level, key=int)
    batch_size = tf.shape(per_level[levels[0]])[0]
    return tf.concat([tf.reshape(per_level[level], [batch_size, -1, last_dim]) for level in levels], axis=1)


def detection_loss(outputs: dict, targets: dict, num_classes: int, config: LossConfig = DEFAULT_LOSS) -> dict:
    """Focal + box loss of a batch.

    Args:
      outputs: the detector's `{"scores": {level: logits}, "boxes": {level: offsets}}`.
      targets: `{"cls_targets": {level: int (batch, h, w, A)}, "box_targets": {level: (batch,
        h, w, A · 4)}, "cls_weights": (batch, anchors), "box_weights": (batch, anchors)}`.
      num_classes: object classes (the outputs have `num_classes + 1` per anchor).
      config: loss settings.

    Returns:
      `{"loss": total, "class_loss": ..., "box_loss": ..., "num_positives": ...}` (scalars).
    """
    head_classes = num_classes + 1
    logits = _flatten_levels(outputs["scores"], head_classes)
    offsets = _flatten_levels(outputs["boxes"], 4)
    classes = _flatten_levels(targets["cls_targets"], 1)[..., 0]
    box_targets = _flatten_levels(targets["box_targets"], 4)
    cls_weights = tf.cast(targets["cls_weights"], tf.float32)
    box_weights = tf.cast(targets["box_weights"], tf.float32)
    num_positives = tf.maximum(tf.reduce_sum(box_weights), 1.0)

    one_hot = tf.one_hot(tf.cast(classes, tf.int32), head_classes)  # -1 (background) → all zeros
    focal = FocalLoss(config.focal_alpha, config.focal_gamma, reduction=keras.losses.Reduction.NONE)
    per_anchor = tf.reduce_sum(focal(one_hot, logits), axis=-1)  # FocalLoss keeps the class axis
    class_loss = tf.reduce_sum(per_anchor * cls_weights) / num_positives

    huber = keras.losses.Huber(delta=config.huber_delta, reduction=keras.losses.Reduction.NONE)
    # Huber averages over the last axis: a trailing axis of 1 keeps one value per offset.
    per_box = huber(box_targets[..., tf.newaxis], offsets[..., tf.newaxis])
    box_loss = tf.reduce_sum(tf.reduce_sum(per_box, axis=-1) * box_weights) / num_positives
    total = class_loss + config.box_loss_weight * box_loss
    return {"loss": total, "class_loss": class_loss, "box_loss": box_loss, "num_positives": num_positives}
