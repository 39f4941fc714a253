"""The search spaces of the paper (Table 2) and the reference architectures, by name.

    >>> import search_spaces
    >>> space = search_spaces.get_search_space("proxyless")
    >>> space.num_decisions
    73
"""

from __future__ import annotations

from typing import Optional, Union

from search_spaces import reference
from search_spaces.mobilenet_v3_like import MOBILENET_V3_LIKE
from search_spaces.proxyless import PROXYLESS, PROXYLESS_ENLARGED
from tunas_keras.schema import Architecture, SearchSpace

SEARCH_SPACES = {space.name: space for space in (PROXYLESS, PROXYLESS_ENLARGED, MOBILENET_V3_LIKE)}
ALIASES = {space.reference_name: name for name, space in SEARCH_SPACES.items()}
REFERENCE_NAMES = reference.REFERENCE_NAMES
# The space a reference lands in when none is named: the smallest space that contains it.
DEFAULT_REFERENCE_SPACE = {
    "proxylessnas_mobile": "proxyless",
    "mobilenet_v2": "proxyless_enlarged",
    "mnasnet_b1": "proxyless_enlarged",
    "proxylessnas_mobile_x2_every_stride2": "proxyless_enlarged",
    "proxylessnas_mobile_x2_every_block": "proxyless_enlarged",
}


def get_search_space(name: Union[str, SearchSpace]) -> SearchSpace:
    """Returns the search space called `name` (or one of the reference implementation's aliases)."""
    if isinstance(name, SearchSpace):
        return name
    canonical = ALIASES.get(name, name)
    if canonical not in SEARCH_SPACES:
        raise ValueError(
            f"Invalid value for argument `space`. Expected one of {sorted(SEARCH_SPACES) + sorted(ALIASES)}. "
            f"Received: space={name!r}"
        )
    return SEARCH_SPACES[canonical]


def _check_reference_name(name: str) -> None:
    if name not in REFERENCE_NAMES:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of {list(REFERENCE_NAMES)}. Received: name={name!r}"
        )


def reference_architecture(name: str, space: Optional[str] = None) -> Architecture:
    """A reference model as an `Architecture` of a search space that contains it.

    Args:
      name: one of `REFERENCE_NAMES` except `mobilenet_v3_large` (which is no point of a space).
      space: the space to express it in; defaults to the smallest space containing it.

    Raises:
      ValueError: unknown name, or the reference is not a point of `space`.
    """
    _check_reference_name(name)
    if name not in reference.PROXYLESS_LAYOUT_REFERENCES:
        raise ValueError(
            f"Invalid value for argument `name`: {name!r} is not a point of any search space; "
            f"build it with `tunas_keras.build_model({name!r})`. Expected one of "
            f"{list(reference.PROXYLESS_LAYOUT_REFERENCES)}."
        )
    search_space = get_search_space(space or DEFAULT_REFERENCE_SPACE[name])
    if search_space.name not in ("proxyless", "proxyless_enlarged"):
        raise ValueError(
            f"Invalid value for argument `space`. Expected 'proxyless' or 'proxyless_enlarged' for "
            f"reference {name!r}. Received: space={search_space.name!r}"
        )
    try:
        indices = reference.layout_indices(reference.PROXYLESS_LAYOUT_REFERENCES[name], search_space)
    except ValueError as error:
        raise ValueError(
            f"Invalid value for argument `space`: reference {name!r} is not a point of {search_space.name!r} "
            f"({error}). Received: space={search_space.name!r}"
        ) from error
    return search_space.architecture(indices)


def reference_spec(name: str):
    """The resolved spec (`tunas_keras.specs.Network`) of a reference model."""
    _check_reference_name(name)
    if name == "mobilenet_v3_large":
        return reference.mobilenet_v3_large()
    architecture = reference_architecture(name, space="proxyless_enlarged")
    return get_search_space(architecture.space).resolve(architecture)
