"""What `tools/*.py --task=detection` run: config from the flags, the library call, the summary lines.

Each tool keeps its classification path and dispatches here when `--task=detection`, so the
tools stay thin and the detection logic lives in this package.
"""

from __future__ import annotations

import json
import os
import sys

from detection.config import DetectionSearchConfig, DetectionTrainConfig
from detection.datasets import get_detection_dataset
from detection.export import export_detector
from detection.model import build_detector
from detection.tasks import run_detection_search, run_detection_training
from tunas_keras.export import sources
from tunas_keras.training import config as config_lib
from tunas_keras.training.trainer import create_strategy, is_chief

DEFAULT_IMAGE_SIZE = 320


def train(flag_values) -> int:
    """`tools/train.py --task=detection`."""
    config = config_lib.config_from_flags(DetectionTrainConfig, flag_values)
    print(f"SSDLite training: dataset={config.dataset} image_size={config.image_size} model_dir={config.model_dir}")
    try:
        result = run_detection_training(config)
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
    config = config_lib.config_from_flags(DetectionSearchConfig, flag_values)
    # First of all: multi-worker and TPU strategies must exist before TensorFlow initialises.
    strategy = create_strategy(config.strategy)
    print(f"TuNAS detection search: space={config.space} dataset={config.dataset} model_dir={config.model_dir}")
    print("Building the detection supernet and tracing its training step (minutes on a CPU) ...")
    try:
        result = run_detection_search(config, strategy=strategy)
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


def _export_model(flag_values):
    """The detector, its image size and its dataset (for parity images) named by the export flags."""
    architecture = sources.resolve_architecture(
        flag_values.architecture, flag_values.indices, flag_values.space, flag_values.reference
    )
    image_size = flag_values.image_size if flag_values["image_size"].present else DEFAULT_IMAGE_SIZE
    data = get_detection_dataset(flag_values.dataset, image_size=image_size) if flag_values.dataset else None
    num_classes = flag_values.num_classes if flag_values["num_classes"].present or data is None else data.num_classes
    model = build_detector(architecture, num_classes, (image_size, image_size, 3))
    if flag_values.weights:
        sources.load_weights(model, flag_values.weights)
    return model, image_size, data, architecture


def export(flag_values, output_path=None):
    """`tools/export_tflite.py --task=detection`: writes the `.tflite` and its parity report."""
    model, image_size, data, architecture = _export_model(flag_values)
    images = None
    if data is not None:
        count = getattr(flag_values, "num_parity_images", 8)
        images = next(iter(data.make("valid", count, training=False, repeat=False)))[0].numpy()
    metadata = {
        "architecture": architecture.to_dict() if hasattr(architecture, "to_dict") else {"reference": architecture},
        "image_size": image_size,
        "weights": flag_values.weights,
        "parity_data": f"{flag_values.dataset}:valid" if data is not None else "synthetic",
    }
    result = export_detector(
        model, output_path or flag_values.output, image_size, parity_images=images,
        quantization=flag_values.quantization, metadata=metadata,
    )  # fmt: skip
    if output_path is None:
        print(json.dumps({key: value for key, value in result.parity.items() if key != "ops"}, indent=2))
        print(f"Wrote {result.model_path} ({result.size_bytes / 1e6:.2f} MB) and {result.parity_path}")
    return result
