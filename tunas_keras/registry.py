"""Search spaces and reference models by name: the one place where their names are looked up.

    >>> from tunas_keras import registry
    >>> registry.get_search_space("proxyless").num_decisions
    73
    >>> registry.reference_architecture("mobilenet_v2").space
    'proxyless_enlarged'

The definitions live in the top-level `search_spaces` package, which registers them here
(`register_search_space`, `register_reference`) when it is imported. This module sits below
`tunas_keras.schema` (it imports nothing of `tunas_keras`) so that `schema` can validate an
architecture's space; importing `tunas_keras` therefore loads no search space.

References: Bender et al., CVPR 2020, Table 2 (the spaces) and §5 (the reference models).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

if TYPE_CHECKING:  # Annotations only: `schema` imports this module.
    from tunas_keras.schema import Architecture, SearchSpace

# Registers the built-in spaces and reference models when imported.
BUILTIN_PACKAGE = "search_spaces"

SEARCH_SPACES: dict[str, "SearchSpace"] = {}
ALIASES: dict[str, str] = {}  # the reference implementation's names of the spaces -> ours


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference model: a point of search spaces (a genotype), or a fixed network.

    Attributes:
      name: the registry name (`"mobilenet_v2"`, ...).
      spaces: the spaces with the model's layout, smallest first; by default the model is
        expressed in the first of them that contains it. Empty for a fixed network.
      indices: `space -> indices` of the model in one of `spaces`; raises `ValueError` when the
        model is not a point of that space. None for a fixed network.
      network: `() -> tunas_keras.specs.Network` of a model that is no point of any space
        (absolute sizes); None for a genotype.
    """

    name: str
    spaces: tuple = ()
    indices: Optional[Callable[["SearchSpace"], Sequence[int]]] = None
    network: Optional[Callable[[], Any]] = None

    def __post_init__(self):
        if (self.indices is None) == (self.network is None):
            raise ValueError(
                f"Invalid reference {self.name!r}. Expected exactly one of `indices` and `network`. "
                f"Received: indices={self.indices!r}, network={self.network!r}"
            )
        if self.indices is not None and not self.spaces:
            raise ValueError(f"Invalid reference {self.name!r}. Expected the `spaces` that contain it. Received: ()")


REFERENCES: dict[str, Reference] = {}


def register_search_space(space: "SearchSpace") -> "SearchSpace":
    """Registers `space` under `space.name` and its alias `space.reference_name`."""
    for name in (space.name, space.reference_name):
        if name in SEARCH_SPACES or name in ALIASES:
            raise ValueError(f"Invalid search space: the name {name!r} is already registered.")
    SEARCH_SPACES[space.name] = space
    ALIASES[space.reference_name] = space.name
    return space


def register_reference(reference: Reference) -> Reference:
    """Registers a reference model under `reference.name`."""
    if reference.name in REFERENCES:
        raise ValueError(f"Invalid reference: the name {reference.name!r} is already registered.")
    REFERENCES[reference.name] = reference
    return reference


def _load_builtin() -> None:
    # The one lazy import of space lookup: `search_spaces` is written with `tunas_keras.specs`,
    # so it imports this package and cannot be imported by it at module level. `import_module`
    # runs once; later calls find it in `sys.modules`.
    importlib.import_module(BUILTIN_PACKAGE)


def search_space_names() -> tuple[str, ...]:
    """The registered spaces, in registration order."""
    _load_builtin()
    return tuple(SEARCH_SPACES)


def reference_names() -> tuple[str, ...]:
    """The registered reference models, in registration order."""
    _load_builtin()
    return tuple(REFERENCES)


def _is_search_space(value: Any) -> bool:
    # `schema.SearchSpace` by its interface: this module cannot import `schema` (see above).
    return all(hasattr(value, attribute) for attribute in ("name", "decisions", "resolve", "architecture"))


def get_search_space(name: Union[str, "SearchSpace"]) -> "SearchSpace":
    """The search space called `name` (or one of the reference implementation's aliases).

    A `SearchSpace` object is returned as it is.

    Raises:
      ValueError: an unknown name.
    """
    if _is_search_space(name):
        return name
    _load_builtin()
    canonical = ALIASES.get(name, name) if isinstance(name, str) else name
    if canonical not in SEARCH_SPACES:
        raise ValueError(
            f"Invalid value for argument `space`. Expected one of {sorted(SEARCH_SPACES) + sorted(ALIASES)}. "
            f"Received: space={name!r}"
        )
    return SEARCH_SPACES[canonical]


def get_reference(name: str) -> Reference:
    """The registered reference model `name`.

    Raises:
      ValueError: an unknown name.
    """
    _load_builtin()
    if not isinstance(name, str) or name not in REFERENCES:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of {list(REFERENCES)}. Received: name={name!r}"
        )
    return REFERENCES[name]


def reference_architecture(name: str, space: Union[str, "SearchSpace", None] = None) -> "Architecture":
    """A reference model as an `Architecture` of a search space that contains it.

    Args:
      name: a registered reference that is a point of a space (not e.g. `mobilenet_v3_large`).
      space: the space to express it in; defaults to the smallest space containing it.

    Raises:
      ValueError: unknown name, or the reference is not a point of `space`.
    """
    reference = get_reference(name)
    if reference.indices is None:
        points = [other for other, entry in REFERENCES.items() if entry.indices is not None]
        raise ValueError(
            f"Invalid value for argument `name`: {name!r} is not a point of any search space; "
            f"build it with `tunas_keras.build_model({name!r})`. Expected one of {points}."
        )
    candidates = [get_search_space(space)] if space is not None else [get_search_space(n) for n in reference.spaces]
    errors = []
    for search_space in candidates:
        if search_space.name not in reference.spaces:
            raise ValueError(
                f"Invalid value for argument `space`. Expected one of {list(reference.spaces)} for reference "
                f"{name!r}. Received: space={search_space.name!r}"
            )
        try:
            return search_space.architecture(reference.indices(search_space))
        except ValueError as error:
            errors.append(f"not a point of {search_space.name!r} ({error})")
    raise ValueError(
        f"Invalid value for argument `space`: reference {name!r} is {'; '.join(errors)}. "
        f"Received: space={getattr(space, 'name', space)!r}"
    )


def reference_spec(name: str) -> Any:
    """The resolved spec (`tunas_keras.specs.Network`) of a reference model."""
    reference = get_reference(name)
    if reference.network is not None:
        return reference.network()
    architecture = reference_architecture(name)
    return get_search_space(architecture.space).resolve(architecture)
