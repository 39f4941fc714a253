"""What `tools/*.py --task=detection` run: config from the flags, the library call, the summary lines.

Each tool keeps its classification path and dispatches here when `--task=detection`, so the
tools stay thin and the detection logic lives in this package.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Optional

from detection import tasks
from detection.config import DetectionSearchConfig, DetectionTrainConfig
from detection.datasets import get_detection_dataset
from detection.export import check_quantization, export_detector
from detection.model import build_detector
from tunas_keras import errors
from tunas_keras.export import sources, tflite
from tunas_keras.training import config as config_lib
from tunas_keras.training.trainer import create_strategy, is_chief

DEFAULT_IMAGE_SIZE = 320


def train(flag_values) -> int:
    """`tools/train.py --task=detection`."""
    with errors.user_input():
        config = config_lib.config_from_flags(DetectionTrainConfig, flag_values)
    task = tasks.prepare_detection_training(config)
    print(f"SSDLite training: dataset={config.dataset} image_size={config.image_size} model_dir={config.model_dir}")
    try:
        result = tasks.run_detection_training(config, task=task)
    except FloatingPointError as error:
        print(f"Training stopped: {error}", file=sys.stderr)
        return 1
    print()
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
    return 0


def _source_flags(config) -> str:
    if config.architecture:
        return f"--architecture={config.architecture}"
    if config.indices:
        return f"--indices={config.indices} --space={config.space}"
    return f"--reference={config.reference}"


def search(flag_values) -> int:
    """`tools/search.py --task=detection`."""
    with errors.user_input():
        config = config_lib.config_from_flags(DetectionSearchConfig, flag_values)
    # Validates and creates the task without initialising TensorFlow: multi-worker and TPU
    # strategies must exist before it is.
    task = tasks.prepare_detection_search(config)
    strategy = create_strategy(config.strategy)
    print(f"TuNAS detection search: space={config.space} dataset={config.dataset} model_dir={config.model_dir}")
    print("Building the detection supernet and tracing its training step (minutes on a CPU) ...", flush=True)
    try:
        result = tasks.run_detection_search(config, strategy=strategy, task=task)
    except FloatingPointError as error:
        print(f"Search stopped: {error}", file=sys.stderr)
        return 1
    if not is_chief(strategy):
        print(f"Worker done; the chief writes the outputs. Final architecture: {':'.join(map(str, result['indices']))}")
        return 0
    path = os.path.join(config.model_dir, "architecture.json")
    print()
    print(f"Final architecture ({result['space']}): {':'.join(map(str, result['indices']))}")
    print(
        f"Cost ({result['cost_model']}): {result['cost']:.1f} ms vs target {result['target_latency']:.1f} ms "
        f"({100 * (result['cost'] / result['target_latency'] - 1):+.1f} %)"
    )
    print(f"Wall time: {result['wall_time_s']:.0f} s. Outputs in {config.model_dir}/ (architecture.json, report.png)")
    print("Next steps:")
    same = f"--dataset={config.dataset} --image_size={config.image_size}"
    print(f"  python tools/train.py --task=detection --architecture={path} {same}")
    return 0


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
