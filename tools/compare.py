r"""Compares searched architectures with random search (the paper's Table 1 / Figure 1).

    python tools/compare.py --searched=runs/train_s0,runs/train_s1,runs/train_s2 \
        --random=runs/random --output=runs/comparison

`--searched`: standalone training runs (tools/train.py --protocol=valid) of searched
architectures; `--random`: random-search directories (tools/random_search.py).
"""

import os

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.training import compare as compare_lib
from tunas_keras.training.trainer import prepare_model_dir

flags.DEFINE_list("searched", [], "Training run directories (each with train_result.json) of searched architectures.")
flags.DEFINE_list("random", [], "Random-search directories (each with summary.json).")
flags.DEFINE_string("output", "runs/comparison", "Directory where comparison.md and comparison.png go.")
flags.DEFINE_string("cost_model", "pixel1", "Cost model for the searched architectures' cost (name or .json file).")
flags.DEFINE_float("target_latency", None, "Drawn as a vertical line in the plot.")
FLAGS = flags.FLAGS
REQUIRED_FILES = {"searched": "train_result.json", "random": "summary.json"}


def _validate() -> None:
    if not FLAGS.searched and not FLAGS.random:
        raise ValueError("Invalid arguments: expected at least one of `searched` or `random`. Received: none")
    for argument, name in REQUIRED_FILES.items():
        for directory in FLAGS[argument].value:
            if not os.path.isfile(os.path.join(directory, name)):
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected directories holding {name}. "
                    f"Received: {directory!r}"
                )
    compare_lib.load_searched(FLAGS.searched, FLAGS.cost_model)  # the cost model and every file load
    compare_lib.load_random(FLAGS.random)
    prepare_model_dir(FLAGS.output, argument="output")


def main(argv):
    del argv
    with errors.user_input():
        _validate()
    print(compare_lib.compare(FLAGS.searched, FLAGS.random, FLAGS.output, FLAGS.cost_model, FLAGS.target_latency))
    print(f"Wrote {FLAGS.output}/comparison.md and comparison.png")


if __name__ == "__main__":
    cli.run(main)
