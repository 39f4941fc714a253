"""The random-search baseline: rejection-sample N architectures within T0 ± 1 ms, train each,
keep the validation-best (paper §3.2).

    python tools/random_search.py --space=proxyless --num_samples=10 --steps=300 --model_dir=runs/random

Writes samples.json, model_NNN/ (one training run each), summary.json, summary.csv and
best_architecture.json. Restarting the same command resumes with the unfinished models.
"""

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.training import config as config_lib
from tunas_keras.training.random_search import RandomSearchConfig, run_random_search

config_lib.define_flags_for(RandomSearchConfig, flags)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with errors.user_input():
        config = config_lib.config_from_flags(RandomSearchConfig, FLAGS)
    summary = run_random_search(config)
    for row in summary["models"]:
        print(f"model {row['model']:3d}  cost {row['cost']:7.2f}  valid top-1 {100 * row['valid_top1']:6.2f} %")
    best = summary["best"]
    print(f"Best: model {best['model']} ({best['cost']:.2f} ms, {100 * best['valid_top1']:.2f} %)")


if __name__ == "__main__":
    cli.run(main)
