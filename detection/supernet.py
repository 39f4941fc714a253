"""The detection supernet: a search space's weight-sharing backbone with an SSDLite head.

The backbone is `tunas_keras.build_supernet` (its classifier is not used: zero and frozen); the
head reads the supernet's C4 and C5 (`Supernet.features`) at the largest widths, where the
channels an architecture does not use are zero, so a child's predictions only depend on its
own channels. In the "slice" execution the features are zero-padded back to the largest width,
so the head's input shapes are static in every execution mode. The head's extra layers use the
supernet's stateless batch norm (always batch statistics, no moving statistics).
`extract_child` returns `detection.build_detector(architecture)` with the shared weights; the
head's weights that read C4 / C5 are sliced to the child's widths.

    >>> supernet = build_detection_supernet("mobilenet_v3_like", num_classes=10, input_shape=(64, 64, 3))
    >>> outputs = supernet(images, masks, training=True, one_hot=True)   # as the detector's outputs
    >>> child = supernet.extract_child(architecture)                     # a standalone detector
"""

from __future__ import annotations

from typing import Union

import tensorflow as tf
import tf_keras as keras

from detection.anchors import SSD_ANCHORS, AnchorConfig
from detection.model import HEAD_INPUTS, SSDLiteHead, build_detector
from tunas_keras.layers.masked import MaskedBatchNorm
from tunas_keras.masks import uniform_masks
from tunas_keras.models.arguments import check_input_shape, check_num_classes
from tunas_keras.models.standalone import kernel_weights
from tunas_keras.models.supernet import build_supernet
from tunas_keras.registry import get_search_space
from tunas_keras.schema import Architecture, SearchSpace


def head_kernel_l2(head: keras.layers.Layer) -> tf.Tensor:
    """Σw² over the head's convolution kernels (not biases or batch norm)."""
    return tf.add_n([tf.reduce_sum(tf.square(kernel)) for kernel in kernel_weights(head)])


class DetectionSupernet(keras.Model):
    """Weight-sharing backbone + SSDLite head; see the module docstring.

    Args:
      space: the search space (name or `SearchSpace`).
      num_classes: object classes (the head adds background).
      input_shape: (height, width, 3).
      anchor_config: the SSD anchors (anchors per location of each level).
      zero_init_residual / execution: as `tunas_keras.build_supernet`.

    Call arguments:
      images: `(batch, height, width, 3)` normalised images.
      masks: per-decision masks or an `Architecture` (as `Supernet.call`).
      training: unused by batch norm (always batch statistics); kept for the Keras convention.
      one_hot / execution: as `Supernet.call`.

    Returns:
      `{"scores": {level: ...}, "boxes": {level: ...}}` as the standalone detector.
    """

    def __init__(
        self,
        space: Union[str, SearchSpace],
        num_classes: int,
        input_shape,
        anchor_config: AnchorConfig = SSD_ANCHORS,
        zero_init_residual: bool = False,
        execution: str = "auto",
        **kwargs,
    ):
        space = get_search_space(space)
        super().__init__(name=kwargs.pop("name", f"detection_supernet_{space.name}"), **kwargs)
        self.num_classes = check_num_classes(num_classes)
        self.image_shape = check_input_shape(input_shape)
        self.backbone = build_supernet(
            space,
            num_classes=1,
            input_shape=self.image_shape,
            zero_init_residual=zero_init_residual,
            execution=execution,
        )
        # The classifier has no role here: zero and frozen (and outside the L2 penalty anyway).
        self.backbone.classifier.kernel.assign(tf.zeros_like(self.backbone.classifier.kernel))
        self.backbone.classifier.trainable = False
        self.space = self.backbone.space
        self.execution = self.backbone.execution
        self.anchor_config = anchor_config
        self.head = SSDLiteHead(
            self.num_classes, anchor_config.anchors_per_location(), batch_statistics=True, name="ssdlite_head"
        )
        self.endpoint_channels = {}

    def build(self, input_shape=None):
        # The "mask" execution has static shapes: it gives the largest width of each endpoint.
        features = self.backbone.features(
            tf.zeros((1,) + self.image_shape), uniform_masks(self.space), execution="mask"
        )
        missing = [name for name in HEAD_INPUTS if name not in features]
        if missing:
            raise ValueError(
                f"Invalid value for argument `space`: the {self.space.name!r} supernet has no {missing} endpoint. "
                "Expected a bottleneck from stride 16 to 32 (C4) and a global pool (C5)."
            )
        self.endpoint_channels = {name: int(features[name].shape[-1]) for name in HEAD_INPUTS}
        self.head({name: features[name] for name in HEAD_INPUTS})  # builds every sublayer
        self.built = True

    def head_inputs(self, images, masks, one_hot=False, execution=None) -> dict:
        """C4 / C5 at the largest widths (zero beyond the architecture's), static channel counts."""
        features = self.backbone.features(images, masks, one_hot=one_hot, execution=execution)
        return {name: features[name] for name in HEAD_INPUTS}

    def call(self, images, masks, training=None, one_hot=False, execution=None):
        return self.head(self.head_inputs(images, masks, one_hot, execution), training=training)

    def regularization_loss(self, masks) -> tf.Tensor:
        """Σw² of the backbone's active kernels (`Supernet.regularization_loss`) + of the head's kernels.

        Multiply by `weight_decay / 2`. The head's C4 / C5 predictors and first extra layer count
        all their input channels (also those a smaller architecture leaves at zero): a
        simplification, see docs/detection.md.
        """
        return self.backbone.regularization_loss(masks) + head_kernel_l2(self.head)

    def extract_child(self, architecture, input_shape=None) -> keras.Model:
        """`detection.build_detector(architecture)` with this supernet's weights copied in.

        Batch-norm moving statistics start at 0 / 1 (the supernet keeps none): re-estimate them
        (or train) before evaluating the child with `training=False`.
        """
        if not isinstance(architecture, Architecture):
            architecture = self.space.architecture(architecture)
        model = build_detector(
            architecture, self.num_classes, input_shape or self.image_shape, anchor_config=self.anchor_config
        )
        # The detector ends at C5: what follows the global pool (the classifier, a conv on the
        # pooled map) has no layer there.
        weights = self.backbone.child_weights(architecture)
        head = model.get_layer("ssdlite_head")
        for layer in model.layers:
            if layer is head or not layer.weights:
                continue
            if layer.name not in weights:
                raise RuntimeError(f"The supernet has no weights for the child's layer {layer.name!r}.")
            layer.set_weights(weights.pop(layer.name))
        _copy_head(self.head, head)
        return model


def _copy_head(source: SSDLiteHead, target: SSDLiteHead) -> None:
    """Copies the supernet head's weights into a standalone head (channels cut to the target's)."""
    for source_layer, target_layer in zip(source.extra_layers, target.extra_layers, strict=True):
        if isinstance(source_layer, MaskedBatchNorm):
            target_layer.set_weights(source_layer.sliced_weights(int(target_layer.gamma.shape[0])))
        else:
            target_layer.set_weights(_leading_slices(source_layer.get_weights(), target_layer.weights))
    target.predictor.set_weights(_leading_slices(source.predictor.get_weights(), target.predictor.weights))


def _leading_slices(values: list, targets: list) -> list:
    """The first entries of each value along every axis, to its target's shape (as channel masking)."""
    pairs = zip(values, targets, strict=True)
    return [value[tuple(slice(0, int(size)) for size in target.shape)] for value, target in pairs]


def build_detection_supernet(
    space: Union[str, SearchSpace] = "mobilenet_v3_like",
    num_classes: int = 80,
    input_shape=(320, 320, 3),
    anchor_config: AnchorConfig = SSD_ANCHORS,
    zero_init_residual: bool = False,
    execution: str = "auto",
) -> DetectionSupernet:
    """Builds (all variables created) the detection supernet of a search space."""
    supernet = DetectionSupernet(space, num_classes, tuple(input_shape), anchor_config, zero_init_residual, execution)
    supernet.build()
    return supernet
