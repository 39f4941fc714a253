"""Calibrates a latency cost model to this host (LiteRT) or a phone (--adb): per-layer tables + correction.

    python tools/calibrate_cost_model.py --space=proxyless --output_dir=runs/calibration          # this host
    python tools/calibrate_cost_model.py --output_dir=runs/pixel --adb --num_threads=1 --cpus=4-7  # a phone
    python tools/calibrate_cost_model.py --output_dir=runs/calibration --fit_only --method=ridge
    python tools/search.py --cost_model=runs/calibration/cost_model.json ...

Times every layer variant (or op) of the space in isolation and 60 + 50 whole networks, in
interleaved rounds with anchors; fits the per-layer table, the table + a small correction, and a
ridge over one-hot features, and compares them on the held-out networks beside the test-retest
noise floor (warnings when the noise is above what the fit claims). Measurements are cached in
<output_dir>/measurements.jsonl: rerunning the same command after a kill measures only what is
missing. Writes the chosen cost model (--output), cost_model_<method>.json for every method,
calibration_report.json, micro_latency.json and calibration.png. See
`tunas_keras.cost_models.calibration`.
"""

import os
import sys

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.cost_models import calibration
from tunas_keras.export import adb, tflite

DEFAULTS = calibration.Protocol()

flags.DEFINE_string("space", "proxyless", "Search space to calibrate.")
flags.DEFINE_string("output_dir", None, "Measurement cache, report and plot go here.", required=True)
flags.DEFINE_string("output", None, "The chosen cost-model JSON (default <output_dir>/cost_model.json).")
flags.DEFINE_enum("method", "table_corrected", list(calibration.METHODS), "The model written to --output.")
flags.DEFINE_enum(
    "unit",
    "auto",
    list(calibration.UNITS),
    "Micro-benchmark layers or ops (auto: layers when there are at most --max_models).",
)
flags.DEFINE_integer("max_models", 2000, "Micro-benchmark models at most; more ops are sampled and predicted.")
flags.DEFINE_integer("num_train", 58, "Uniformly sampled training networks (plus smallest and largest).")
flags.DEFINE_integer("num_heldout", 50, "Uniformly sampled held-out networks (>= 2), never used in a fit.")
flags.DEFINE_boolean("include_extremes", True, "Add the smallest and the largest network to the training set.")
flags.DEFINE_integer("seed", 0, "Sampling seed (same seed, same networks and order).")
flags.DEFINE_integer("image_size", 224, "Input resolution of the exported models.")
flags.DEFINE_integer("num_classes", 1001, "Classifier outputs of the exported models.")
flags.DEFINE_enum("quantization", "none", list(tflite.QUANTIZATIONS), "Quantisation of the exported models.")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
flags.DEFINE_string("cpus", None, "Pin the timing to these CPUs, e.g. 1 or 0,2 or 4-7 (taskset on a phone).")
flags.DEFINE_boolean("use_xnnpack", True, "Use the XNNPACK delegate.")
flags.DEFINE_integer("rounds", DEFAULTS.rounds, "Interleaved rounds of the whole networks.")
flags.DEFINE_integer("warmup_runs", DEFAULTS.warmup_runs, "Untimed runs before each block of a network.")
flags.DEFINE_integer("runs", DEFAULTS.runs, "Timed runs per block of a network.")
flags.DEFINE_integer("micro_rounds", DEFAULTS.micro_rounds, "Interleaved rounds of the micro-benchmarks.")
flags.DEFINE_integer("micro_warmup_runs", DEFAULTS.micro_warmup_runs, "Untimed runs per micro-benchmark block.")
flags.DEFINE_integer("micro_runs", DEFAULTS.micro_runs, "Timed runs per micro-benchmark block.")
flags.DEFINE_integer("num_anchors", DEFAULTS.num_anchors, "Items re-timed through every round (drift).")
flags.DEFINE_integer("anchor_every", DEFAULTS.anchor_every, "Re-time the anchors every this many items.")
flags.DEFINE_enum(
    "statistic", "min", list(calibration.STATISTICS), "Per-block latency statistic (min: the least noisy here)."
)
flags.DEFINE_float("l2", None, "Ridge strength of --method=ridge; default: 5-fold cross-validated.")
flags.DEFINE_float(
    "max_noise_percent",
    calibration.DEFAULT_MAX_NOISE_PERCENT,
    "Warn when rounds of networks disagree by more (MAPE; micro-benchmarks: twice; anchor drift: twice the phase's).",
)
flags.DEFINE_string("model_dir", None, "Where exported models are kept (default <output_dir>/models).")
adb.define_adb_flags(flags, module_name=sys.argv[0])
flags.DEFINE_boolean("measure_only", False, "Only measure (fill the cache); no fit.")
flags.DEFINE_boolean("fit_only", False, "Only fit the cached measurements; measure nothing.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with errors.user_input():  # every argument, before anything is exported or measured
        settings = calibration.CalibrationSettings(
            space=FLAGS.space,
            image_size=FLAGS.image_size,
            num_classes=FLAGS.num_classes,
            quantization=FLAGS.quantization,
            num_threads=FLAGS.num_threads,
            use_xnnpack=FLAGS.use_xnnpack,
            target="adb" if FLAGS.adb else "host",
            cpus=FLAGS.cpus,
        )
        options = calibration.Protocol(
            rounds=FLAGS.rounds,
            warmup_runs=FLAGS.warmup_runs,
            runs=FLAGS.runs,
            micro_rounds=FLAGS.micro_rounds,
            micro_warmup_runs=FLAGS.micro_warmup_runs,
            micro_runs=FLAGS.micro_runs,
            num_anchors=FLAGS.num_anchors,
            anchor_every=FLAGS.anchor_every,
        )
        calibration.check_arguments(
            FLAGS.output or os.path.join(FLAGS.output_dir, "cost_model.json"),
            FLAGS.num_train,
            FLAGS.num_heldout,
            FLAGS.seed,
            FLAGS.statistic,
            FLAGS.l2,
            FLAGS.method,
            FLAGS.fit_only,
            FLAGS.measure_only,
            FLAGS.max_models,
            FLAGS.max_noise_percent,
        )
    device = None
    if FLAGS.adb and not FLAGS.fit_only:
        model_dir = FLAGS.model_dir or os.path.join(FLAGS.output_dir, "models")
        device = calibration.devices.AdbDevice(settings, model_dir, adb.adb_options(FLAGS))
    report = calibration.calibrate(
        settings,
        FLAGS.output_dir,
        output=FLAGS.output,
        num_train=FLAGS.num_train,
        num_heldout=FLAGS.num_heldout,
        seed=FLAGS.seed,
        statistic=FLAGS.statistic,
        method=FLAGS.method,
        unit=FLAGS.unit,
        max_models=FLAGS.max_models,
        options=options,
        l2=FLAGS.l2,
        include_extremes=FLAGS.include_extremes,
        device=device,
        model_dir=FLAGS.model_dir,
        fit_only=FLAGS.fit_only,
        measure_only=FLAGS.measure_only,
        max_noise_percent=FLAGS.max_noise_percent,
    )
    if FLAGS.measure_only:
        print(f"{report['num_records']} blocks measured in {report['cache_path']}")
        return
    print(calibration.format_report(report))
    print(f"Wrote {report['cost_model_path']}, {report['report_path']}, {report['plot_path']}")


if __name__ == "__main__":
    cli.run(main)
