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

import os
import pathlib
from typing import Union

from tunas_keras.cost_models.base import COST_MODELS, CostModel, register_cost_model
from tunas_keras.cost_models.counts import count_cost_model
from tunas_keras.cost_models.linear import LinearCostModel, active_features, features, feature_segments
from tunas_keras.cost_models.linear import load_linear_cost_model, num_features, reachable_features
from tunas_keras.cost_models.linear import save_linear_cost_model
from tunas_keras.cost_models.sampling import sample_architectures, uniform_indices
from tunas_keras.cost_models.tables import TabulatedCostModel
from tunas_keras.schema import Architecture, SearchSpace


def _space(space: Union[str, SearchSpace]) -> SearchSpace:
    import search_spaces  # pylint: disable=import-outside-toplevel

    return search_spaces.get_search_space(space)


def get_cost_model(
    name_or_path: Union[str, os.PathLike, CostModel], space: Union[str, SearchSpace]
) -> CostModel:
    """A cost model for `space`: a registered name, a coefficient file path, or a `CostModel`.

    Raises:
      ValueError: unknown name / missing file, or the file has no coefficients for `space`.
    """
    space = _space(space)
    if isinstance(name_or_path, CostModel):
        if name_or_path.space is not space:
            raise ValueError(
                f"Invalid value for argument `cost_model`. Expected a cost model of space {space.name!r}. "
                f"Received: {name_or_path!r}"
            )
        return name_or_path
    if isinstance(name_or_path, str) and name_or_path in COST_MODELS:
        return COST_MODELS[name_or_path](space)
    if isinstance(name_or_path, (str, os.PathLike)) and pathlib.Path(name_or_path).suffix == ".json":
        if not pathlib.Path(name_or_path).is_file():
            raise ValueError(f"Invalid value for argument `cost_model`: no such file. Received: {str(name_or_path)!r}")
        return load_linear_cost_model(name_or_path, space)
    raise ValueError(
        f"Invalid value for argument `cost_model`. Expected one of {sorted(COST_MODELS)} or the path of a "
        f"'.json' coefficient file. Received: cost_model={name_or_path!r}"
    )


def estimate_cost(
    architecture: Union[Architecture, str], cost_model: Union[str, os.PathLike, CostModel] = "pixel1"
) -> float:
    """The cost of an architecture (default: simulated Pixel-1 latency in ms).

    Args:
      architecture: an `Architecture`, or the name of a reference model that is a point of a
        search space (e.g. "proxylessnas_mobile").
      cost_model: a registered name, a coefficient file, or a `CostModel` of the right space.
    """
    if isinstance(architecture, str):
        import tunas_keras  # pylint: disable=import-outside-toplevel

        architecture = tunas_keras.reference_architecture(architecture)
    if not isinstance(architecture, Architecture):
        raise ValueError(
            "Invalid value for argument `architecture`. Expected an Architecture or a reference model name. "
            f"Received: {architecture!r}"
        )
    return get_cost_model(cost_model, architecture.space).cost(architecture)


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
