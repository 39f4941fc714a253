"""Argument checks shared by the model builders (`build_model`, `build_backbone`, `build_supernet`).

Each check returns the normalised value or raises `ValueError` naming the argument, what was
expected and what was received.
"""

from __future__ import annotations

from typing import Any


def check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    """`(height, width, channels)` with positive ints, as a tuple."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or any(isinstance(size, bool) or not isinstance(size, int) or size <= 0 for size in shape):
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (height, width, channels) with positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def check_num_classes(num_classes: Any) -> int:
    """A positive int (bools are rejected)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Invalid value for argument `num_classes`. Expected an int >= 1. Received: {num_classes!r}")
    return num_classes


def check_dropout_rate(dropout_rate: Any) -> float:
    """A number in [0, 1)."""
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"Invalid value for argument `dropout_rate`. Expected [0, 1). Received: {dropout_rate!r}")
    return float(dropout_rate)
