"""Typed configs of detection training and search (the classification configs + detection fields).

`tools/train.py --task=detection` and `tools/search.py --task=detection` read these: every
field is a flag (`define_detection_flags` adds the detection-only ones next to the
classification flags), and `--config` loads a JSON / YAML file as for classification.

Defaults are the paper's setting (SSDLite at 320 px, `mobilenet_v3_like` for the search, the
latency target of MobileNetV3-Large + SSDLite) on the embedded shapes data; for a quick run on
a CPU pass e.g. `--image_size=128` (docs/detection.md).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Optional, get_type_hints

from tunas_keras.training.config import SearchConfig, TrainConfig

TASKS = ("classification", "detection")

FIELD_HELP = {
    "score_threshold": "Detections scoring below this are dropped before NMS (evaluation and export).",
    "nms_iou_threshold": "IoU above which NMS suppresses the lower-scoring box.",
    "max_detections": "Boxes kept per image after NMS.",
    "focal_alpha": "Focal loss alpha (weight of the positive anchors).",
    "focal_gamma": "Focal loss gamma (down-weights easy anchors).",
    "box_loss_weight": "Weight of the smooth-L1 box loss beside the focal class loss.",
    "eval_every": "Steps between COCO mAP evaluations during training; None: at the end only.",
    "eval_batch_size": "Batch size of the COCO evaluation.",
    "cost_image_size": "Resolution at which the detector's latency is estimated (the search's cost).",
}

# Ranges of the detection fields (the classification fields are checked by `validate_config`).
FIELD_CHECKS = {
    "score_threshold": ((lambda value: 0 <= value <= 1), "a number in [0, 1]"),
    "nms_iou_threshold": ((lambda value: 0 < value <= 1), "a number in (0, 1]"),
    "max_detections": ((lambda value: value >= 1), "an int >= 1"),
    "focal_alpha": ((lambda value: 0 <= value <= 1), "a number in [0, 1]"),
    "focal_gamma": ((lambda value: value >= 0), "a number >= 0"),
    "box_loss_weight": ((lambda value: value >= 0), "a number >= 0"),
    "eval_every": ((lambda value: value >= 1), "an int >= 1"),
    "eval_batch_size": ((lambda value: value >= 1), "an int >= 1"),
    "cost_image_size": ((lambda value: value >= 1), "an int >= 1"),
}


@dataclasses.dataclass
class DetectionFields:
    """What detection adds to a run config (mixed into both configs below).

    `validate_task` is called by `tunas_keras.training.config.validate_config` in place of its
    classification dataset check: the detection fields' ranges and the detection dataset's name.
    """

    # NMS of the evaluation / export (score threshold, IoU threshold, boxes kept per image).
    score_threshold: float = 0.01
    nms_iou_threshold: float = 0.6
    max_detections: int = 100
    # Loss: focal loss (alpha, gamma) on the classes, smooth L1 (Huber delta 1) on the boxes.
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss_weight: float = 1.0

    def validate_task(self) -> None:
        """Checks the detection fields and the dataset name (nothing is read); a ValueError naming the field."""
        for name, (check, expected) in FIELD_CHECKS.items():
            value = getattr(self, name, None)
            if value is not None and not check(value):
                raise ValueError(f"Invalid value for argument `{name}`. Expected {expected}. Received: {value!r}")
        from detection.datasets import get_detection_dataset  # pylint: disable=import-outside-toplevel

        get_detection_dataset(self.dataset, self.image_size, self.seed, self.held_out_fraction, data_dir=self.data_dir)


@dataclasses.dataclass
class DetectionTrainConfig(DetectionFields, TrainConfig):
    """Standalone SSDLite training + COCO mAP (`detection.tasks.DetectionTask`)."""

    dataset: str = "embedded"
    image_size: int = 320
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.03  # Adam: 0.03 × 32 / 256 ≈ 4e-3 at batch 32
    learning_rate_warmup_fraction: float = 0.05
    model_dir: str = "runs/detection_train"
    eval_every: Optional[int] = None  # steps between mAP evaluations during training (None: at the end)
    eval_batch_size: int = 32


@dataclasses.dataclass
class DetectionSearchConfig(DetectionFields, SearchConfig):
    """A TuNAS detection-backbone search (`detection.tasks.DetectionSearchTask`).

    `target_latency=None` uses the estimated latency of MobileNetV3-Large + SSDLite at
    `cost_image_size` (the paper's Table 7 setting; `detection.cost`).
    """

    space: str = "mobilenet_v3_like"
    dataset: str = "embedded"
    image_size: int = 320
    model_dir: str = "runs/detection_search"
    # The reference's β, not the classification demo's -0.3: Q = exp(-loss) spreads less than top-1,
    # so the latency term already weighs more here (docs/detection.md, "Quality signal").
    beta: float = -0.1
    # Resolution at which the detector is deployed and its latency estimated (the reward's cost).
    cost_image_size: int = 320


def define_task_flag(flags_module) -> None:
    flags_module.DEFINE_enum(
        "task",
        "classification",
        list(TASKS),
        "Which task to run (str, default: classification).",
        module_name=sys.argv[0],
    )


def define_detection_flags(flags_module, base_class: type, config_class: type) -> None:
    """Defines `--task` and one flag per field of `config_class` that `base_class` lacks.

    The shared flags keep the classification defaults in `--help`; with `--task=detection` the
    detection config's defaults apply (e.g. `image_size` 320).
    """
    define_task_flag(flags_module)
    hints = get_type_hints(config_class)
    existing = {field.name for field in dataclasses.fields(base_class)}
    for field in dataclasses.fields(config_class):
        if field.name in existing:
            continue
        define = flags_module.DEFINE_boolean if hints[field.name] is bool else flags_module.DEFINE_string
        text = f"{FIELD_HELP[field.name]} [--task=detection; {field.type}; default: {field.default!r}]"
        define(field.name, None, text, module_name=sys.argv[0])
