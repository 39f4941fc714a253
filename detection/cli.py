"""What `tools/*.py --task=detection` need beyond the flow they share with classification.

`tools/train.py` and `tools/search.py` run either task the same way (config from the flags,
validation, the library call; `detection.tasks` for detection); here are the detection training
summary and the export path of `tools/export_tflite.py` / `tools/benchmark_latency.py`
(`check_export` before anything is built, then `export`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from detection.config import DetectionTrainConfig
from detection.datasets import get_detection_dataset
from detection.export import check_quantization, export_detector
from detection.model import build_detector
from tunas_keras.export import sources, tflite

DEFAULT_IMAGE_SIZE = 320


def print_training_result(config: DetectionTrainConfig, result: dict) -> None:
    """The summary lines of `tools/train.py --task=detection`: COCO metrics, weights, the export command."""
    print(
        f"{result['eval_split']} ({result['eval_images']} images): COCO AP {100 * result['AP']:.1f}  "
        f"AP50 {100 * result['AP50']:.1f}  AP75 {100 * result['AP75']:.1f}  ({result['steps']} steps, "
        f"{result['wall_time_s']:.0f} s)"
    )
    weights = os.path.join(config.model_dir, "model.weights.h5")
    print(f"Weights: {weights}. Next: export with TFLite's detection post-processing op:")
    print(
        f"  python tools/export_tflite.py --task=detection {_source_flags(config)} --weights={weights} "
        f"--dataset={config.dataset} --image_size={config.image_size} --output={config.model_dir}/ssdlite.tflite"
    )


def _source_flags(config) -> str:
    if config.architecture:
        return f"--architecture={config.architecture}"
    if config.indices:
        return f"--indices={config.indices} --space={config.space}"
    return f"--reference={config.reference}"


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What the export flags name, checked: the architecture, the input size and the parity dataset."""

    architecture: Any
    image_size: int
    dataset: Optional[str]


def check_export(flag_values, output_path: str) -> ExportPlan:
    """Checks the export flags of a detector; builds and reads nothing.

    `--image_size` defaults to 320 (SSDLite's) when not given; `--dataset` names the detection
    data whose validation images form the parity batch ('' = synthetic images).

    Raises:
      ValueError / OSError: naming the argument (the tools run this inside `errors.user_input()`).
    """
    architecture = sources.resolve_source_flags(flag_values)
    image_size = flag_values.image_size if flag_values["image_size"].present else DEFAULT_IMAGE_SIZE
    check_quantization(flag_values.quantization)
    if getattr(flag_values, "qat_steps", 0):
        raise ValueError(
            "Invalid value for argument `qat_steps`. Expected 0 with --task=detection (no quantisation-aware "
            f"training for detectors). Received: qat_steps={flag_values.qat_steps}"
        )
    if flag_values.weights:
        sources.weights_source(flag_values.weights)
    dataset = flag_values.dataset or None
    if dataset:
        get_detection_dataset(dataset, image_size=image_size)  # the name; nothing is read yet
    tflite.check_output_path(output_path)
    return ExportPlan(architecture, image_size, dataset)


def export(flag_values, plan: ExportPlan, output_path: str) -> tflite.ExportResult:
    """`tools/export_tflite.py --task=detection`: writes the `.tflite` and its parity report."""
    data = get_detection_dataset(plan.dataset, image_size=plan.image_size) if plan.dataset else None
    given_classes = flag_values["num_classes"].present or data is None
    num_classes = flag_values.num_classes if given_classes else data.num_classes
    model = build_detector(plan.architecture, num_classes, (plan.image_size, plan.image_size, 3))
    if flag_values.weights:
        sources.load_weights(model, flag_values.weights)
    images = None
    if data is not None:
        count = getattr(flag_values, "num_parity_images", 8)
        images = next(iter(data.make("valid", count, training=False, repeat=False)))[0].numpy()
    architecture = plan.architecture
    metadata = {
        "architecture": architecture.to_dict() if hasattr(architecture, "to_dict") else {"reference": architecture},
        "image_size": plan.image_size,
        "weights": flag_values.weights,
        "parity_data": f"{plan.dataset}:valid" if data is not None else "synthetic",
    }
    return export_detector(
        model,
        output_path,
        plan.image_size,
        parity_images=images,
        quantization=flag_values.quantization,
        metadata=metadata,
    )
