"""Prints the cost of an architecture under one or more cost models.

    python tools/estimate_cost.py --reference proxylessnas_mobile
    python tools/estimate_cost.py --space proxyless --indices 0:0:0:1:0:... --cost_model pixel1,macs,params
    python tools/estimate_cost.py --architecture arch.json --cost_model my_phone.json

`--architecture` reads an `Architecture` JSON file, or a list of them (as written by
`tools/sample_random_architectures.py`). `--cost_model` takes registered names
(pixel1, macs, params) or coefficient files.
"""

from __future__ import annotations

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.cost_models import get_cost_model
from tunas_keras.export.sources import resolve_architecture

FLAGS = flags.FLAGS
flags.DEFINE_string("space", None, "Search space of --indices (e.g. proxyless).")
flags.DEFINE_string("indices", None, "Colon-separated decision indices, e.g. 0:1:0:2:...")
flags.DEFINE_string("architecture", None, "Architecture JSON file (one object or a list).")
flags.DEFINE_string("reference", None, "Reference model name, e.g. proxylessnas_mobile.")
flags.DEFINE_string("reference_space", None, "Space to express --reference in (default: smallest containing it).")
flags.DEFINE_list("cost_model", ["pixel1"], "Cost models: names (pixel1, macs, params) or coefficient .json files.")


def cost_lines(architectures: list, cost_models: list) -> list[str]:
    """One line per architecture: `space indices  name=cost units ...`."""
    lines = []
    for architecture in architectures:
        costs = []
        for model in cost_models[architecture.space]:
            costs.append(f"{model.name}={model.cost(architecture):.4f} {model.units}")
        lines.append(f"{architecture.space} {architecture}  " + "  ".join(costs))
    return lines


def main(argv):
    del argv
    with errors.user_input():
        found = resolve_architecture(
            FLAGS.architecture,
            FLAGS.indices,
            FLAGS.space,
            FLAGS.reference,
            FLAGS.reference_space,
            as_point=True,
            allow_list=True,
        )
        architectures = found if isinstance(found, list) else [found]
        spaces = {architecture.space for architecture in architectures}
        models = {space: [get_cost_model(name, space) for name in FLAGS.cost_model] for space in spaces}
    print("\n".join(cost_lines(architectures, models)))


if __name__ == "__main__":
    cli.run(main)
