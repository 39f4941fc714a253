r"""Exports a standalone model to `.tflite` and writes its Keras-vs-TFLite parity report beside it.

    python tools/export_tflite.py --reference=mobilenet_v2 --output=/tmp/mnv2.tflite
    python tools/export_tflite.py --architecture=runs/search/architecture.json \
        --weights=runs/train/model.weights.h5 --num_classes=10 --image_size=32 \
        --quantization=int8 --output=runs/train/model_int8.tflite
    python tools/export_tflite.py --indices=0:1:0:... --space=proxyless --quantization=int8 \
        --qat_steps=500 --output=/tmp/qat.tflite        # quantisation-aware fine-tuning first

Writes `X.tflite` and `X.parity.json` (max / mean |Keras - TFLite| of the logits and top-1
agreement on a fixed held-out batch, plus the op list), both atomically. `--task=detection`
exports an SSDLite detector with TFLite's detection post-processing op (docs/detection.md).
"""

import json

from absl import flags

from detection import config as detection_config
from tunas_keras import cli, errors
from tunas_keras.export import pipeline, sources, tflite

sources.define_source_flags(flags)
detection_config.define_task_flag(flags)  # --task=detection: SSDLite + TFLite_Detection_PostProcess
flags.DEFINE_string("output", None, "Output .tflite path (its directory must exist).", required=True)
flags.DEFINE_string("dataset", "embedded", "tunas_keras.datasets name for calibration / parity / QAT; '' = synthetic.")
flags.DEFINE_integer(
    "num_calibration_images", tflite.DEFAULT_CALIBRATION_IMAGES, "int8 calibration images.", lower_bound=1
)
flags.DEFINE_integer("num_parity_images", 32, "Images of the parity batch.", lower_bound=1)
flags.DEFINE_integer(
    "qat_steps", 0, "Quantisation-aware fine-tuning steps before the int8 conversion (0 = PTQ).", lower_bound=0
)
flags.DEFINE_integer("qat_batch_size", 32, "QAT batch size.", lower_bound=1)
flags.DEFINE_float("qat_learning_rate", 1e-4, "QAT Adam learning rate.", lower_bound=0.0)
flags.DEFINE_enum("converter", "concrete_function", list(tflite.CONVERTERS), "TFLite converter route.")
FLAGS = flags.FLAGS


def _export_classifier(architecture):
    return pipeline.export_standalone(
        architecture,
        FLAGS.output,
        quantization=FLAGS.quantization,
        num_classes=FLAGS.num_classes,
        image_size=FLAGS.image_size,
        weights=FLAGS.weights,
        dataset=FLAGS.dataset or None,
        num_calibration_images=FLAGS.num_calibration_images,
        num_parity_images=FLAGS.num_parity_images,
        qat_steps=FLAGS.qat_steps,
        qat_batch_size=FLAGS.qat_batch_size,
        qat_learning_rate=FLAGS.qat_learning_rate,
        converter=FLAGS.converter,
    )


def main(argv):
    del argv
    detection = FLAGS.task == "detection"  # SSDLite + TFLite_Detection_PostProcess (detection/cli.py)
    if detection:
        from detection import cli as detection_cli  # pylint: disable=import-outside-toplevel
    with errors.user_input():
        if not FLAGS.output.endswith(".tflite"):
            raise ValueError(
                f"Invalid value for argument `output`. Expected a path ending in '.tflite'. Received: {FLAGS.output!r}"
            )
        if detection:
            plan = detection_cli.check_export(FLAGS, FLAGS.output)
        else:
            architecture = sources.resolve_source_flags(FLAGS)
            pipeline.check_export_arguments(
                FLAGS.output,
                FLAGS.quantization,
                FLAGS.image_size,
                FLAGS.weights,
                FLAGS.dataset or None,
                FLAGS.qat_steps,
            )
    result = detection_cli.export(FLAGS, plan, FLAGS.output) if detection else _export_classifier(architecture)
    parity = {key: value for key, value in result.parity.items() if key not in ("ops", "architecture")}
    print(json.dumps(parity, indent=2))
    print(f"Wrote {result.model_path} ({result.size_bytes / 1e6:.2f} MB) and {result.parity_path}")


if __name__ == "__main__":
    cli.run(main)
