r"""The paper's comparison (Table 1 / Figure 1): TuNAS searches vs random search, as one command.

    python tools/compare.py --num_searches=5 --num_random=20 --output=runs/comparison
    python tools/compare.py --num_searches=5 --num_random=20 --output=runs/imagenet_comparison \
        --search_config=configs/imagenet_proxyless.yaml --train_config=configs/imagenet_standalone_90_epochs.yaml

runs N searches (seeds seed ... seed + N - 1 of `--search_config`, default: tools/search.py's
defaults), samples M architectures uniformly within T0 ± `--tolerance_percent` % (the paper:
±1 ms at 84 ms), trains every searched and random architecture standalone with one recipe
(`--train_config`, default: the recipe tools/search.py prints; the data are the search's) on
the training split, selects on the held-out "valid" split and reports top-1 on the test split,
which neither the search nor the selection saw. Writes comparison.md (mean ± standard error,
expected best-of-N random search by resampling), comparison.json and comparison.png into
`--output`. Rerunning the same command resumes: finished searches, trainings and evaluations
are read back, unfinished ones resume from their checkpoints.

Tabulating existing runs instead (validation accuracies, no test split):

    python tools/compare.py --searched=runs/train_s0,runs/train_s1 --random=runs/random --output=runs/comparison
"""

import dataclasses
import os

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.training import compare as compare_lib
from tunas_keras.training import config as config_lib
from tunas_keras.training.trainer import prepare_model_dir

flags.DEFINE_integer("num_searches", 0, "TuNAS searches to run (seeds seed, seed + 1, ...).", lower_bound=0)
flags.DEFINE_integer("num_random", 0, "Random architectures within T0 +- tolerance to train.", lower_bound=0)
flags.DEFINE_string("search_config", None, "JSON/YAML SearchConfig of the searches (default: tools/search.py's).")
flags.DEFINE_string("train_config", None, "JSON/YAML TrainConfig recipe of every model (default: the printed one).")
flags.DEFINE_float("tolerance_percent", 1.0, "Random architectures cost within T0 +- this % of T0.", lower_bound=0.0)
flags.DEFINE_list("searched", [], "Training run directories (each with train_result.json) of searched architectures.")
flags.DEFINE_list("random", [], "Random-search directories (each with summary.json).")
flags.DEFINE_string("output", "runs/comparison", "Directory for comparison.md, .json and .png.")
flags.DEFINE_string("cost_model", "pixel1", "Cost model for the searched architectures' cost (name or .json file).")
flags.DEFINE_float("target_latency", None, "Drawn as a vertical line in the plot (tabulating mode).")
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


def _load(config_class, argument: str):
    """A config file named by flag `argument`; its errors name that flag."""
    try:
        return config_lib.load_config_file(config_class, FLAGS[argument].value)
    except ValueError as error:
        raise ValueError(str(error).replace("argument `config`", f"argument `{argument}`", 1)) from error


def _plan() -> compare_lib.ComparisonPlan:
    """The validated plan of a --num_searches / --num_random run (nothing heavy is built)."""
    from tunas_keras.training.search import prepare_search, train_recipe  # pylint: disable=import-outside-toplevel

    if FLAGS.searched or FLAGS.random:
        raise ValueError(
            "Invalid arguments: `searched` / `random` tabulate existing runs; expected them without "
            f"`num_searches` / `num_random`. Received: searched={FLAGS.searched}, random={FLAGS.random}"
        )
    search = config_lib.SearchConfig()
    if FLAGS.search_config:
        search = _load(config_lib.SearchConfig, "search_config")
    if FLAGS.train_config:
        train = _load(config_lib.TrainConfig, "train_config")
    else:
        train = config_lib.config_from_dict(config_lib.TrainConfig, {**train_recipe(search), "progress_bar": False})
    prepare_search(search)  # every search field, the space, cost model and dataset
    config_lib.validate_config(train)
    prepare_model_dir(FLAGS.output, argument="output")
    return compare_lib.ComparisonPlan(
        search=dataclasses.replace(search, progress_bar=False),
        train=train,
        num_searches=FLAGS.num_searches,
        num_random=FLAGS.num_random,
        tolerance_percent=FLAGS.tolerance_percent,
        output_dir=FLAGS.output,
    )


def main(argv):
    del argv
    if FLAGS.num_searches or FLAGS.num_random:
        with errors.user_input():
            plan = _plan()
        result = compare_lib.run_comparison(plan)
        print(result["report"])
        print(f"Wrote {FLAGS.output}/comparison.md, comparison.json and comparison.png")
        return 0
    with errors.user_input():
        _validate()
    print(compare_lib.compare(FLAGS.searched, FLAGS.random, FLAGS.output, FLAGS.cost_model, FLAGS.target_latency))
    print(f"Wrote {FLAGS.output}/comparison.md and comparison.png")
    return 0


if __name__ == "__main__":
    cli.run(main)
