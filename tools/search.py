r"""Runs a TuNAS search (weight-sharing supernet + REINFORCE controller) and writes its results.

With no flags: the embedded offline dataset, the `proxyless` space, T0 = 84 ms of the simulated
Pixel-1 model, 120 steps of batch 32 at 32 px (about 5-8 minutes on 2 CPU cores, most of it
tracing the supernet's training step). The paper's ImageNet run:

    python tools/search.py --dataset=imagenet2012 --image_size=224 --batch_size=4096 --epochs=90 \
        --rl_learning_rate=3e-4 --strategy=mirrored --model_dir=runs/imagenet

`--task=detection` searches an SSDLite backbone instead (docs/detection.md has the COCO command).

Every field of `tunas_keras.training.config.SearchConfig` is a flag (`--help` lists them with
type and default); `--config run.yaml` loads a file and flags override it. A run killed at any
moment (even with kill -9) resumes when restarted with the same command and ends as an
uninterrupted one; with `--deterministic` (the default) the same command and seed give the same
search, bit for bit, on one machine.
"""

import os
import sys

from absl import flags

from detection import config as detection_config
from tunas_keras import cli, errors
from tunas_keras.training import config as config_lib
from tunas_keras.training import search as search_lib
from tunas_keras.training.trainer import create_strategy, is_chief

config_lib.define_flags_for(config_lib.SearchConfig, flags)
detection_config.define_detection_flags(flags, config_lib.SearchConfig, detection_config.DetectionSearchConfig)
FLAGS = flags.FLAGS


def _task_functions():
    """`(config class, prepare, run)` of `--task` (detection: SSDLite backbone search, detection/tasks.py)."""
    if FLAGS.task == "detection":
        from detection import tasks as detection_tasks  # pylint: disable=import-outside-toplevel

        return detection_tasks.SEARCH
    return config_lib.SearchConfig, search_lib.prepare_search, search_lib.run_search


def main(argv):
    del argv
    detection = FLAGS.task == "detection"
    config_class, prepare, run = _task_functions()
    with errors.user_input():
        config = config_lib.config_from_flags(config_class, FLAGS)
    # Validates the whole config and sets the thread count; neither initialises TensorFlow, so
    # multi-worker and TPU strategies can still be created next (they must exist before it is).
    task = prepare(config)
    strategy = create_strategy(config.strategy)
    kind = "detection search (SSDLite head)" if detection else "search"
    print(f"TuNAS {kind}: space={config.space} dataset={config.dataset} model_dir={config.model_dir}")
    print("Building the supernet and tracing its training step (takes a few minutes on a CPU) ...", flush=True)
    try:
        result = run(config, strategy=strategy, task=task)
    except FloatingPointError as error:
        print(f"Search stopped: {error}", file=sys.stderr)
        return 1
    architecture_path = os.path.join(config.model_dir, "architecture.json")
    if not is_chief(strategy):
        print(f"Worker done; the chief writes the outputs. Final architecture: {':'.join(map(str, result['indices']))}")
        return 0
    print()
    print(f"Final architecture ({result['space']}): {':'.join(map(str, result['indices']))}")
    print(
        f"Cost ({result['cost_model']}): {result['cost']:.2f} vs target {result['target_latency']:.2f} "
        f"({100 * (result['cost'] / result['target_latency'] - 1):+.1f} %)"
    )
    print(f"Wall time: {result['wall_time_s']:.0f} s. Outputs in {config.model_dir}/ (architecture.json, report.png)")
    print("Next steps:")
    same_data = f"--dataset={config.dataset} --image_size={config.image_size}"
    zero_init = " --zero_init_residual" if config.zero_init_residual else ""
    task_flag = "--task=detection " if detection else ""
    print(f"  python tools/train.py {task_flag}--architecture={architecture_path} {same_data}{zero_init}")
    if not detection:  # a detector is exported after training (tools/train.py prints the command)
        print(f"  python tools/export_tflite.py --architecture={architecture_path} --quantization=int8")
    return 0


if __name__ == "__main__":
    cli.run(main)
