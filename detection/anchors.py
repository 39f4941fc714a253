"""SSD anchors (Liu et al. 2016, §2.2) as the per-level dict that Model Garden's ops consume.

SSDLite on MobileNetV3 predicts from six levels: C4 (stride 16), C5 (stride 32) and four extra
stride-2 layers (strides 64 … 512), levels 4 … 9. Level k of n has scale
`s_k = min_scale + (max_scale - min_scale) · k / (n - 1)` (0.2 … 0.95 of the image side) and one
anchor per aspect ratio r ∈ {1, 2, 1/2, 3, 1/3} (height `s_k / √r`, width `s_k · √r`), plus a
square anchor of scale `√(s_k · s_{k+1})` (`s_n = 1`). The lowest level has three anchors only:
scale 0.1 at ratio 1 and `min_scale` at ratios 2 and 1/2 (the TF Object Detection API's
`reduce_boxes_in_lowest_layer`, used by its SSDLite configs). At 320 px that is
20²·3 + (10² + 5² + 3² + 2² + 1²)·6 = 2034 anchors.

Why not `official.vision.ops.anchor.Anchor`: it sizes anchors geometrically per level
(`anchor_size · 2^level · 2^(i / num_scales)`) with one aspect-ratio list for all levels, so it
cannot express SSD's linear scale schedule, the interpolated extra scale or a lowest level with
fewer anchors. The boxes are therefore generated here, in `Anchor.multilevel_boxes`' format
(`{str(level): [height, width, anchors_per_location · 4]}`, pixel `ymin, xmin, ymax, xmax`,
centres at `(i + 0.5) · stride`), which `AnchorLabeler`, `RetinaNetHead` (anchors per level as
a dict) and `MultilevelDetectionGenerator` accept unchanged.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
import tensorflow as tf

MIN_LEVEL = 4  # C4, stride 16
NUM_LEVELS = 6
MIN_SCALE = 0.2
MAX_SCALE = 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
LOWEST_LEVEL_SCALE = 0.1


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """The SSD anchor scheme (defaults: SSDLite's). See the module docstring."""

    num_levels: int = NUM_LEVELS
    min_scale: float = MIN_SCALE
    max_scale: float = MAX_SCALE
    aspect_ratios: tuple = ASPECT_RATIOS
    reduce_lowest_level: bool = True

    def __post_init__(self):
        if self.num_levels < 2:
            raise ValueError(f"Invalid value for argument `num_levels`. Expected >= 2. Received: {self.num_levels}")
        if not 0.0 < self.min_scale < self.max_scale <= 1.0:
            raise ValueError(
                "Invalid anchor scales. Expected 0 < min_scale < max_scale <= 1. "
                f"Received: min_scale={self.min_scale}, max_scale={self.max_scale}"
            )

    @property
    def levels(self) -> tuple:
        """Feature levels (log2 of the stride): 4 … 9."""
        return tuple(range(MIN_LEVEL, MIN_LEVEL + self.num_levels))

    def scales(self) -> list:
        """`s_0 … s_{n-1}` and the closing `s_n = 1`."""
        step = (self.max_scale - self.min_scale) / (self.num_levels - 1)
        return [self.min_scale + step * index for index in range(self.num_levels)] + [1.0]

    def level_anchors(self, level_index: int) -> list:
        """`(scale, aspect_ratio)` of each anchor of a location on level `level_index` (0-based)."""
        scales = self.scales()
        scale = scales[level_index]
        if level_index == 0 and self.reduce_lowest_level:
            return [(LOWEST_LEVEL_SCALE, 1.0), (scale, 2.0), (scale, 0.5)]
        shapes = [(scale, ratio) for ratio in self.aspect_ratios]
        return shapes + [(math.sqrt(scale * scales[level_index + 1]), 1.0)]

    def anchors_per_location(self) -> dict:
        """`{str(level): count}` (the dict form `RetinaNetHead` takes)."""
        return {str(level): len(self.level_anchors(index)) for index, level in enumerate(self.levels)}


SSD_ANCHORS = AnchorConfig()  # SSDLite's (the default everywhere)


def feature_sizes(image_size: int, levels) -> dict:
    """`{str(level): side}` of the maps a chain of 'same'-padded stride-2 layers produces."""
    return {str(level): math.ceil(image_size / 2**level) for level in levels}


def multilevel_anchor_boxes(image_size: int, config: AnchorConfig = SSD_ANCHORS) -> "collections.OrderedDict":
    """SSD anchors of a square `image_size` input.

    Returns:
      `OrderedDict {str(level): float32 tf.Tensor [side, side, anchors_per_location · 4]}` of
      pixel boxes `ymin, xmin, ymax, xmax` (anchors may extend past the image, as in SSD).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"Invalid value for argument `image_size`. Expected a positive int. Received: {image_size!r}")
    boxes = collections.OrderedDict()
    for index, (level, side) in enumerate(feature_sizes(image_size, config.levels).items()):
        centres = (np.arange(side, dtype=np.float64) + 0.5) * image_size / side
        centre_y, centre_x = np.meshgrid(centres, centres, indexing="ij")
        per_anchor = []
        for scale, ratio in config.level_anchors(index):
            half_height = 0.5 * scale * image_size / math.sqrt(ratio)
            half_width = 0.5 * scale * image_size * math.sqrt(ratio)
            per_anchor.append(
                np.stack(
                    [centre_y - half_height, centre_x - half_width, centre_y + half_height, centre_x + half_width], -1
                )
            )
        boxes[level] = tf.constant(np.concatenate(per_anchor, axis=-1), tf.float32)
    return boxes


def num_anchors(image_size: int, config: AnchorConfig = SSD_ANCHORS) -> int:
    """Total number of anchors of a square `image_size` input."""
    counts = config.anchors_per_location()
    return sum(side * side * counts[level] for level, side in feature_sizes(image_size, config.levels).items())
