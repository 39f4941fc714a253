"""Latency of a `.tflite` on this host (LiteRT), or on an Android phone over adb, with provenance.

    python tools/benchmark_latency.py --model=/tmp/mnv2.tflite --num_threads=1 --runs=100
    python tools/benchmark_latency.py --reference=mobilenet_v2 --quantization=int8 --json_output=lat.json
    python tools/benchmark_latency.py --model=/tmp/mnv2.tflite --adb --num_threads=1   # Pixel + benchmark_model
    python tools/benchmark_latency.py --compare_keras_mobilenet_v2 --threads=1,2       # ours vs keras.applications

An architecture (--architecture / --indices + --space / --reference) is exported to a temporary
directory first (see tools/export_tflite.py for the flags' meaning); with `--task=detection`, the
SSDLite detector with its post-processing op (docs/detection.md).
"""

import json
import os
import sys
import tempfile

from absl import flags

from detection import config as detection_config
from tunas_keras import cli, errors
from tunas_keras.export import adb, pipeline, sources
from tunas_keras.training.trainer import check_writable_file, write_atomic

flags.DEFINE_string(
    "model", None, "A .tflite file to time (instead of exporting --architecture / --indices / --reference)."
)
sources.define_source_flags(flags)  # the model exported first (unless --model)
detection_config.define_task_flag(flags)  # --task=detection: export the SSDLite detector first
flags.DEFINE_string("dataset", "embedded", "Dataset for int8 calibration of the exported model.")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads.", lower_bound=1)
flags.DEFINE_integer("warmup_runs", 10, "Untimed runs first.", lower_bound=0)
flags.DEFINE_integer("runs", 50, "Timed runs.", lower_bound=1)
flags.DEFINE_boolean("use_xnnpack", True, "Use the XNNPACK delegate (LiteRT's default on CPU).")
flags.DEFINE_string("json_output", None, "Write the full result (with provenance) as JSON here.")
adb.define_adb_flags(flags, module_name=sys.argv[0])
flags.DEFINE_boolean(
    "compare_keras_mobilenet_v2", False, "Time our mobilenet_v2 against keras.applications.MobileNetV2."
)
flags.DEFINE_list("threads", ["1", "2"], "Thread counts of --compare_keras_mobilenet_v2.")
flags.DEFINE_integer("rounds", 20, "Interleaved rounds of --compare_keras_mobilenet_v2.", lower_bound=1)
flags.DEFINE_integer("runs_per_round", 5, "Runs per model per round of --compare_keras_mobilenet_v2.", lower_bound=1)
FLAGS = flags.FLAGS


def _validate():
    """The architecture to export (None with --model; a detection export plan with --task=detection);
    checks every flag before anything runs."""
    if FLAGS.json_output:
        check_writable_file(FLAGS.json_output, "json_output")
    if FLAGS.compare_keras_mobilenet_v2:
        cli.numbers(FLAGS.threads, "threads", minimum=1)
        return None
    if FLAGS.model:
        if not FLAGS.model.endswith(".tflite") or not os.path.isfile(FLAGS.model):
            raise ValueError(
                f"Invalid value for argument `model`. Expected an existing .tflite file. Received: {FLAGS.model!r}"
            )
        return None
    workdir_model = os.path.join(tempfile.gettempdir(), "model.tflite")
    if FLAGS.task == "detection":  # the architecture with its export plan (detection/cli.py)
        from detection import cli as detection_cli  # pylint: disable=import-outside-toplevel

        return detection_cli.check_export(FLAGS, workdir_model)
    architecture = sources.resolve_source_flags(FLAGS)
    pipeline.check_export_arguments(
        workdir_model, FLAGS.quantization, FLAGS.image_size, FLAGS.weights, FLAGS.dataset or None
    )
    return architecture


def _model_path(workdir: str, architecture) -> str:
    if FLAGS.model:
        return FLAGS.model
    if FLAGS.task == "detection":
        from detection import cli as detection_cli  # pylint: disable=import-outside-toplevel

        return detection_cli.export(FLAGS, architecture, os.path.join(workdir, "model.tflite")).model_path
    result = pipeline.export_standalone(
        architecture,
        os.path.join(workdir, "model.tflite"),
        quantization=FLAGS.quantization,
        num_classes=FLAGS.num_classes,
        image_size=FLAGS.image_size,
        weights=FLAGS.weights,
        dataset=FLAGS.dataset or None,
    )
    return result.model_path


def _print_comparison(result: dict) -> None:
    print(f"params: {result['params']}")
    for name, ops in result["ops"].items():
        print(f"ops {name}: {dict(sorted(ops.items()))}")
    for num_threads, comparison in result["threads"].items():
        for name, model in comparison["models"].items():
            latency = model["latency_ms"]
            print(
                f"threads={num_threads} {name:20s} min={latency['min']:.3f} median={latency['median']:.3f} "
                f"p90={latency['p90']:.3f} ms"
            )
        ratio = comparison["ratio_median"]["tunas_keras"]
        spread = comparison["ratio_per_round"]["tunas_keras"]
        print(
            f"threads={num_threads} ratio ours/keras (median) = {ratio:.4f}  per-round [min, median, max] = "
            f"[{spread[0]:.3f}, {spread[1]:.3f}, {spread[2]:.3f}]"
        )


def _print_result(result: dict) -> None:
    latency = result["latency_ms"]
    print(json.dumps(result["provenance"], indent=2))
    print("latency ms: " + "  ".join(f"{key}={value:.3f}" for key, value in latency.items()))


def main(argv):
    del argv
    with errors.user_input():
        architecture = _validate()
    from tunas_keras.export import latency  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as workdir:
        if FLAGS.compare_keras_mobilenet_v2:
            result = pipeline.compare_with_keras_mobilenet_v2(
                workdir,
                FLAGS.image_size,
                tuple(cli.numbers(FLAGS.threads, "threads")),
                FLAGS.warmup_runs,
                FLAGS.rounds,
                FLAGS.runs_per_round,
                FLAGS.use_xnnpack,
            )
            _print_comparison(result)
        elif FLAGS.adb:
            result = adb.run_adb_benchmark(
                _model_path(workdir, architecture),
                num_threads=FLAGS.num_threads,
                warmup_runs=FLAGS.warmup_runs,
                runs=FLAGS.runs,
                use_xnnpack=FLAGS.use_xnnpack,
                **adb.adb_options(FLAGS),
            )
            _print_result(result)
        else:
            result = latency.benchmark_tflite(
                _model_path(workdir, architecture), FLAGS.num_threads, FLAGS.warmup_runs, FLAGS.runs, FLAGS.use_xnnpack
            )
            _print_result(result)
    if FLAGS.json_output:
        write_atomic(FLAGS.json_output, json.dumps(result, indent=2, default=str))
        print(f"Wrote {FLAGS.json_output}")


if __name__ == "__main__":
    cli.run(main)
