"""Is the search signal there? Accuracy vs cost of sampled children under a search's shared weights.

    python tools/rank_children.py --search_dir=runs/search --num_architectures=32 --num_batches=4

Restores the supernet of `--search_dir`, evaluates uniformly sampled children and the space's
smallest and largest architecture on held-out ("valid") batches, exactly as the search's
validation pass does, and prints Spearman's correlation of accuracy with cost and the mean
accuracy of the cheapest, middle and dearest third. `--output` keeps every child as JSON.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from tunas_keras.training.child_ranking import rank_children
from tunas_keras.training.trainer import write_atomic

FLAGS = flags.FLAGS
flags.DEFINE_string("search_dir", None, "model_dir of a tools/search.py run (config.json, checkpoints/).")
flags.DEFINE_integer("num_architectures", 32, "Uniformly sampled children (besides the smallest and the largest).")
flags.DEFINE_integer("num_batches", 4, "Held-out batches each child is evaluated on.")
flags.DEFINE_integer("batch_size", 128, "Held-out batch size (the search's validation batch is 4 x its batch).")
flags.DEFINE_integer("seed", 0, "Seed of the sampled architectures.")
flags.DEFINE_string("output", None, "Optional JSON file for the full result.")
flags.mark_flag_as_required("search_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    result = rank_children(FLAGS.search_dir, FLAGS.num_architectures, FLAGS.num_batches, FLAGS.batch_size, FLAGS.seed)
    print(f"{result['space']}: {len(result['children'])} children, {result['num_images']} held-out images each")
    for name in ("smallest", "largest"):
        print(f"  {name:8s} cost {result[name]['cost']:8.2f}  accuracy {result[name]['accuracy']:.3f}")
    children = sorted(result["children"], key=lambda child: child["cost"])
    costs = [child["cost"] for child in children]
    print(f"  sampled  cost {costs[0]:.2f} .. {costs[-1]:.2f} ({result['cost_model']})")
    terciles = ", ".join(f"{accuracy:.3f}" for accuracy in result["accuracy_by_cost_tercile"])
    print(f"  mean accuracy by cost tercile (cheapest first): {terciles}")
    print(f"  Spearman(cost, accuracy) = {result['spearman']:+.3f}")
    if FLAGS.output:
        write_atomic(FLAGS.output, json.dumps(result, indent=2))
        print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
