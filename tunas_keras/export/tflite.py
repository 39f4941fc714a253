"""Standalone Keras model → `.tflite`, with a Keras-vs-TFLite parity check written beside it.

Quantisation modes live in the registry `QUANTIZATIONS` (name → converter settings):

    none      float32 weights and activations;
    fp16      float16 weights (dequantised to float32 at load time on CPU);
    dynamic   int8 weights, float activations quantised on the fly ("dynamic range");
    int8      full-integer post-training quantisation: int8 weights, activations, input and
              output, calibrated on representative images.

Every export runs `check_parity` (Keras logits vs TFLite logits on a fixed batch: max / mean
absolute difference, top-1 agreement) and writes `model.parity.json` next to `model.tflite`.
Both files are written atomically (temporary file + `os.replace`), so a failed export leaves
no half-written file.

    >>> model = tunas_keras.build_model("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3))
    >>> result = export_tflite(model, "/tmp/mnv2/model.tflite", quantization="int8",
    ...                        representative_images=calibration_images)
    >>> result.parity["top1_agreement"]

References: design.md rule 12 (export only from the standalone model, no masks or choice ops).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tunas_keras.training.trainer import write_atomic

PARITY_FORMAT_VERSION = 1
DEFAULT_CALIBRATION_IMAGES = 100
# Ops a standalone classifier may contain after conversion. Anything else (a Flex/TF op, a
# custom op, a control-flow or gather op left by a mask or a choice) means the exported graph
# carries something the standalone model should not.
STANDALONE_OPS = frozenset(
    {
        "ADD",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "LOGISTIC",
        "MEAN",
        "MUL",
        "RESHAPE",
        "RELU",
        "RELU6",
        "QUANTIZE",
        "DEQUANTIZE",
        "PAD",
        "AVERAGE_POOL_2D",
    }
)

RepresentativeImages = Union[Iterable, Callable[[], Iterable]]


def _no_setup(converter: tf.lite.TFLiteConverter, representative: Optional[Callable]) -> None:
    del converter, representative


def _fp16_setup(converter: tf.lite.TFLiteConverter, representative: Optional[Callable]) -> None:
    del representative
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _dynamic_setup(converter: tf.lite.TFLiteConverter, representative: Optional[Callable]) -> None:
    del representative
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def _int8_setup(converter: tf.lite.TFLiteConverter, representative: Optional[Callable]) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    # Full-integer: fail the conversion rather than silently keep float kernels.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


@dataclasses.dataclass(frozen=True)
class QuantizationMode:
    """How one `--quantization` value configures the converter.

    Attributes:
      name: the registry key.
      setup: `setup(converter, representative_dataset)` sets the converter's options.
      needs_representative_images: whether calibration images are required.
      description: one line for `--help` and the docs.
    """

    name: str
    setup: Callable
    needs_representative_images: bool
    description: str


QUANTIZATIONS: dict[str, QuantizationMode] = {
    mode.name: mode
    for mode in (
        QuantizationMode("none", _no_setup, False, "float32 weights and activations"),
        QuantizationMode("fp16", _fp16_setup, False, "float16 weights, float32 compute on CPU"),
        QuantizationMode("dynamic", _dynamic_setup, False, "int8 weights, dynamically quantised activations"),
        QuantizationMode("int8", _int8_setup, True, "full-integer (int8 weights, activations, input, output)"),
    )
}


def get_quantization(name: str) -> QuantizationMode:
    """Looks up `name` in `QUANTIZATIONS`."""
    if name not in QUANTIZATIONS:
        raise ValueError(
            f"Invalid value for argument `quantization`. Expected one of {list(QUANTIZATIONS)}. "
            f"Received: quantization={name!r}"
        )
    return QUANTIZATIONS[name]


def iterate_images(images: RepresentativeImages, input_shape: tuple, limit: int) -> Iterable[np.ndarray]:
    """Yields up to `limit` single images `(1, h, w, c)` float32 from many kinds of sources.

    Args:
      images: an array `(n, h, w, c)`, an iterable of arrays `(h, w, c)` or batches
        `(b, h, w, c)`, of `(images, labels)` pairs (a `tf.data.Dataset` of batches works), or a
        callable returning such an iterable.
      input_shape: the model's `(h, w, c)`, checked on every image.
      limit: the number of images to yield at most.
    """
    source = images() if callable(images) else images
    if isinstance(source, (np.ndarray, tf.Tensor)):
        source = [source]
    count = 0
    for item in source:
        if isinstance(item, (tuple, list)):
            item = item[0]
        batch = np.asarray(item, dtype=np.float32)
        batch = batch[None] if batch.ndim == 3 else batch
        if batch.shape[1:] != tuple(input_shape):
            raise ValueError(
                f"Invalid value for argument `representative_images`. Expected images of shape {tuple(input_shape)}. "
                f"Received: {batch.shape[1:]}"
            )
        for image in batch:
            if count >= limit:
                return
            count += 1
            yield image[None]


def model_input_shape(model: keras.Model) -> tuple:
    """The `(h, w, c)` of a single-input image model."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or len(shape) != 3 or any(size is None for size in shape):
        raise ValueError(
            "Invalid value for argument `model`. Expected a single-input model with a static (h, w, c) input. "
            f"Received inputs: {[tuple(t.shape) for t in model.inputs]}"
        )
    return shape


def _concrete_converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """A converter over a batch-1 inference function of `model`.

    Converting from the concrete function (frozen graph) takes ~3 s for a MobileNet, while
    `from_keras_model` first writes a tf_keras SavedModel with every layer's call function and
    takes 40-60 s on our 2-core CI; both give the same ops (tested). Batch 1 is fixed, as on a
    phone, so the converter needs no shape ops for the dynamic batch.
    """
    signature = tf.TensorSpec((1, *model_input_shape(model)), tf.float32, name="images")
    function = tf.function(lambda images: model(images, training=False), input_signature=[signature])
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])


def _keras_converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    return tf.lite.TFLiteConverter.from_keras_model(model)


CONVERTERS: dict[str, Callable[[keras.Model], tf.lite.TFLiteConverter]] = {
    "concrete_function": _concrete_converter,
    "keras": _keras_converter,
}


def convert_to_tflite(
    model: keras.Model,
    quantization: str = "none",
    representative_images: Optional[RepresentativeImages] = None,
    num_calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    converter: str = "concrete_function",
) -> bytes:
    """Converts a standalone (or QAT-wrapped) tf_keras model to a TFLite flatbuffer.

    Args:
      model: a single-input image classifier (e.g. from `tunas_keras.build_model`).
      quantization: a key of `QUANTIZATIONS`.
      representative_images: calibration images (see `iterate_images`); required for int8.
      num_calibration_images: how many of them to use.
      converter: a key of `CONVERTERS`.

    Returns:
      The `.tflite` flatbuffer.

    Raises:
      ValueError: unknown quantization or converter, or int8 without representative images.
    """
    mode = get_quantization(quantization)
    if converter not in CONVERTERS:
        raise ValueError(
            f"Invalid value for argument `converter`. Expected one of {list(CONVERTERS)}. "
            f"Received: converter={converter!r}"
        )
    if mode.needs_representative_images and representative_images is None:
        raise ValueError(
            f"Invalid value for argument `representative_images`. Expected calibration images for "
            f"quantization={quantization!r}. Received: representative_images=None"
        )
    representative = None
    if representative_images is not None:
        # Read (and check) the images before the slow conversion; a generator is consumed once.
        calibration = list(iterate_images(representative_images, model_input_shape(model), num_calibration_images))
        if not calibration:
            raise ValueError(
                "Invalid value for argument `representative_images`. Expected at least one image. "
                "Received: an empty source"
            )

        def representative():
            for image in calibration:
                yield [image]

    tflite_converter = CONVERTERS[converter](model)
    mode.setup(tflite_converter, representative)
    return tflite_converter.convert()


def make_interpreter(model_content: bytes, num_threads: Optional[int] = None, use_xnnpack: bool = True):
    """A LiteRT interpreter with tensors allocated; `use_xnnpack=False` drops the default delegate."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # pylint: disable=import-outside-toplevel

    resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(
        model_content=model_content, num_threads=num_threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    return interpreter


def tflite_op_names(model_content: bytes) -> list[str]:
    """The builtin op of every node of the model's graph, in execution order.

    Read with the default delegate disabled: XNNPACK would replace most nodes by one DELEGATE.
    """
    interpreter = make_interpreter(model_content, use_xnnpack=False)
    return [op["op_name"] for op in interpreter._get_ops_details()]  # pylint: disable=protected-access


def run_tflite(model_content: bytes, images: np.ndarray, num_threads: Optional[int] = None) -> np.ndarray:
    """Runs a batch-1 model image by image; (de)quantises int8 inputs and outputs.

    Args:
      model_content: the `.tflite` flatbuffer.
      images: float32 `(n, h, w, c)`, the same preprocessing as the Keras model's input.

    Returns:
      float32 outputs `(n, num_classes)`.
    """
    interpreter = make_interpreter(model_content, num_threads=num_threads)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for image in np.asarray(images, np.float32):
        value = image[None]
        scale, zero_point = input_detail["quantization"]
        if input_detail["dtype"] != np.float32:
            info = np.iinfo(input_detail["dtype"])
            value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(input_detail["index"], value.astype(input_detail["dtype"]))
        interpreter.invoke()
        output = interpreter.get_tensor(output_detail["index"]).astype(np.float32)
        scale, zero_point = output_detail["quantization"]
        if output_detail["dtype"] != np.float32:
            output = (output - zero_point) * scale
        outputs.append(output[0])
    return np.stack(outputs)


def check_parity(model: keras.Model, model_content: bytes, images: np.ndarray) -> dict:
    """Compares the Keras model and its TFLite conversion on a fixed batch.

    Returns:
      `{"max_abs_diff", "mean_abs_diff", "top1_agreement", "num_images", "max_abs_logit",
      "ops": [...]}`; the differences are of the logits (float32 for every quantisation).
    """
    images = np.asarray(images, np.float32)
    expected = model(images, training=False).numpy()
    received = run_tflite(model_content, images)
    difference = np.abs(expected - received)
    agreement = np.mean(np.argmax(expected, axis=-1) == np.argmax(received, axis=-1))
    return {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float(agreement),
        "num_images": int(images.shape[0]),
        "max_abs_logit": float(np.abs(expected).max()),
        "ops": sorted(set(tflite_op_names(model_content))),
    }


@dataclasses.dataclass
class ExportResult:
    """What `export_tflite` wrote: the model path, the parity path and the parity report."""

    model_path: str
    parity_path: str
    parity: dict
    size_bytes: int


def parity_path_for(model_path: str) -> str:
    """`dir/model.tflite` → `dir/model.parity.json`."""
    root, _ = os.path.splitext(model_path)
    return root + ".parity.json"


def check_output_path(output_path: str) -> str:
    if not isinstance(output_path, str) or not output_path.endswith(".tflite"):
        raise ValueError(
            f"Invalid value for argument `output_path`. Expected a path ending in '.tflite'. "
            f"Received: output_path={output_path!r}"
        )
    directory = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Invalid value for argument `output_path`: expected an existing directory {directory!r}. "
            f"Received: output_path={output_path!r}"
        )
    return output_path


def fixed_parity_images(input_shape: tuple, num_images: int = 16, seed: int = 0) -> np.ndarray:
    """A fixed synthetic batch: smooth random colour fields plus noise, roughly unit variance."""
    rng = np.random.default_rng(seed)
    height, width, channels = input_shape
    coarse = rng.normal(size=(num_images, 4, 4, channels)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method="bilinear").numpy()
    return smooth + 0.3 * rng.normal(size=smooth.shape).astype(np.float32)


def export_tflite(
    model: keras.Model,
    output_path: str,
    quantization: str = "none",
    representative_images: Optional[RepresentativeImages] = None,
    parity_images: Optional[np.ndarray] = None,
    metadata: Optional[dict[str, Any]] = None,
    **convert_kwargs,
) -> ExportResult:
    """Converts `model`, checks parity and writes `output_path` plus its `.parity.json`.

    Args:
      model: the standalone model (from `tunas_keras.build_model`, or its QAT-wrapped version).
      output_path: where the `.tflite` goes; its directory must exist.
      quantization: a key of `QUANTIZATIONS`.
      representative_images: calibration images (required for int8; see `iterate_images`).
      parity_images: the fixed batch `(n, h, w, c)` of the parity check; defaults to the first
        16 representative images, else to `fixed_parity_images`.
      metadata: extra JSON-serialisable fields for the parity file (architecture, source, ...).
      **convert_kwargs: `num_calibration_images`, `converter` (see `convert_to_tflite`).

    Returns:
      An `ExportResult`.

    Raises:
      ValueError / FileNotFoundError: bad arguments; nothing is written then.
    """
    check_output_path(output_path)
    model_content = convert_to_tflite(model, quantization, representative_images, **convert_kwargs)
    if parity_images is None:
        shape = model_input_shape(model)
        if representative_images is not None:
            parity_images = np.concatenate(list(itertools.islice(iterate_images(representative_images, shape, 16), 16)))
        else:
            parity_images = fixed_parity_images(shape)
    parity = {
        "format_version": PARITY_FORMAT_VERSION,
        "model": os.path.basename(output_path),
        "quantization": quantization,
        **check_parity(model, model_content, parity_images),
        **(metadata or {}),
    }
    write_atomic(output_path, model_content)
    parity_path = parity_path_for(output_path)
    try:
        write_atomic(parity_path, json.dumps(parity, indent=2))
    except BaseException:
        os.remove(output_path)  # A model without its parity report is a half-finished export.
        raise
    return ExportResult(output_path, parity_path, parity, len(model_content))
