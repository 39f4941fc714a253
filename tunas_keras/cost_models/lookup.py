"""A cost model by name, coefficient file or object (`get_cost_model`), and `estimate_cost`.

Apart from the package `__init__` so that the modules of this package (e.g. `sampling`) can
import it at module level.
"""

from __future__ import annotations

import os
import pathlib
from typing import Union

# `counts` and `linear` register "macs", "params" and "pixel1" in COST_MODELS when imported.
from tunas_keras.cost_models import counts  # noqa: F401
from tunas_keras.cost_models.base import COST_MODELS, CostModel
from tunas_keras.cost_models.linear import load_linear_cost_model
from tunas_keras.registry import get_search_space, reference_architecture
from tunas_keras.schema import Architecture, SearchSpace


def get_cost_model(name_or_path: Union[str, os.PathLike, CostModel], space: Union[str, SearchSpace]) -> CostModel:
    """A cost model for `space`: a registered name, a coefficient file path, or a `CostModel`.

    Raises:
      ValueError: unknown name / missing file, or the file has no coefficients for `space`.
    """
    space = get_search_space(space)
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
        architecture = reference_architecture(architecture)
    if not isinstance(architecture, Architecture):
        raise ValueError(
            "Invalid value for argument `architecture`. Expected an Architecture or a reference model name. "
            f"Received: {architecture!r}"
        )
    return get_cost_model(cost_model, architecture.space).cost(architecture)
