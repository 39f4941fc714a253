"""Cost models: simulated Pixel-1 latency, MACs, parameters, and linear models from files.

    >>> import tunas_keras
    >>> from tunas_keras.cost_models import estimate_cost, get_cost_model
    >>> estimate_cost(tunas_keras.reference_architecture("proxylessnas_mobile"))   # ms
    84.416...
    >>> model = get_cost_model("pixel1", "proxyless")
    >>> model.batch_cost(indices)        # int32 [batch, 73] -> float32 [batch], TF ops only

`get_cost_model` takes a registered name (`COST_MODELS`: "pixel1", "macs", "params") or the
path of a JSON coefficient file with the Pixel-1 layout (see `save_linear_cost_model`).
"""

from __future__ import annotations

from tunas_keras.cost_models.base import COST_MODELS, CostModel, register_cost_model
from tunas_keras.cost_models.counts import count_cost_model
from tunas_keras.cost_models.linear import (
    LinearCostModel,
    active_features,
    feature_segments,
    features,
    load_linear_cost_model,
    num_features,
    reachable_features,
    save_linear_cost_model,
)
from tunas_keras.cost_models.lookup import estimate_cost, get_cost_model
from tunas_keras.cost_models.sampling import sample_architectures, uniform_indices
from tunas_keras.cost_models.tables import TabulatedCostModel

__all__ = [
    "COST_MODELS",
    "CostModel",
    "LinearCostModel",
    "TabulatedCostModel",
    "active_features",
    "count_cost_model",
    "estimate_cost",
    "feature_segments",
    "features",
    "get_cost_model",
    "load_linear_cost_model",
    "num_features",
    "reachable_features",
    "register_cost_model",
    "sample_architectures",
    "save_linear_cost_model",
    "uniform_indices",
]
