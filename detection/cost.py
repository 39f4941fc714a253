"""Latency of backbone + SSDLite head, for the detection search's reward (paper Table 7).

The simulated Pixel-1 model (`tunas_keras.cost_models`, docs/cost-model.md) covers the
classification network at 224 px only. The detection cost adds two things, both calibrated on
that same model so the numbers stay in its milliseconds:

    T(α) = (S / 224)² · T_pixel1(α) + κ · MACs_head(C4(α), C5(α), S, classes)

- the backbone runs at the detector's resolution S (320): convolution latency scales with
  the pixel count (the pooled layers after C5, which the detector does not run, are a few
  tenths of a millisecond of T_pixel1 and stay in);
- the head (extra layers and predictors; `head_macs`, exact) costs κ ms per MAC, where κ is
  the least-squares slope of T_pixel1 against the MACs of uniformly sampled architectures of
  the space (0.253 ms per million MACs for `mobilenet_v3_like`, correlation 0.98): the
  Pixel-1 model's own price of a MAC. The head's MACs are linear in the C4 and C5 widths,
  which is all of the architecture they see.

Both terms are tables over a few decisions, so `DetectionCostModel` is a `TabulatedCostModel`:
the backbone's tables scaled by (S/224)², plus one table per endpoint width (the widths come
from the supernet planner, `Plan.endpoint_widths`, the one place that knows where C4 / C5
are). `cost`, `batch_cost` and `mask_cost` (warmup masks: the backbone's `mask_cost` scaled,
plus the head cost of the mask-weighted C4 / C5 widths) therefore agree by construction.

Default target: the same estimate for MobileNetV3-Large + SSDLite. MobileNetV3-Large is no
point of `mobilenet_v3_like` (its widths 112 and 960 are no choices), so its backbone term is
the Pixel-1 latency of the nearest point (`mobilenet_v3_large_nearest`: 96 and 1024 instead)
corrected by κ times the MAC difference: 58.8 ms at 224 px, within 3 % of the 57 ms the paper
reports for MobileNetV3-Large. At 320 px with COCO's 80 classes the target is ≈ 161 ms; the
paper's 106 ms was measured on a phone, so only the ratio T(α) / T0 carries over.
"""

from __future__ import annotations

import functools
from typing import Union

import numpy as np

from detection.anchors import SSD_ANCHORS, feature_sizes
from detection.model import EXTRA_LAYER_DEPTHS, HEAD_INPUTS
from tunas_keras.cost_models import TabulatedCostModel, get_cost_model, uniform_indices
from tunas_keras.cost_models.base import CostModel
from tunas_keras.cost_models.tables import TableSegment
from tunas_keras.models.counters import count_network
from tunas_keras.models.supernet_plan import plan_supernet
from tunas_keras.registry import get_search_space
from tunas_keras.schema import Architecture, SearchSpace

PIXEL1_IMAGE_SIZE = 224
CALIBRATION_SAMPLES = 200
REFERENCE_SPACE = "mobilenet_v3_like"
# MobileNetV3-Large in `mobilenet_v3_like`: (kernel, expansion, squeeze-excite) by (block, layer),
# None = a skipped layer; block widths (stem, 5 blocks, 2 head convs). Expansions are MobileNetV3's
# absolute inner widths over the input width, rounded (200/80 → 3, 184/80 → 2).
V3_LARGE_LAYERS = {
    (0, 0): (3, None, None), (0, 2): (3, None, None),
    (1, 0): (3, 4, False), (1, 1): (3, 3, False), (1, 2): None, (1, 3): None,
    (2, 0): (5, 3, True), (2, 1): (5, 3, True), (2, 2): (5, 3, True), (2, 3): None,
    (3, 0): (3, 6, False), (3, 1): (3, 3, False), (3, 2): (3, 2, False), (3, 3): (3, 2, False),
    (4, 0): (3, 6, True), (4, 1): (3, 6, True), (4, 2): None, (4, 3): None,
    (5, 0): (5, 6, True), (5, 1): (5, 6, True), (5, 2): (5, 6, True), (5, 3): None,
}  # fmt: skip
V3_LARGE_WIDTHS = (16, 24, 40, 80, 96, 160, 1024, 1280)
V3_LARGE_ENDPOINTS = (672, 960)  # the real C4 and C5 widths


def head_macs(
    c4: int, c5: int, image_size: int, num_classes: int, anchor_config=SSD_ANCHORS, extra_depths=EXTRA_LAYER_DEPTHS
) -> int:
    """Multiply-accumulates of the SSDLite head (`detection.model.SSDLiteHead`) on a square input."""
    levels = [str(level) for level in anchor_config.levels]
    sides = feature_sizes(image_size, anchor_config.levels)
    anchors = anchor_config.anchors_per_location()
    outputs_per_anchor = num_classes + 1 + 4  # class logits (with background) and box offsets

    def predictors(channels, level):  # a 3×3 depthwise + 1×1 conv each for classes and boxes
        return sides[level] ** 2 * channels * (2 * 9 + anchors[level] * outputs_per_anchor)

    total = predictors(c4, levels[0]) + predictors(c5, levels[1])
    channels, previous = c5, levels[1]
    for depth, level in zip(extra_depths, levels[2:], strict=True):
        reduced = depth // 2
        total += sides[previous] ** 2 * channels * reduced + sides[level] ** 2 * (9 * reduced + reduced * depth)
        total += predictors(depth, level)
        channels, previous = depth, level
    return int(total)


def ms_per_mac(space: SearchSpace, backbone: CostModel, num_samples: int = CALIBRATION_SAMPLES, seed: int = 0) -> float:
    """κ: slope of `backbone`'s cost (ms) against 224-px MACs over uniformly sampled architectures."""
    indices = uniform_indices(space, np.random.default_rng(seed), num_samples)
    macs = get_cost_model("macs", space)  # millions, equal to `count_network`
    counts = np.asarray([macs.cost(row.tolist()) for row in indices], np.float64) * 1e6
    costs = np.asarray([backbone.cost(row.tolist()) for row in indices], np.float64)
    slope, _ = np.polyfit(counts, costs, 1)
    return float(slope)


@functools.lru_cache(maxsize=8)
def _pixel1_ms_per_mac(space_name: str) -> float:
    space = get_search_space(space_name)
    return ms_per_mac(space, get_cost_model("pixel1", space))


def endpoint_widths(space: SearchSpace) -> dict:
    """`{"c4": Combination, "c5": Combination}`: how C4's / C5's widths depend on the decisions.

    Raises:
      ValueError: the space has no C4 or C5 endpoint.
    """
    widths = plan_supernet(space, 3).endpoint_widths
    missing = [name for name in HEAD_INPUTS if name not in widths]
    if missing:
        raise ValueError(f"Invalid value for argument `space`: {space.name!r} has no {missing} endpoint.")
    return {name: widths[name] for name in HEAD_INPUTS}


class DetectionCostModel(TabulatedCostModel):
    """Backbone + SSDLite head latency in ms (see the module docstring).

    Args:
      space: the search space.
      backbone: the cost model of the backbone at 224 px (a name such as "pixel1", a coefficient
        file or a `TabulatedCostModel`).
      image_size: the deployed detector's input size.
      num_classes: object classes of the deployed detector.
      anchor_config: its anchors.
    """

    def __init__(self, space, backbone="pixel1", image_size=320, num_classes=80, anchor_config=SSD_ANCHORS):
        space = get_search_space(space)
        self.backbone = get_cost_model(backbone, space)
        if not isinstance(self.backbone, TabulatedCostModel):
            raise ValueError(
                "Invalid value for argument `cost_model`. Expected a tabulated cost model (pixel1, macs, params or a "
                f"coefficient file) for the detection cost. Received: {self.backbone!r}"
            )
        self.image_size, self.num_classes, self.anchor_config = image_size, num_classes, anchor_config
        self.pixel_scale = (image_size / PIXEL1_IMAGE_SIZE) ** 2
        pixel1 = self.backbone.name == "pixel1"
        self.ms_per_mac = _pixel1_ms_per_mac(space.name) if pixel1 else ms_per_mac(space, self.backbone)
        self.head_offset = head_macs(0, 0, image_size, num_classes, anchor_config)
        self.head_per_channel = {
            "c4": head_macs(1, 0, image_size, num_classes, anchor_config) - self.head_offset,
            "c5": head_macs(0, 1, image_size, num_classes, anchor_config) - self.head_offset,
        }
        self.widths = endpoint_widths(space)
        scale = self.backbone.scale * self.pixel_scale
        segments = [
            TableSegment(segment.name, segment.positions, segment.radices, segment.table * scale)
            for segment in self.backbone.segments
        ]
        for name, width in self.widths.items():
            per_channel = self.ms_per_mac * self.head_per_channel[name]
            segments.append(
                TableSegment(
                    f"ssdlite_head/{name}",
                    width.factors,
                    width.shape,
                    per_channel * np.asarray(width.values, np.float64),
                )
            )
        bias = self.backbone.bias * scale + self.ms_per_mac * self.head_offset
        super().__init__(space, f"{self.backbone.name}+ssdlite@{image_size}", "ms", bias, segments)

    def head_cost(self, c4, c5):
        """κ · MACs of the head for endpoint widths `c4`, `c5` (floats or tensors)."""
        per_channel = self.head_per_channel
        return self.ms_per_mac * (self.head_offset + per_channel["c4"] * c4 + per_channel["c5"] * c5)

    def endpoint_width(self, name: str, architecture: Union[Architecture, list]) -> int:
        """The width of endpoint `name` ("c4" / "c5") in `architecture`."""
        return self.widths[name].value(self.validate(architecture))


def mobilenet_v3_large_nearest(space: Union[str, SearchSpace] = REFERENCE_SPACE) -> Architecture:
    """MobileNetV3-Large's nearest point of `mobilenet_v3_like` (see `V3_LARGE_LAYERS`)."""
    space = get_search_space(space)
    indices = []
    for decision in space.decisions:
        block = decision.path[1]
        if decision.tag == "filters":
            indices.append(decision.choices.index(V3_LARGE_WIDTHS[block]))
            continue
        layer = V3_LARGE_LAYERS[(block, decision.path[3])]
        if decision.tag == "op":
            indices.append(0 if layer is not None else 1)
        elif layer is None:
            indices.append(0)  # a skipped layer's own decisions do not matter
        else:
            value = {"kernel_size": layer[0], "expansion": layer[1], "squeeze_excite": layer[2]}[decision.tag]
            indices.append(decision.choices.index(value))
    return space.architecture(indices)


def mobilenet_v3_large_backbone_cost() -> float:
    """Pixel-1 ms of MobileNetV3-Large at 224 px: its nearest point + κ · the MAC difference."""
    nearest = mobilenet_v3_large_nearest()
    pixel1 = get_cost_model("pixel1", REFERENCE_SPACE)
    difference = count_network("mobilenet_v3_large").macs - count_network(nearest).macs
    return pixel1.cost(nearest) + _pixel1_ms_per_mac(REFERENCE_SPACE) * difference


def mobilenet_v3_large_ssdlite_cost(image_size: int = 320, num_classes: int = 80, anchor_config=SSD_ANCHORS) -> float:
    """The default target: estimated ms of MobileNetV3-Large + SSDLite (module docstring)."""
    scale = (image_size / PIXEL1_IMAGE_SIZE) ** 2
    head = head_macs(*V3_LARGE_ENDPOINTS, image_size, num_classes, anchor_config)
    return scale * mobilenet_v3_large_backbone_cost() + _pixel1_ms_per_mac(REFERENCE_SPACE) * head
