"""Is the search signal there? Accuracy vs cost of sampled children under a search's shared weights.

    python tools/rank_children.py --search_dir=runs/search --num_architectures=32 --num_batches=4

Restores the supernet of `--search_dir`, evaluates uniformly sampled children and the space's
smallest and largest architecture on held-out ("valid") batches, exactly as the search's
validation pass does, and prints Spearman's correlation of accuracy with cost and the mean
accuracy of the cheapest, middle and dearest third. The search's own architectures
(architectures.json: one per target) are evaluated beside them; `--pareto_plot` draws all of
them as accuracy vs cost with the Pareto front. `--output` keeps every child as JSON.
"""

from __future__ import annotations

import json

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.cost_models import get_cost_model
from tunas_keras.training import pareto
from tunas_keras.training.child_ranking import rank_children, read_search_config
from tunas_keras.training.trainer import check_checkpoint_readable, check_writable_file, write_atomic

FLAGS = flags.FLAGS
flags.DEFINE_string("search_dir", None, "model_dir of a tools/search.py run (config.json, checkpoints/).")
flags.DEFINE_integer(
    "num_architectures", 32, "Uniformly sampled children (besides the smallest and the largest).", lower_bound=3
)
flags.DEFINE_integer("num_batches", 4, "Held-out batches each child is evaluated on.", lower_bound=1)
flags.DEFINE_integer(
    "batch_size", 128, "Held-out batch size (the search's validation batch is 4 x its batch).", lower_bound=1
)
flags.DEFINE_integer("seed", 0, "Seed of the sampled architectures.")
flags.DEFINE_string(
    "checkpoint",
    "latest",
    "'latest' (the final shared weights) or a kept checkpoint: 'rl_start', the weights at the end of the warmup.",
)
flags.DEFINE_string("output", None, "Optional JSON file for the full result.")
flags.DEFINE_string("pareto_plot", None, "Optional PNG: accuracy vs cost of the found architectures and the children.")
flags.mark_flag_as_required("search_dir")


def main(argv):
    del argv
    with errors.user_input():
        _, checkpoint_path = read_search_config(FLAGS.search_dir, checkpoint=FLAGS.checkpoint)
        check_checkpoint_readable(checkpoint_path, argument="search_dir")
        for argument in ("output", "pareto_plot"):
            if FLAGS[argument].value:
                check_writable_file(FLAGS[argument].value, argument)
    result = rank_children(
        FLAGS.search_dir, FLAGS.num_architectures, FLAGS.num_batches, FLAGS.batch_size, FLAGS.seed, FLAGS.checkpoint
    )
    shape = f"{len(result['children'])} children, {result['num_images']} held-out images each"
    print(f"{result['space']}: {shape}, checkpoint {FLAGS.checkpoint!r}")
    for name in ("smallest", "largest"):
        print(f"  {name:8s} cost {result[name]['cost']:8.2f}  accuracy {result[name]['accuracy']:.3f}")
    children = sorted(result["children"], key=lambda child: child["cost"])
    costs = [child["cost"] for child in children]
    print(f"  sampled  cost {costs[0]:.2f} .. {costs[-1]:.2f} ({result['cost_model']})")
    terciles = ", ".join(f"{accuracy:.3f}" for accuracy in result["accuracy_by_cost_tercile"])
    print(f"  mean accuracy by cost tercile (cheapest first): {terciles}")
    print(f"  Spearman(cost, accuracy) = {result['spearman']:+.3f}")
    print("  decisions that move accuracy most (mean accuracy / mean cost per choice, active children):")
    for effect in result["decision_effects"][:3]:
        per_choice = ", ".join(
            "-" if accuracy is None else f"{accuracy:.3f} / {cost:.1f} (n={count})"
            for accuracy, cost, count in zip(effect["mean_accuracy"], effect["mean_cost"], effect["count"])
        )
        print(f"    {effect['decision']}: {per_choice}; Spearman without it {effect['spearman_without']:+.3f}")
    for entry in result["found"]:
        target = entry["target_latency"]
        print(f"  found for {target:g}: cost {entry['cost']:8.2f}  accuracy {entry['accuracy']:.3f}")
    if FLAGS.pareto_plot:
        units = get_cost_model(result["cost_model"], result["space"]).units
        pareto.write_pareto_plot(FLAGS.pareto_plot, result, units)
        print(f"Wrote {FLAGS.pareto_plot}")
    if FLAGS.output:
        write_atomic(FLAGS.output, json.dumps(result, indent=2))
        print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main)
