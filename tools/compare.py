"""Compares searched architectures with random search (the paper's Table 1 / Figure 1).

    python tools/compare.py --searched=runs/train_s0,runs/train_s1,runs/train_s2 \
        --random=runs/random --output=runs/comparison

`--searched`: standalone training runs (tools/train.py --protocol=valid) of searched
architectures; `--random`: random-search directories (tools/random_search.py).
"""


from absl import app, flags

flags.DEFINE_list("searched", [], "Training run directories of searched architectures.")
flags.DEFINE_list("random", [], "Random-search directories.")
flags.DEFINE_string("output", "runs/comparison", "Where comparison.md and comparison.png go.")
flags.DEFINE_string("cost_model", "pixel1", "Cost model for the searched architectures' cost.")
flags.DEFINE_float("target_latency", None, "Drawn as a vertical line in the plot.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from tunas_keras.training.compare import compare  # pylint: disable=import-outside-toplevel

    print(compare(FLAGS.searched, FLAGS.random, FLAGS.output, FLAGS.cost_model, FLAGS.target_latency))
    print(f"Wrote {FLAGS.output}/comparison.md and comparison.png")


if __name__ == "__main__":
    app.run(main)
