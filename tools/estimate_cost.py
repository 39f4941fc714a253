"""Prints the cost of an architecture under one or more cost models.

    python tools/estimate_cost.py --reference proxylessnas_mobile
    python tools/estimate_cost.py --space proxyless --indices 0:0:0:1:0:... --cost_model pixel1,macs,params
    python tools/estimate_cost.py --architecture arch.json --cost_model my_phone.json

`--architecture` reads an `Architecture` JSON file, or a list of them (as written by
`tools/sample_random_architectures.py`). `--cost_model` takes registered names
(pixel1, macs, params) or coefficient files.
"""

from __future__ import annotations

import json

from absl import app, flags

import tunas_keras
from tunas_keras.cost_models import get_cost_model
from tunas_keras.schema import Architecture

FLAGS = flags.FLAGS
flags.DEFINE_string("space", None, "Search space of --indices (e.g. proxyless).")
flags.DEFINE_string("indices", None, "Colon-separated decision indices, e.g. 0:1:0:2:...")
flags.DEFINE_string("architecture", None, "Architecture JSON file (one object or a list).")
flags.DEFINE_string("reference", None, "Reference model name, e.g. proxylessnas_mobile.")
flags.DEFINE_string("reference_space", None, "Space to express --reference in (default: smallest containing it).")
flags.DEFINE_list("cost_model", ["pixel1"], "Cost models: names or coefficient files.")


def load_architectures(space=None, indices=None, architecture=None, reference=None, reference_space=None) -> list:
    """The architectures selected by exactly one of `indices` (with `space`), `architecture`, `reference`."""
    options = (("indices", indices), ("architecture", architecture), ("reference", reference))
    given = [name for name, value in options if value]
    if len(given) != 1:
        raise ValueError(f"Expected exactly one of --indices, --architecture, --reference. Received: {given}")
    if reference:
        return [tunas_keras.reference_architecture(reference, space=reference_space)]
    if indices:
        if not space:
            raise ValueError("Invalid flags: --indices needs --space.")
        return [tunas_keras.get_search_space(space).parse(indices)]
    with open(architecture) as handle:
        data = json.load(handle)
    return [Architecture.from_dict(item) for item in (data if isinstance(data, list) else [data])]


def cost_lines(architectures: list, cost_models: list) -> list[str]:
    """One line per architecture: `space indices  name=cost units ...`."""
    lines = []
    for architecture in architectures:
        costs = []
        for name in cost_models:
            model = get_cost_model(name, architecture.space)
            costs.append(f"{model.name}={model.cost(architecture):.4f} {model.units}")
        lines.append(f"{architecture.space} {architecture}  " + "  ".join(costs))
    return lines


def main(argv):
    del argv
    architectures = load_architectures(
        FLAGS.space, FLAGS.indices, FLAGS.architecture, FLAGS.reference, FLAGS.reference_space
    )
    print("\n".join(cost_lines(architectures, FLAGS.cost_model)))


if __name__ == "__main__":
    app.run(main)
