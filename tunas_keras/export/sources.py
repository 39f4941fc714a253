"""Where a model comes from: an architecture JSON, indices, a reference name, weights.

Used by training, export, latency and cost tools alike (one resolver of the model-source flags).

    >>> architecture = resolve_architecture(reference="mobilenet_v2")
    >>> architecture = resolve_architecture(architecture_path="runs/search/architecture.json")
    >>> architecture = resolve_architecture(indices="0:1:0:...", space="proxyless")
    >>> model = build_export_model(architecture, num_classes=10, image_size=32,
    ...                            weights="runs/train/model.weights.h5")
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Optional, Union

import tensorflow as tf
import tf_keras as keras

import search_spaces
from tunas_keras.errors import UserInputError
from tunas_keras.export.tflite import QUANTIZATIONS
from tunas_keras.models.standalone import build_model
from tunas_keras.schema import Architecture

ArchitectureLike = Union[Architecture, str]
_INDICES_PATTERN = re.compile(r"^\s*\d+(\s*:\s*\d+)*\s*$")


def load_architecture_json(path: str, allow_list: bool = False) -> Union[Architecture, list]:
    """Reads an `architecture.json` (as written by `Architecture.to_json` or `tools/search.py`).

    Args:
      path: the file.
      allow_list: also accept a JSON list of architectures (as `tools/sample_random_architectures.py`
        writes); a list is returned then.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: not valid JSON, not an architecture (or list of them), an unsupported
        `format_version`, or indices that do not fit the space. The messages name `architecture`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Invalid value for argument `architecture`. Expected an existing architecture JSON file. "
            f"Received: architecture={path!r}"
        )
    with open(path) as handle:
        text = handle.read()
    try:
        data = json.loads(text)
        if allow_list and isinstance(data, list):
            return [Architecture.from_dict(item) for item in data]
        return Architecture.from_dict(data)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Invalid value for argument `architecture`: {path!r} is not an architecture file "
            f"({' '.join(str(error).split())})"
        ) from error


def resolve_architecture(
    architecture_path: Optional[str] = None,
    indices: Optional[str] = None,
    space: Optional[str] = None,
    reference: Optional[str] = None,
    reference_space: Optional[str] = None,
    as_point: bool = False,
    allow_list: bool = False,
) -> Union[ArchitectureLike, list]:
    """The architecture named by exactly one of: a JSON path, `indices` (+ `space`), a reference name.

    The one resolver of the `--architecture` / `--indices` + `--space` / `--reference` flags of
    `tools/train.py`, `tools/export_tflite.py`, `tools/benchmark_latency.py` and
    `tools/estimate_cost.py`. Cheap (reads one small file at most): tools call it while validating.

    Args:
      architecture_path: an architecture JSON file.
      indices: colon-separated decision indices of `space`, e.g. "0:1:0:2:...".
      space: the search space of `indices`.
      reference: a reference model name (`search_spaces.REFERENCE_NAMES`).
      reference_space: with `as_point`, the space to express `reference` in (default: the
        smallest space containing it).
      as_point: return a reference as an `Architecture` (a point of a space, which cost models
        need) instead of its name (which `build_model` builds directly).
      allow_list: the JSON file may hold a list of architectures (returned as a list).

    Returns:
      An `Architecture`, a reference name (a `str` that `build_model` accepts), or, with
      `allow_list` and a list file, a list of `Architecture`s.

    Raises:
      ValueError / FileNotFoundError: messages name the argument, what was expected and received.
    """
    given = {"architecture": architecture_path, "indices": indices, "reference": reference}
    chosen = [name for name, value in given.items() if value]
    if len(chosen) != 1:
        raise ValueError(
            "Invalid model source. Expected exactly one of `architecture`, `indices` (with `space`) or "
            f"`reference`. Received: {', '.join(f'{name}={given[name]!r}' for name in given)}"
        )
    if architecture_path:
        return load_architecture_json(architecture_path, allow_list=allow_list)
    if indices:
        if not space:
            raise ValueError(
                "Invalid value for argument `space`. Expected a search space name with `indices`. "
                f"Received: space={space!r}"
            )
        if not _INDICES_PATTERN.match(indices):
            raise ValueError(
                "Invalid value for argument `indices`. Expected colon-separated non-negative integers like "
                f"'0:1:0:2'. Received: indices={indices!r}"
            )
        return search_spaces.get_search_space(space).parse(indices)
    if reference not in search_spaces.REFERENCE_NAMES:
        raise ValueError(
            f"Invalid value for argument `reference`. Expected one of {list(search_spaces.REFERENCE_NAMES)}. "
            f"Received: reference={reference!r}"
        )
    if as_point:
        try:
            return search_spaces.reference_architecture(reference, space=reference_space)
        except ValueError as error:
            raise ValueError(f"Invalid value for argument `reference`: {error}") from error
    return reference


def weights_source(weights: str) -> tuple[str, str]:
    """`("keras", path)` for a `.h5` / `.keras` weights file, `("checkpoint", prefix)` for a TF
    checkpoint (a prefix, or a directory holding one, or a run directory with `checkpoints/`).

    Raises:
      FileNotFoundError: nothing loadable at `weights` (cheap: nothing is read but the paths).
    """
    if weights.endswith((".h5", ".keras")):
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                "Invalid value for argument `weights`. Expected an existing weights file. "
                f"Received: weights={weights!r}"
            )
        return "keras", weights
    prefix = tf.train.latest_checkpoint(weights) if os.path.isdir(weights) else weights
    if prefix is None and os.path.isdir(os.path.join(weights, "checkpoints")):
        prefix = tf.train.latest_checkpoint(os.path.join(weights, "checkpoints"))
    if prefix is None or not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(
            "Invalid value for argument `weights`. Expected a .h5 weights file, a checkpoint prefix or a "
            f"directory with a checkpoint. Received: weights={weights!r}"
        )
    return "checkpoint", prefix


def load_weights(model: keras.Model, weights: str) -> None:
    """Loads trained weights: a Keras weights file (`model.weights.h5`, as `tools/train.py`
    writes) or a TF checkpoint (a prefix, or a directory holding one, e.g. `run/checkpoints`).

    Raises:
      FileNotFoundError: nothing at `weights`.
      UserInputError: the file's weights do not fit the model (wrong architecture or sizes).
    """
    kind, path = weights_source(weights)
    if kind == "keras":
        try:
            model.load_weights(path)
        except (ValueError, KeyError) as error:
            details = " ".join(str(error).split())[:300]
            message = f"Invalid value for argument `weights`: they do not fit the model ({details})."
            raise UserInputError(message) from error
        return
    status = tf.train.Checkpoint(model=model).restore(path)
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as error:
        raise UserInputError(
            f"Invalid value for argument `weights`: checkpoint {path!r} does not fit the model "
            f"({' '.join(str(error).split())[:300]})."
        ) from error


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

    `module_name`: the module the flags are listed under in `--help` (default `sys.argv[0]`, the
    running tool, so that `--help` shows them).
    """
    names = {"module_name": module_name or sys.argv[0]}
    flags.DEFINE_string("architecture", None, "Path of an architecture.json (from tools/search.py).", **names)
    flags.DEFINE_string("indices", None, "Colon-separated decision indices (with --space).", **names)
    flags.DEFINE_string("space", None, "Search space of --indices.", **names)
    flags.DEFINE_string("reference", None, "A reference model name, e.g. mobilenet_v2.", **names)
    flags.DEFINE_string(
        "weights", None, "Trained weights: model.weights.h5, a checkpoint prefix or a run directory.", **names
    )
    flags.DEFINE_integer("num_classes", 1001, "Classifier outputs (must match --weights).", lower_bound=1, **names)
    flags.DEFINE_integer("image_size", 224, "Input resolution.", lower_bound=1, **names)
    flags.DEFINE_enum("quantization", "none", list(QUANTIZATIONS), "Quantisation mode.", **names)


def resolve_source_flags(flag_values) -> ArchitectureLike:
    """The architecture named by the flags of `define_source_flags` (see `resolve_architecture`)."""
    return resolve_architecture(flag_values.architecture, flag_values.indices, flag_values.space, flag_values.reference)
