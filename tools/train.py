"""Trains and evaluates a standalone architecture with the reference recipe (design.md §6).

    python tools/train.py --architecture=runs/search/architecture.json            # a searched model
    python tools/train.py --reference=mobilenet_v2 --protocol=test                 # a reference model
    python tools/train.py --indices=0:1:0:... --space=proxyless --steps=2000
    python tools/train.py --architecture=runs/search/architecture.json --init_from_supernet=runs/search
    python tools/train.py --task=detection --reference=mobilenet_v3_large --image_size=96   # SSDLite

Every field of `tunas_keras.training.config.TrainConfig` is a flag (`--help` lists them);
`--config` loads a JSON/YAML file. Killed runs resume when restarted with the same command.
"""

import os
import sys

from absl import flags

from detection import config as detection_config
from tunas_keras import cli, errors
from tunas_keras.training import config as config_lib
from tunas_keras.training import train as train_lib

config_lib.define_flags_for(config_lib.TrainConfig, flags)
detection_config.define_detection_flags(flags, config_lib.TrainConfig, detection_config.DetectionTrainConfig)
FLAGS = flags.FLAGS


def _task_functions():
    """`(config class, prepare, run)` of `--task` (detection: SSDLite training + COCO mAP, detection/tasks.py)."""
    if FLAGS.task == "detection":
        from detection import tasks as detection_tasks  # pylint: disable=import-outside-toplevel

        return detection_tasks.TRAINING
    return config_lib.TrainConfig, train_lib.prepare_training, train_lib.run_training


def main(argv):
    del argv
    config_class, prepare, run = _task_functions()
    with errors.user_input():
        config = config_lib.config_from_flags(config_class, FLAGS)
    task = prepare(config)
    try:
        result = run(config, task=task)
    except FloatingPointError as error:
        print(f"Training stopped: {error}", file=sys.stderr)
        return 1
    print()
    if FLAGS.task == "detection":
        from detection import cli as detection_cli  # pylint: disable=import-outside-toplevel

        detection_cli.print_training_result(config, result)
        return 0
    print(
        f"{result['eval_split']}: top-1 {100 * result['top1']:.2f} %  top-5 {100 * result['top5']:.2f} %  "
        f"({result['eval_examples']} examples, {result['steps']} steps, {result['epochs']:.1f} epochs)"
    )
    print(f"Weights: {os.path.join(config.model_dir, 'model.weights.h5')}")
    return 0


if __name__ == "__main__":
    cli.run(main)
