r"""Samples architectures uniformly, keeping those within a cost range (random-search baseline).

    python tools/sample_random_architectures.py --space proxyless --min_cost 83 --max_cost 85 \
        --num_samples 20 --output random_84ms.json

Writes (or prints) a JSON list of `{"format_version", "space", "indices", "cost"}`; every
entry is an `Architecture` JSON that `tools/train.py` can read.
"""

from __future__ import annotations

import json

from absl import flags

import tunas_keras
from tunas_keras import cli, errors
from tunas_keras.cost_models import sample_architectures
from tunas_keras.training.trainer import check_writable_file, write_atomic

FLAGS = flags.FLAGS
flags.DEFINE_string("space", "proxyless", "Search space: proxyless, proxyless_enlarged or mobilenet_v3_like.")
flags.DEFINE_string("cost_model", "pixel1", "Cost model name (pixel1, macs, params) or coefficient .json file.")
flags.DEFINE_float("min_cost", None, "Lower bound of the cost (inclusive); None: no bound.")
flags.DEFINE_float("max_cost", None, "Upper bound of the cost (inclusive); None: no bound.")
flags.DEFINE_integer("num_samples", 20, "Number of architectures.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output", None, "Output JSON file (default: print to stdout).")


def main(argv):
    del argv
    with errors.user_input():  # sampling is cheap, and an empty cost range is the user's input
        if FLAGS.output:
            check_writable_file(FLAGS.output, "output")
        space = tunas_keras.get_search_space(FLAGS.space)
        samples = sample_architectures(
            space, FLAGS.cost_model, FLAGS.num_samples, FLAGS.min_cost, FLAGS.max_cost, seed=FLAGS.seed
        )
    text = json.dumps(samples, indent=1)
    if FLAGS.output:
        write_atomic(FLAGS.output, text + "\n")
        print(f"wrote {len(samples)} architectures to {FLAGS.output}")
    else:
        print(text)


if __name__ == "__main__":
    cli.run(main)
