"""The cost-model interface and its registry (name -> factory).

A cost model scores an architecture of one search space: `cost(architecture)` for one
architecture (a Python float, computed in float64) and `batch_cost(indices)` for an int32 tensor
of shape `[batch, num_decisions]` (a float32 tensor `[batch]` computed with TF ops, usable inside
`tf.function` and `strategy.run`, as the controller's reward needs).
"""

from __future__ import annotations

import abc
from typing import Callable, Sequence, Union

import tensorflow as tf

from tunas_keras.schema import Architecture, SearchSpace

# name -> factory(space) returning a CostModel. Filled by `register_cost_model`.
COST_MODELS: dict[str, Callable[[SearchSpace], "CostModel"]] = {}


def register_cost_model(name: str) -> Callable:
    """Class or function decorator: registers `factory(space) -> CostModel` under `name`."""

    def decorator(factory: Callable) -> Callable:
        if name in COST_MODELS:
            raise ValueError(f"Invalid value for argument `name`: cost model {name!r} is already registered.")
        COST_MODELS[name] = factory
        return factory

    return decorator


class CostModel(abc.ABC):
    """Scores architectures of one search space.

    Args:
      space: the search space whose architectures are scored.
      name: a short name for messages and tables (`"pixel1"`, `"macs"`, ...).
      units: what the numbers mean (`"ms"`, `"M MACs"`, ...).
    """

    def __init__(self, space: SearchSpace, name: str, units: str):
        self.space = space
        self.name = name
        self.units = units

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, space={self.space.name!r}, units={self.units!r})"

    def validate(self, architecture: Union[Architecture, Sequence[int]]) -> tuple[int, ...]:
        """Indices of `architecture` (an `Architecture` of this space or a sequence of ints)."""
        if isinstance(architecture, Architecture):
            if architecture.space != self.space.name:
                raise ValueError(
                    f"Invalid value for argument `architecture`. Expected an architecture of space "
                    f"{self.space.name!r} (cost model {self.name!r}). Received: space={architecture.space!r}"
                )
            architecture = architecture.indices
        return self.space.validate_indices(architecture)

    def check_batch_indices(self, indices) -> tf.Tensor:
        """`indices` as an int32 tensor of static shape `[batch, num_decisions]`, else ValueError."""
        indices = tf.convert_to_tensor(indices)
        if not indices.dtype.is_integer:
            raise ValueError(
                "Invalid value for argument `indices`. Expected an integer tensor. "
                f"Received: dtype={indices.dtype.name}"
            )
        shape = indices.shape
        if shape.rank != 2 or shape[-1] != self.space.num_decisions:
            raise ValueError(
                "Invalid value for argument `indices`. Expected an int tensor of shape "
                f"[batch, {self.space.num_decisions}]. Received: shape={shape}"
            )
        return tf.cast(indices, tf.int32)

    @abc.abstractmethod
    def cost(self, architecture: Union[Architecture, Sequence[int]]) -> float:
        """The cost of one architecture (float64 arithmetic)."""

    @abc.abstractmethod
    def batch_cost(self, indices) -> tf.Tensor:
        """Float32 costs `[batch]` of int32 indices `[batch, num_decisions]` (TF ops)."""
