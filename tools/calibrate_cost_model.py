"""Fits a linear latency model (Pixel-1 feature layout) to measured latencies of sampled architectures.

    python tools/calibrate_cost_model.py --output_dir=runs/calibration              # this host, LiteRT
    python tools/calibrate_cost_model.py --output_dir=runs/pixel --adb --num_threads=1  # a phone over adb
    python tools/calibrate_cost_model.py --output_dir=runs/calibration --fit_only --statistic=min
    python tools/search.py --cost_model=runs/calibration/cost_model.json ...

Measurements are cached in <output_dir>/measurements.jsonl: rerunning the same command after a
kill measures only what is missing. Writes the cost model (--output), calibration_report.json
and calibration.png (predicted vs measured, training and held-out architectures).
See `tunas_keras.cost_models.calibration`.
"""

import os
import sys

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.cost_models import calibration
from tunas_keras.export import adb, tflite

flags.DEFINE_string("space", "proxyless", "Search space to calibrate.")
flags.DEFINE_string("output_dir", None, "Measurement cache, report and plot go here.", required=True)
flags.DEFINE_string("output", None, "The cost-model JSON (default <output_dir>/cost_model.json).")
flags.DEFINE_integer("num_train", 200, "Uniformly sampled training architectures (plus smallest and largest).")
flags.DEFINE_integer("num_heldout", 50, "Uniformly sampled held-out architectures (>= 2).")
flags.DEFINE_boolean("include_extremes", True, "Add the smallest and the largest architecture to the training set.")
flags.DEFINE_integer("seed", 0, "Sampling seed (same seed, same architectures).")
flags.DEFINE_integer("image_size", 224, "Input resolution of the exported models.")
flags.DEFINE_integer("num_classes", 1001, "Classifier outputs of the exported models.")
flags.DEFINE_enum("quantization", "none", list(tflite.QUANTIZATIONS), "Quantisation of the exported models.")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
flags.DEFINE_boolean("use_xnnpack", True, "Use the XNNPACK delegate.")
flags.DEFINE_integer("warmup_runs", 10, "Untimed runs before timing each model.")
flags.DEFINE_integer("runs", 50, "Timed runs per model.")
flags.DEFINE_enum("statistic", "median", list(calibration.STATISTICS), "Per-model latency statistic that is fitted.")
flags.DEFINE_float("l2", None, "Ridge strength (relative to the mean squared error); default: 5-fold cross-validated.")
adb.define_adb_flags(flags, module_name=sys.argv[0])
flags.DEFINE_boolean("measure_only", False, "Only measure (fill the cache); no fit.")
flags.DEFINE_boolean("fit_only", False, "Only fit the cached measurements; measure nothing.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with errors.user_input():
        settings = calibration.CalibrationSettings(
            space=FLAGS.space, image_size=FLAGS.image_size, num_classes=FLAGS.num_classes,
            quantization=FLAGS.quantization, num_threads=FLAGS.num_threads, use_xnnpack=FLAGS.use_xnnpack,
            target="adb" if FLAGS.adb else "host",
        )
        output = FLAGS.output or os.path.join(FLAGS.output_dir, "cost_model.json")
        calibration.check_arguments(
            output, FLAGS.num_train, FLAGS.num_heldout, FLAGS.seed, FLAGS.statistic, FLAGS.l2, FLAGS.fit_only,
            FLAGS.measure_only,
        )
        if FLAGS.fit_only:  # the cache must exist and match the settings
            calibration.read_cache(os.path.join(FLAGS.output_dir, calibration.CACHE_NAME), settings)
    options = adb.adb_options(FLAGS) if FLAGS.adb else None
    measure = calibration.make_measure(settings, FLAGS.warmup_runs, FLAGS.runs, options)
    report = calibration.calibrate(
        settings, FLAGS.output_dir, output=FLAGS.output, num_train=FLAGS.num_train, num_heldout=FLAGS.num_heldout,
        seed=FLAGS.seed, statistic=FLAGS.statistic, l2=FLAGS.l2, include_extremes=FLAGS.include_extremes,
        measure=measure, fit_only=FLAGS.fit_only, measure_only=FLAGS.measure_only,
    )
    if FLAGS.measure_only:
        print(f"{report['num_measured']} architectures measured in {report['cache_path']}")
        return
    print(calibration.format_report(report))
    print(f"Wrote {report['cost_model_path']}, {report['report_path']}, {report['plot_path']}")


if __name__ == "__main__":
    cli.run(main)
