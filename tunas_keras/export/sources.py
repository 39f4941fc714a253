"""Where an exported model comes from: an architecture JSON, indices, a reference name, weights.

    >>> architecture = resolve_architecture(reference="mobilenet_v2")
    >>> architecture = resolve_architecture(architecture_path="runs/search/architecture.json")
    >>> model = build_export_model(architecture, num_classes=10, image_size=32,
    ...                            weights="runs/train/model.weights.h5")
"""

from __future__ import annotations

import os
from typing import Optional, Union

import tensorflow as tf
import tf_keras as keras

import search_spaces
from tunas_keras.export.tflite import QUANTIZATIONS
from tunas_keras.models.standalone import build_model
from tunas_keras.schema import Architecture

ArchitectureLike = Union[Architecture, str]


def load_architecture_json(path: str) -> Architecture:
    """Reads an `architecture.json` (as written by `Architecture.to_json` or `tools/search.py`).

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: not valid JSON, an unsupported `format_version`, or indices that do not fit
        the space.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Invalid value for argument `architecture`. Expected an existing architecture JSON file. "
            f"Received: architecture={path!r}"
        )
    with open(path) as handle:
        text = handle.read()
    try:
        return Architecture.from_json(text)
    except ValueError as error:
        raise ValueError(f"Invalid architecture file {path!r}: {error}") from error


def resolve_architecture(
    architecture_path: Optional[str] = None,
    indices: Optional[str] = None,
    space: Optional[str] = None,
    reference: Optional[str] = None,
) -> ArchitectureLike:
    """Exactly one of: an architecture JSON path, `indices` (+ `space`), or a reference name.

    Returns:
      An `Architecture`, or the reference name (a `str` that `build_model` accepts).
    """
    given = {
        "architecture": architecture_path,
        "indices": indices,
        "reference": reference,
    }
    chosen = [name for name, value in given.items() if value]
    if len(chosen) != 1:
        raise ValueError(
            "Invalid model source. Expected exactly one of `architecture`, `indices` (with `space`) or "
            f"`reference`. Received: {', '.join(f'{name}={given[name]!r}' for name in given)}"
        )
    if architecture_path:
        return load_architecture_json(architecture_path)
    if indices:
        if not space:
            raise ValueError(f"Invalid value for argument `space`. Expected a search space name with `indices`. "
                             f"Received: space={space!r}")
        return search_spaces.get_search_space(space).parse(indices)
    if reference not in search_spaces.REFERENCE_NAMES:
        raise ValueError(
            f"Invalid value for argument `reference`. Expected one of {list(search_spaces.REFERENCE_NAMES)}. "
            f"Received: reference={reference!r}"
        )
    return reference


def load_weights(model: keras.Model, weights: str) -> None:
    """Loads trained weights: a Keras weights file (`model.weights.h5`, as `tools/train.py`
    writes) or a TF checkpoint (a prefix, or a directory holding one, e.g. `run/checkpoints`).

    Raises:
      FileNotFoundError: nothing at `weights`.
      ValueError: the file's weights do not fit the model (wrong architecture or sizes).
    """
    if weights.endswith((".h5", ".keras")):
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"Invalid value for argument `weights`. Expected an existing weights file. Received: weights={weights!r}"
            )
        try:
            model.load_weights(weights)
        except (ValueError, KeyError) as error:
            raise ValueError(f"Invalid value for argument `weights`: they do not fit the model ({error}).") from error
        return
    prefix = tf.train.latest_checkpoint(weights) if os.path.isdir(weights) else weights
    if prefix is None and os.path.isdir(os.path.join(weights, "checkpoints")):
        prefix = tf.train.latest_checkpoint(os.path.join(weights, "checkpoints"))
    if prefix is None or not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(
            "Invalid value for argument `weights`. Expected a .h5 weights file, a checkpoint prefix or a "
            f"directory with a checkpoint. Received: weights={weights!r}"
        )
    status = tf.train.Checkpoint(model=model).restore(prefix)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as error:
        raise ValueError(f"Invalid value for argument `weights`: checkpoint {prefix!r} does not fit the model "
                         f"({str(error)[:300]}).") from error


def build_export_model(
    architecture: ArchitectureLike,
    num_classes: int = 1001,
    image_size: int = 224,
    weights: Optional[str] = None,
) -> keras.Model:
    """The standalone model to export (dropout is left out: it is the identity at inference)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"Invalid value for argument `image_size`. Expected an int >= 1. Received: {image_size!r}")
    model = build_model(architecture, num_classes=num_classes, input_shape=(image_size, image_size, 3))
    if weights:
        load_weights(model, weights)
    return model


def define_source_flags(flags, module_name: Optional[str] = None) -> None:
    """The flags naming the model to export, shared by `tools/export_tflite.py` and `tools/benchmark_latency.py`.

    `module_name`: the module the flags are listed under in `--help` (a tool passes `sys.argv[0]`).
    """
    names = {"module_name": module_name} if module_name else {}
    flags.DEFINE_string("architecture", None, "Path of an architecture.json (from tools/search.py).", **names)
    flags.DEFINE_string("indices", None, "Colon-separated decision indices (with --space).", **names)
    flags.DEFINE_string("space", None, "Search space of --indices.", **names)
    flags.DEFINE_string("reference", None, "A reference model name, e.g. mobilenet_v2.", **names)
    flags.DEFINE_string(
        "weights", None, "Trained weights: model.weights.h5, a checkpoint prefix or a run directory.", **names
    )
    flags.DEFINE_integer("num_classes", 1001, "Classifier outputs (must match --weights).", **names)
    flags.DEFINE_integer("image_size", 224, "Input resolution.", **names)
    flags.DEFINE_enum("quantization", "none", list(QUANTIZATIONS), "Quantisation mode.", **names)
