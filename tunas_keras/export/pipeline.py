"""The export pipeline behind `tools/export_tflite.py`: source → model → (QAT) → `.tflite` + parity.

    >>> result = export_standalone("mobilenet_v2", "/tmp/m.tflite", quantization="int8",
    ...                            num_classes=10, image_size=32, dataset="embedded")

Calibration, parity and QAT images come from `tunas_keras.datasets` (imported lazily: only the
modes that need data need it). Without a dataset the parity batch is a fixed synthetic one.
"""

from __future__ import annotations

import collections
import os
from typing import Optional

import numpy as np
import tf_keras as keras

from tunas_keras.export import latency, sources, tflite
from tunas_keras.models.standalone import build_model


def _get_dataset(name: str, image_size: int, seed: int):
    try:
        from tunas_keras import datasets  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ValueError(
            f"Invalid value for argument `dataset`: `tunas_keras.datasets` is unavailable ({error}). Expected an "
            f"importable dataset module for calibration / QAT. Received: dataset={name!r}"
        ) from error
    return datasets.get_dataset(name, image_size=image_size, seed=seed)


def dataset_images(name: str, image_size: int, num_images: int, split: str = "valid", seed: int = 0) -> np.ndarray:
    """The first `num_images` preprocessed evaluation images of a split, as one array."""
    data = _get_dataset(name, image_size, seed)
    batches, count = [], 0
    for images, _ in data.make(split, batch_size=min(64, num_images), training=False, repeat=False):
        batches.append(np.asarray(images))
        count += batches[-1].shape[0]
        if count >= num_images:
            break
    if not batches:
        raise ValueError(f"Invalid value for argument `dataset`: split {split!r} of {name!r} yielded no images.")
    return np.concatenate(batches)[:num_images]


def qat_model_from(model, dataset: str, image_size: int, steps: int, batch_size: int, learning_rate: float, seed: int):
    """Fine-tunes `model` with quantisation-aware training on the dataset's training split."""
    from tunas_keras.export import qat  # pylint: disable=import-outside-toplevel

    data = _get_dataset(dataset, image_size, seed)
    num_classes = int(model.outputs[0].shape[-1])
    if data.num_classes > num_classes:
        raise ValueError(
            f"Invalid value for argument `num_classes`. Expected >= the dataset's {data.num_classes} classes for QAT. "
            f"Received: num_classes={num_classes}"
        )
    batches = data.make("train", batch_size, training=True, seed=seed)
    return qat.finetune_quantize_aware(model, batches, steps=steps, learning_rate=learning_rate)


def check_export_arguments(
    output_path: str,
    quantization: str = "none",
    image_size: int = 224,
    weights: Optional[str] = None,
    dataset: Optional[str] = "embedded",
    qat_steps: int = 0,
):
    """Checks `export_standalone`'s arguments without building or reading anything heavy.

    Returns the quantisation mode. Raises ValueError / FileNotFoundError naming the argument.
    """
    mode = tflite.get_quantization(quantization)
    if isinstance(qat_steps, bool) or not isinstance(qat_steps, int) or qat_steps < 0:
        raise ValueError(
            f"Invalid value for argument `qat_steps`. Expected an int >= 0. Received: qat_steps={qat_steps!r}"
        )
    if qat_steps and quantization != "int8":
        raise ValueError(
            f"Invalid value for argument `quantization`. Expected 'int8' with qat_steps={qat_steps}. "
            f"Received: quantization={quantization!r}"
        )
    if dataset is None and (mode.needs_representative_images or qat_steps):
        raise ValueError(
            f"Invalid value for argument `dataset`. Expected a dataset name for quantization={quantization!r} "
            f"/ qat_steps={qat_steps}. Received: dataset=None"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"Invalid value for argument `image_size`. Expected an int >= 1. Received: {image_size!r}")
    if weights:
        sources.weights_source(weights)
    if dataset is not None:
        _get_dataset(dataset, image_size, seed=0)  # a name check; reads nothing yet
    tflite.check_output_path(output_path)
    return mode


def export_standalone(
    architecture: sources.ArchitectureLike,
    output_path: str,
    quantization: str = "none",
    num_classes: int = 1001,
    image_size: int = 224,
    weights: Optional[str] = None,
    dataset: Optional[str] = "embedded",
    num_calibration_images: int = tflite.DEFAULT_CALIBRATION_IMAGES,
    num_parity_images: int = 32,
    qat_steps: int = 0,
    qat_batch_size: int = 32,
    qat_learning_rate: float = 1e-4,
    seed: int = 0,
    converter: str = "concrete_function",
) -> tflite.ExportResult:
    """Builds the standalone model of `architecture` and exports it with a parity report.

    Args:
      architecture: an `Architecture` or a reference name (see `sources.resolve_architecture`).
      output_path: the `.tflite` path.
      quantization: a key of `tflite.QUANTIZATIONS`.
      num_classes / image_size: the model's classifier size and input resolution.
      weights: trained weights (`.h5` or a checkpoint; see `sources.load_weights`).
      dataset: a `tunas_keras.datasets` name for calibration, parity and QAT images; `None`
        uses a synthetic parity batch (and is refused for int8 and QAT).
      num_calibration_images / num_parity_images: image counts (calibration: training split;
        parity: held-out "valid" split).
      qat_steps: > 0 fine-tunes with quantisation-aware training first (requires int8).
      qat_batch_size / qat_learning_rate: the QAT fine-tuning settings.
      seed: data seed.
      converter: a key of `tflite.CONVERTERS`.
    """
    mode = check_export_arguments(output_path, quantization, image_size, weights, dataset, qat_steps)
    model = sources.build_export_model(architecture, num_classes=num_classes, image_size=image_size, weights=weights)
    representative = parity_images = None
    if dataset is not None:
        parity_images = dataset_images(dataset, image_size, num_parity_images, split="valid", seed=seed)
        if mode.needs_representative_images:
            representative = dataset_images(dataset, image_size, num_calibration_images, split="train", seed=seed)
    if qat_steps:
        model = qat_model_from(model, dataset, image_size, qat_steps, qat_batch_size, qat_learning_rate, seed)
    metadata = {
        "architecture": architecture.to_dict() if hasattr(architecture, "to_dict") else {"reference": architecture},
        "num_classes": num_classes,
        "image_size": image_size,
        "weights": weights,
        "parity_data": f"{dataset}:valid" if dataset is not None else "synthetic",
        "qat_steps": qat_steps,
    }
    return tflite.export_tflite(
        model,
        output_path,
        quantization,
        representative_images=representative,
        parity_images=parity_images,
        metadata=metadata,
        num_calibration_images=num_calibration_images,
        converter=converter,
    )


def compare_with_keras_mobilenet_v2(
    workdir: str,
    image_size: int = 224,
    threads: tuple = (1, 2),
    warmup_runs: int = 10,
    rounds: int = 20,
    runs_per_round: int = 5,
    use_xnnpack: bool = True,
) -> dict:
    """Our `mobilenet_v2` vs `tf_keras.applications.MobileNetV2`, both exported the same way.

    Both models have 1001 classes and random weights (latency does not depend on the values),
    are converted with the same converter (float32) and timed interleaved per thread count.

    Returns:
      `{"ops": {name: {op: count}}, "params": {...}, "threads": {n: compare_latency(...)}}`;
      `threads[n]["ratio_median"]["tunas_keras"]` is ours / Keras' median latency.
    """
    shape = (image_size, image_size, 3)
    models = {
        "tunas_keras": build_model("mobilenet_v2", num_classes=1001, input_shape=shape),
        "keras_applications": keras.applications.MobileNetV2(
            input_shape=shape,
            weights=None,
            classes=1001,
            classifier_activation=None,  # logits, like ours
        ),
    }
    paths, ops, parity = {}, {}, {}
    for name, model in models.items():
        result = tflite.export_tflite(model, os.path.join(workdir, f"{name}.tflite"), "none")
        paths[name], parity[name] = result.model_path, result.parity["max_abs_diff"]
        ops[name] = dict(collections.Counter(tflite.tflite_op_names(open(result.model_path, "rb").read())))
    comparisons = {
        num_threads: latency.compare_latency(
            paths, num_threads, warmup_runs, rounds, runs_per_round, use_xnnpack, baseline="keras_applications"
        )
        for num_threads in threads
    }
    return {
        "ops": ops,
        "params": {name: int(model.count_params()) for name, model in models.items()},
        "parity_max_abs_diff": parity,
        "threads": comparisons,
    }
