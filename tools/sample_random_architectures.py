"""Samples architectures uniformly, keeping those within a cost range (random-search baseline).

    python tools/sample_random_architectures.py --space proxyless --min_cost 83 --max_cost 85 \
        --num_samples 20 --output random_84ms.json

Writes (or prints) a JSON list of `{"format_version", "space", "indices", "cost"}`; every
entry is an `Architecture` JSON that `tools/train.py` can read.
"""

from __future__ import annotations

import json

from absl import app, flags

import tunas_keras
from tunas_keras.cost_models import sample_architectures

FLAGS = flags.FLAGS
flags.DEFINE_string("space", "proxyless", "Search space.")
flags.DEFINE_string("cost_model", "pixel1", "Cost model name or coefficient file.")
flags.DEFINE_float("min_cost", None, "Lower bound of the cost (inclusive).")
flags.DEFINE_float("max_cost", None, "Upper bound of the cost (inclusive).")
flags.DEFINE_integer("num_samples", 20, "Number of architectures.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("output", None, "Output JSON file (default: print to stdout).")


def main(argv):
    del argv
    space = tunas_keras.get_search_space(FLAGS.space)
    samples = sample_architectures(
        space, FLAGS.cost_model, FLAGS.num_samples, FLAGS.min_cost, FLAGS.max_cost, seed=FLAGS.seed
    )
    text = json.dumps(samples, indent=1)
    if FLAGS.output:
        with open(FLAGS.output, "w") as handle:
            handle.write(text + "\n")
        print(f"wrote {len(samples)} architectures to {FLAGS.output}")
    else:
        print(text)


if __name__ == "__main__":
    app.run(main)
