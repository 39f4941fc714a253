"""tunas_keras: hardware-aware neural architecture search (TuNAS) for tf_keras.

>>> import tunas_keras
>>> space = tunas_keras.get_search_space("proxyless")
>>> arch = tunas_keras.reference_architecture("proxylessnas_mobile")
>>> model = tunas_keras.build_model(arch, num_classes=10, input_shape=(32, 32, 3))
"""

import os as _os

# TensorFlow's C++ INFO / WARNING lines at start-up (oneDNN notice, CPU features, CUDA stub) are
# noise for our programs; it reads the level once, when it is imported (below). A value the user
# set wins: TF_CPP_MIN_LOG_LEVEL=0 shows everything (tunas_keras.cli describes the console).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tunas_keras.cost_models import estimate_cost, get_cost_model
from tunas_keras.models.counters import Counts, count_model_macs, count_network
from tunas_keras.models.standalone import build_backbone, build_model
from tunas_keras.models.supernet import Supernet, build_supernet
from tunas_keras.registry import get_search_space, reference_architecture
from tunas_keras.schema import Architecture, OneOf, SearchSpace

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "Counts",
    "OneOf",
    "SearchSpace",
    "Supernet",
    "build_backbone",
    "build_model",
    "build_supernet",
    "count_model_macs",
    "count_network",
    "estimate_cost",
    "get_cost_model",
    "get_search_space",
    "reference_architecture",
]
