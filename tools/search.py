"""TuNAS search (interim): the search loop is not implemented yet.

Until it lands this prints what the foundation offers end to end: the three search spaces and
the reference models built as standalone Keras models, with their parameter and MAC counts.
"""

from absl import app

import tunas_keras
from search_spaces import REFERENCE_NAMES


def main(argv):
    del argv
    print("NOTE: the search loop is not implemented yet; showing the search spaces and reference models.")
    for name in ("proxyless", "proxyless_enlarged", "mobilenet_v3_like"):
        space = tunas_keras.get_search_space(name)
        print(f"{name:20s} decisions={space.num_decisions:3d} cardinality={space.cardinality:.2e}")
    for name in REFERENCE_NAMES:
        model = tunas_keras.build_model(name)
        counts = tunas_keras.count_network(name)
        print(f"{name:40s} params={model.count_params():>10,d} MACs@224={counts.macs / 1e6:7.1f}M")


if __name__ == "__main__":
    app.run(main)
