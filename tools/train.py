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


def main(argv):
    del argv
    if FLAGS.task == "detection":  # SSDLite training + COCO mAP (detection/cli.py)
        from detection import cli as detection_cli  # pylint: disable=import-outside-toplevel

        return detection_cli.train(FLAGS)
    with errors.user_input():
        config = config_lib.config_from_flags(config_lib.TrainConfig, FLAGS)
    task = train_lib.prepare_training(config)
    try:
        result = train_lib.run_training(config, task=task)
    except FloatingPointError as error:
        print(f"Training stopped: {error}", file=sys.stderr)
        return 1
    print()
    print(
        f"{result['eval_split']}: top-1 {100 * result['top1']:.2f} %  top-5 {100 * result['top5']:.2f} %  "
        f"({result['eval_examples']} examples, {result['steps']} steps, {result['epochs']:.1f} epochs)"
    )
    print(f"Weights: {os.path.join(config.model_dir, 'model.weights.h5')}")
    return 0


if __name__ == "__main__":
    cli.run(main)
