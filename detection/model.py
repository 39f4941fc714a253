"""SSDLite on any of our backbones: the head layer, the standalone detector and its decoding.

The MobileNetV3 recipe (Howard et al. 2019, §6.2; Sandler et al. 2018, §6.2 for SSDLite): the
head reads C4 (the expansion output of the first stride-32 bottleneck, at stride 16) and C5
(the last 1×1 conv before pooling); four extra stride-2 layers of depth 512, 256, 256, 128
(1×1 conv to d/2, 3×3 depthwise stride 2, 1×1 conv to d; each with batch norm and ReLU6)
continue from C5. Every one of the six maps gets its own depthwise-separable class and box
predictors: Model Garden's `RetinaNetHead` with `num_convs=0`, `use_separable_conv=True`,
`share_level_convs=False` (3×3 depthwise + 1×1 conv with bias; Model Garden puts no batch norm
between them, the TF Object Detection API's SSDLite does — a small difference we keep).

Classes: the predictors have `num_classes + 1` outputs per anchor; column 0 is background and
never a positive target (Model Garden's convention, which `MultilevelDetectionGenerator` and
its TFLite path expect). Decoded classes are therefore 1 … num_classes.

    >>> detector = build_detector("mobilenet_v3_large", num_classes=80)          # 320 px
    >>> outputs = detector(images)      # {"scores": {"4": ..., ..., "9": ...}, "boxes": {...}}
    >>> detections = decode_detections(outputs, image_size=320)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf
import tf_keras as keras
from official.vision.modeling.heads.dense_prediction_heads import RetinaNetHead
from official.vision.modeling.layers.detection_generator import MultilevelDetectionGenerator

from detection.anchors import SSD_ANCHORS, AnchorConfig, multilevel_anchor_boxes
from tunas_keras.layers.common import DepthwiseHeNormal, batch_norm, conv_initializer
from tunas_keras.layers.masked import MaskedBatchNorm
from tunas_keras.models.arguments import check_num_classes
from tunas_keras.models.standalone import DETECTION_ENDPOINTS, build_backbone

EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
# SSD's box coder (the TF Object Detection API's `faster_rcnn_box_coder` scales).
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
HEAD_INPUTS = DETECTION_ENDPOINTS  # ("c4", "c5")


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    """Non-maximum suppression settings (evaluation and export use the same)."""

    score_threshold: float = 0.01
    iou_threshold: float = 0.6
    max_detections: int = 100


DEFAULT_POSTPROCESS = PostprocessConfig()


@keras.utils.register_keras_serializable(package="tunas_keras")
class SSDLiteHead(keras.layers.Layer):
    """SSDLite's extra layers and per-level separable predictors.

    Args:
      num_classes: object classes (the predictors add a background column 0).
      anchors_per_location: `{str(level): count}` for levels 4 … 9 (`AnchorConfig.anchors_per_location()`).
      extra_depths: output depths of the extra stride-2 layers after C5.
      batch_statistics: normalise the extra layers with the stateless `MaskedBatchNorm`
        (always the batch's statistics, no moving statistics): the supernet's batch norm.

    Call arguments:
      features: `{"c4": (batch, h, w, c4), "c5": (batch, ⌈h/2⌉, ⌈w/2⌉, c5)}`.
      training: batch-norm mode.

    Returns:
      `{"scores": {str(level): (batch, h_l, w_l, A_l · (num_classes + 1))}, "boxes": {str(level):
      (batch, h_l, w_l, A_l · 4)}}` with raw logits and encoded box offsets.
    """

    def __init__(
        self,
        num_classes: int,
        anchors_per_location: dict,
        extra_depths=EXTRA_LAYER_DEPTHS,
        batch_statistics: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_classes = check_num_classes(num_classes)
        levels = sorted(int(level) for level in anchors_per_location)
        if len(levels) != len(extra_depths) + 2 or levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(
                "Invalid value for argument `anchors_per_location`. Expected consecutive levels, two more than "
                f"`extra_depths` ({len(extra_depths)}). Received: {sorted(anchors_per_location)}"
            )
        self.num_classes = num_classes
        self.anchors_per_location = {str(level): int(count) for level, count in anchors_per_location.items()}
        self.extra_depths = tuple(int(depth) for depth in extra_depths)
        self.batch_statistics = bool(batch_statistics)
        self.levels = [str(level) for level in levels]
        # One flat list: Keras' `.weights.h5` format saves the layers of a list attribute, not of a
        # list of lists (those would silently keep their initial values on loading).
        self.extra_layers = [
            layer for index, depth in enumerate(self.extra_depths) for layer in self._extra_layer(index, depth)
        ]
        self.predictor = RetinaNetHead(
            min_level=levels[0],
            max_level=levels[-1],
            num_classes=num_classes + 1,
            num_anchors_per_location=self.anchors_per_location,
            num_convs=0,
            use_separable_conv=True,
            share_level_convs=False,
            name="predictor",
        )

    @property
    def extra_blocks(self) -> list:
        """The extra layers grouped per extra stride-2 layer: `[reduce, bn, depthwise, bn, expand, bn]` each."""
        size = len(self.extra_layers) // len(self.extra_depths)
        return [self.extra_layers[start : start + size] for start in range(0, len(self.extra_layers), size)]

    def _norm(self, name: str):
        return MaskedBatchNorm(name=name) if self.batch_statistics else batch_norm(name)

    def _extra_layer(self, index: int, depth: int) -> list:
        prefix = f"extra{index}_"
        return [
            keras.layers.Conv2D(
                depth // 2, 1, use_bias=False, kernel_initializer=conv_initializer(), name=prefix + "reduce"
            ),
            self._norm(prefix + "reduce_bn"),
            keras.layers.DepthwiseConv2D(
                3,
                2,
                padding="same",
                use_bias=False,
                depthwise_initializer=DepthwiseHeNormal(),
                name=prefix + "depthwise",
            ),
            self._norm(prefix + "depthwise_bn"),
            keras.layers.Conv2D(
                depth, 1, use_bias=False, kernel_initializer=conv_initializer(), name=prefix + "expand"
            ),
            self._norm(prefix + "expand_bn"),
        ]

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape["c5"])
        for layer in self.extra_layers:
            with tf.name_scope(layer.name):  # variable names as if built by a call
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        shapes = {self.levels[0]: tf.TensorShape(input_shape["c4"]), self.levels[1]: tf.TensorShape(input_shape["c5"])}
        for level, depth in zip(self.levels[2:], self.extra_depths, strict=True):
            shapes[level] = tf.TensorShape([None, None, None, depth])
        with tf.name_scope(self.predictor.name):
            self.predictor.build(shapes)
        super().build(input_shape)

    def call(self, features, training=None):
        maps = {self.levels[0]: features["c4"], self.levels[1]: features["c5"]}
        outputs = features["c5"]
        for level, layers in zip(self.levels[2:], self.extra_blocks, strict=True):
            for conv, norm in zip(layers[::2], layers[1::2], strict=True):
                # `MaskedBatchNorm` is stateless: always the batch's statistics, no `training`.
                outputs = conv(outputs)
                outputs = norm(outputs) if self.batch_statistics else norm(outputs, training=training)
                outputs = tf.nn.relu6(outputs)
            maps[level] = outputs
        scores, boxes, _ = self.predictor(maps)
        return {"scores": scores, "boxes": boxes}

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            anchors_per_location=self.anchors_per_location,
            extra_depths=self.extra_depths,
            batch_statistics=self.batch_statistics,
        )
        return config


def build_detector(
    architecture,
    num_classes: int,
    input_shape=(320, 320, 3),
    anchor_config: AnchorConfig = SSD_ANCHORS,
    zero_init_residual: bool = False,
) -> keras.Model:
    """The standalone SSDLite detector of `architecture` (a plain functional tf_keras model).

    Args:
      architecture: an `Architecture`, a reference name or a resolved Network (as `build_model`).
      num_classes: object classes (80 for COCO); the head adds background.
      input_shape: (height, width, 3); SSDLite uses 320 × 320.
      anchor_config: the SSD anchor scheme (anchors per location of each level).
      zero_init_residual: as in `tunas_keras.build_model`.

    Returns:
      A model from normalised images to `{"scores": {level: ...}, "boxes": {level: ...}}` (see
      `SSDLiteHead`). Backbone layers are named as in `tunas_keras.build_model`.

    Raises:
      ValueError: the backbone has no C4 or C5 endpoint (it needs a stride-16→32 bottleneck and
        a global pool), or invalid arguments.
    """
    backbone = build_backbone(architecture, input_shape, zero_init_residual=zero_init_residual)
    missing = [name for name in HEAD_INPUTS if name not in backbone.output]
    if missing:
        raise ValueError(
            f"Invalid value for argument `architecture`: its backbone has no {missing} endpoint. Expected a "
            "bottleneck from stride 16 to 32 (C4) and a global pool (C5)."
        )
    head = SSDLiteHead(num_classes, anchor_config.anchors_per_location(), name="ssdlite_head")
    outputs = head({name: backbone.output[name] for name in HEAD_INPUTS})
    return keras.Model(backbone.input, outputs, name="ssdlite")


def detection_generator(config: PostprocessConfig = DEFAULT_POSTPROCESS, class_agnostic: bool = False):
    """Model Garden's `MultilevelDetectionGenerator` with our box coder and NMS settings.

    Class-aware NMS for mAP: `nms_version="batched"` (one `combined_non_max_suppression` op; the
    "v2" version unrolls one NMS per class, and tracing it takes seconds at 10 classes and grows
    with COCO's 80). `class_agnostic=True` is the TFLite fast NMS' behaviour (one class per box,
    then NMS across classes; "v2"), used for the export parity check.
    """
    return MultilevelDetectionGenerator(
        apply_nms=True,
        pre_nms_top_k=5000,
        pre_nms_score_threshold=config.score_threshold,
        nms_iou_threshold=config.iou_threshold,
        max_num_detections=config.max_detections,
        nms_version="v2" if class_agnostic else "batched",
        use_class_agnostic_nms=class_agnostic or None,
        box_coder_weights=list(BOX_CODER_WEIGHTS),
    )


def batched_anchor_boxes(anchor_boxes: dict, batch_size) -> dict:
    """Anchors repeated over the batch (`MultilevelDetectionGenerator` reshapes them per image)."""
    return {level: tf.tile(boxes[tf.newaxis], [batch_size, 1, 1, 1]) for level, boxes in anchor_boxes.items()}


def decode_detections(
    outputs: dict,
    image_size: int,
    config: PostprocessConfig = DEFAULT_POSTPROCESS,
    anchor_config: AnchorConfig = SSD_ANCHORS,
    class_agnostic: bool = False,
    clip: bool = True,
    generator: Optional[MultilevelDetectionGenerator] = None,
) -> dict:
    """Boxes, classes and scores after NMS from a detector's raw outputs.

    Args:
      outputs: the detector's `{"scores": ..., "boxes": ...}` for a batch.
      image_size: the (square) input size in pixels.
      config: NMS settings.
      anchor_config: the anchors the detector was trained with.
      class_agnostic: see `detection_generator`.
      clip: clip boxes to the image before NMS (False: as TFLite's op, which does not clip).
      generator: a prebuilt `detection_generator` (else one is made).

    Returns:
      `{"detection_boxes": (batch, max_detections, 4) pixel ymin, xmin, ymax, xmax,
      "detection_classes": int (batch, max_detections) in 1 … num_classes, "detection_scores",
      "num_detections": (batch,)}`.
    """
    generator = generator or detection_generator(config, class_agnostic)
    batch_size = tf.shape(outputs["scores"][next(iter(outputs["scores"]))])[0]
    anchors = batched_anchor_boxes(multilevel_anchor_boxes(image_size, anchor_config), batch_size)
    image_shape = tf.tile(tf.constant([[float(image_size), float(image_size)]]), [batch_size, 1]) if clip else None
    detections = generator(outputs["boxes"], outputs["scores"], anchors, image_shape)
    return {
        key: detections[key] for key in ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    }
