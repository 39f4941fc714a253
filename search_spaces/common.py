"""Pieces shared by the search-space definitions."""

from __future__ import annotations

from tunas_keras.schema import OneOf
from tunas_keras.specs import scale_filters

# Output-width multipliers of the enlarged spaces (paper Table 2).
FILTER_MULTIPLIERS = (0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0)
KERNEL_SIZES = (3, 5, 7)


def filter_choices(base_filters: int) -> OneOf:
    """`base × {1/2 … 2}` rounded to multiples of 8, duplicates removed, ascending."""
    values = sorted({scale_filters(base_filters, multiplier) for multiplier in FILTER_MULTIPLIERS})
    return OneOf(tuple(values), "filters")


def fixed_filters(filters: int) -> OneOf:
    """A single-choice width decision (the reference keeps one per block in `proxyless`)."""
    return OneOf((filters,), "filters")
