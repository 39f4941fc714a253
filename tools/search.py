r"""Runs a TuNAS search (weight-sharing supernet + REINFORCE controller) and writes its results.

With no flags: the embedded offline dataset, the `proxyless` space, T0 = 84 ms of the simulated
Pixel-1 model, 800 steps of batch 64 at 64 px with 4 architectures per step (about 6-7 minutes
on an idle 2-core CPU). It ends with the architecture as a table, its cost against T0, the
report (report.html, report.png) and the train -> export -> latency commands for it. The
paper's ImageNet run is one config file away (configs/imagenet_<space>.yaml: batch 4096, 90
epochs, 224 px, RMSProp, RL lr 3e-4, 32 architectures per step):

    python tools/search.py --config=configs/imagenet_proxyless.yaml --strategy=mirrored --model_dir=runs/imagenet

`--task=detection` searches an SSDLite backbone instead (docs/detection.md has the COCO command).

Every field of `tunas_keras.training.config.SearchConfig` is a flag (`--help` lists them with
type and default); `--config run.yaml` loads a file and flags override it. A run killed at any
moment (even with kill -9) resumes when restarted with the same command and ends as an
uninterrupted one; with `--deterministic` (the default) the same command and seed give the same
search, bit for bit, on one machine.

Several targets in one search, one controller each over one shared supernet (the K
architectures of a step are divided among them, so K must be a multiple of their number):

    python tools/search.py --target_latency=60,84,110 --architectures_per_step=6 --batch_size=36

writes architecture_60ms.json, architecture_84ms.json, architecture_110ms.json, their index
architectures.json, report.png (every target) and pareto.png (the found architectures against
uniform children under the final shared weights).
"""

import sys

from absl import flags

from detection import config as detection_config
from tunas_keras import cli, errors
from tunas_keras.training import config as config_lib
from tunas_keras.training import html_report
from tunas_keras.training import search as search_lib
from tunas_keras.training.trainer import create_strategy, is_chief

config_lib.define_flags_for(config_lib.SearchConfig, flags)
detection_config.define_detection_flags(flags, config_lib.SearchConfig, detection_config.DetectionSearchConfig)
FLAGS = flags.FLAGS


def _task_functions():
    """`(config class, prepare, run, next-step commands)` of `--task` (detection: SSDLite backbone
    search, detection/tasks.py)."""
    if FLAGS.task == "detection":
        from detection import tasks as detection_tasks  # pylint: disable=import-outside-toplevel

        return detection_tasks.SEARCH
    return config_lib.SearchConfig, search_lib.prepare_search, search_lib.run_search, search_lib.next_step_commands


def main(argv):
    del argv
    config_class, prepare, run, next_step_commands = _task_functions()
    with errors.user_input():
        config = config_lib.config_from_flags(config_class, FLAGS)
    # Validates the whole config and sets the thread count; neither initialises TensorFlow, so
    # multi-worker and TPU strategies can still be created next (they must exist before it is).
    task = prepare(config)
    strategy = create_strategy(config.strategy)
    kind = "detection search (SSDLite head)" if FLAGS.task == "detection" else "search"
    print(f"TuNAS {kind}: space={config.space} dataset={config.dataset} model_dir={config.model_dir}")
    print("Building the supernet and tracing its search step (tens of seconds on a CPU) ...", flush=True)
    try:
        result = run(config, strategy=strategy, task=task)
    except FloatingPointError as error:
        print(f"Search stopped: {error}", file=sys.stderr)
        return 1
    if "indices" not in result:  # several targets
        return _print_targets(config, result, is_chief(strategy), task.data.num_classes)
    if not is_chief(strategy):
        print(f"Worker done; the chief writes the outputs. Final architecture: {':'.join(map(str, result['indices']))}")
        return 0
    print()
    print(f"Final architecture ({result['space']}): {':'.join(map(str, result['indices']))}")
    print(html_report.architecture_table_text(task.space, result["indices"]))
    print(
        f"Cost ({result['cost_model']}): {result['cost']:.2f} vs target {result['target_latency']:.2f} "
        f"({100 * (result['cost'] / result['target_latency'] - 1):+.1f} %)"
    )
    print(
        f"Wall time: {result['wall_time_s']:.0f} s. Outputs in {config.model_dir}/ "
        "(architecture.json, report.html, report.png)"
    )
    print("Next steps (train the found architecture, export those weights to TFLite, time it):")
    for command in next_step_commands(config, task.data.num_classes):
        print(f"  {command}")
    return 0


def _print_targets(config, result: dict, chief: bool, num_classes: int) -> int:
    """The summary of a multi-target search: one line per target, the outputs, next steps per target."""
    print()
    for entry in result["architectures"]:
        indices = ":".join(map(str, entry["indices"]))
        cost = f"{entry['cost']:.2f} ({100 * entry['relative_error']:+.1f} %)"
        print(f"Target {entry['target_latency']:g}: {indices}  cost ({result['cost_model']}) {cost} -> {entry['file']}")
    if not chief:
        print("Worker done; the chief writes the outputs.")
        return 0
    print(
        f"Wall time: {result['wall_time_s']:.0f} s. Outputs in {config.model_dir}/ (one architecture_<target>.json "
        "per target, architectures.json listing them, report.png, pareto.png)"
    )
    for entry in result["architectures"]:
        print(f"Next steps for target {entry['target_latency']:g} (train, export to int8 TFLite, time it):")
        standalone = f"standalone_{entry['label']}"
        for command in search_lib.next_step_commands(config, num_classes, entry["file"], standalone):
            print(f"  {command}")
    return 0


if __name__ == "__main__":
    cli.run(main)
