"""Export of standalone models to TFLite, and their latency on the host (LiteRT) or a phone (adb).

    >>> from tunas_keras import export
    >>> model = export.build_export_model("mobilenet_v2", num_classes=10, image_size=32)
    >>> result = export.export_tflite(model, "/tmp/model.tflite", quantization="dynamic")
    >>> result.parity["max_abs_diff"], result.parity_path          # /tmp/model.parity.json
    >>> export.benchmark_tflite("/tmp/model.tflite", num_threads=1)["latency_ms"]["median"]

Modules: `tflite` (conversion, quantisation registry, parity), `qat` (quantisation-aware
training with tensorflow-model-optimization; imported lazily because tfmot is slow to import),
`sources` (architecture JSON / indices / reference / weights → model), `latency` (host timing
with provenance), `adb` (phone timing with `benchmark_model`).
"""

from tunas_keras.export.adb import build_adb_commands, parse_benchmark_model_output, run_adb_benchmark
from tunas_keras.export.latency import benchmark_tflite, compare_latency, host_device, runtime_info
from tunas_keras.export.sources import build_export_model, load_architecture_json, load_weights, resolve_architecture
from tunas_keras.export.tflite import (
    QUANTIZATIONS,
    STANDALONE_OPS,
    ExportResult,
    check_parity,
    convert_to_tflite,
    export_tflite,
    fixed_parity_images,
    parity_path_for,
    run_tflite,
    tflite_op_names,
)

__all__ = [
    "QUANTIZATIONS",
    "STANDALONE_OPS",
    "ExportResult",
    "benchmark_tflite",
    "build_adb_commands",
    "build_export_model",
    "check_parity",
    "compare_latency",
    "convert_to_tflite",
    "export_tflite",
    "fixed_parity_images",
    "host_device",
    "load_architecture_json",
    "load_weights",
    "parity_path_for",
    "parse_benchmark_model_output",
    "resolve_architecture",
    "run_adb_benchmark",
    "run_tflite",
    "runtime_info",
    "tflite_op_names",
]
