"""The search space as data: `OneOf`, the decision traversal and `Architecture`.

A search space is a tree of immutable specs (frozen dataclasses, tuples and plain values) in
which some values are replaced by `OneOf(choices, tag)`. Every consumer that needs the order of
the decisions (parsing `indices`, the controller, the cost models, the supernet masks) uses the
one traversal defined here, `traverse` (or `iter_decisions`, built on it), so that the order
cannot drift between them. A node of any other type (a list, a dict, ...) is an error, never a
silent leaf.

Decision order (it matches the reference TuNAS implementation, so `indices` strings and the
Pixel-1 cost model line up): depth-first; dataclass fields in declaration order; tuple items in
order; a `OneOf` is visited *after* every decision nested inside any of its choices (all
choices, first choice first).

References: Bender et al., CVPR 2020, §4 ("A search space is represented as a set of
categorical decisions").
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

from tunas_keras import registry

ARCHITECTURE_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class OneOf:
    """A categorical decision: exactly one of `choices` is used.

    Args:
      choices: the options, in index order (index 0 is the first option). Options may be plain
        values or specs that contain further `OneOf`s.
      tag: what the decision controls (`"kernel_size"`, `"expansion"`, `"filters"`, ...).
    """

    choices: tuple
    tag: str

    def __post_init__(self):
        if not isinstance(self.choices, tuple) or not self.choices:
            raise ValueError(
                f"Invalid value for argument `choices`. Expected a non-empty tuple. Received: choices={self.choices!r}"
            )
        if not isinstance(self.tag, str) or not self.tag:
            raise ValueError(
                f"Invalid value for argument `tag`. Expected a non-empty string. Received: tag={self.tag!r}"
            )


class Decision(NamedTuple):
    """One decision of a search space, as yielded by `iter_decisions`.

    Attributes:
      path: where the decision sits in the spec tree (field names, tuple indices and choice
        indices), for messages and summaries.
      one_of: the `OneOf` itself.
    """

    path: tuple
    one_of: OneOf

    @property
    def tag(self) -> str:
        return self.one_of.tag

    @property
    def choices(self) -> tuple:
        return self.one_of.choices

    @property
    def num_choices(self) -> int:
        return len(self.one_of.choices)

    @property
    def name(self) -> str:
        return "/".join(str(part) for part in self.path) + "/" + self.one_of.tag


# Plain values that end a branch of a spec tree (the values a spec field or a choice may hold).
LEAF_TYPES = (bool, int, float, str, type(None))


def children(node: Any, path: tuple = ()) -> tuple[tuple[Any, Any], ...]:
    """The structural children of a spec node, as `(path component, child)` pairs in traversal order.

    Nodes are dataclass instances (fields in declaration order, keyed by field name) and tuples,
    named tuples included (items in order, keyed by index); plain values (`LEAF_TYPES`) have no
    children. A `OneOf` is not handled here: `traverse` walks its choices.

    Args:
      node: a node of a spec tree.
      path: where `node` sits (only used in the error message).

    Raises:
      ValueError: `node` is of any other type (a list, dict, class, NumPy value, ...): spec trees
        are immutable, and silently treating an unknown object as a leaf would drop its decisions.
    """
    if isinstance(node, LEAF_TYPES):
        return ()
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return tuple((field.name, getattr(node, field.name)) for field in dataclasses.fields(node))
    if isinstance(node, tuple):
        return tuple(enumerate(node))
    location = "/".join(str(part) for part in path) or "<root>"
    raise ValueError(
        f"Invalid search space spec at {location!r}. Expected a OneOf, a dataclass instance, a tuple or a plain "
        f"value ({', '.join(kind.__name__ for kind in LEAF_TYPES)}). Received: {type(node).__name__} {node!r:.80}"
    )


def rebuild(node: Any, values: Sequence[Any]) -> Any:
    """`node` with its children (as listed by `children`) replaced by `values`.

    Returns `node` itself when nothing changed, so subtrees without decisions are shared.
    """
    original = children(node)
    if all(value is child for value, (_, child) in zip(values, original)):
        return node
    if isinstance(node, tuple):
        return type(node)._make(values) if hasattr(node, "_fields") else tuple(values)
    return dataclasses.replace(node, **{name: value for (name, _), value in zip(original, values)})


def traverse(
    spec: Any,
    on_one_of: Callable[[tuple, OneOf, list], Any],
    on_node: Optional[Callable[[tuple, Any, list], Any]] = None,
    path: tuple = (),
) -> Any:
    """The one traversal of a spec tree (the decision order of the module docstring).

    Post-order and depth-first: every child is folded before its parent, dataclass fields in
    declaration order, tuple items in order, and a `OneOf`'s choices (first choice first) before
    the `OneOf`. So `on_one_of` is called once per decision, in decision order: a consumer may
    number the decisions by counting its calls.

    Args:
      spec: the spec tree.
      on_one_of: `(path, one_of, folded_choices) -> value` for each `OneOf`.
      on_node: `(path, node, folded_children) -> value` for each other node (`folded_children`
        is empty for a plain value). The default (None) rebuilds the node from the folded
        children (`rebuild`), which makes `traverse` a map over the decisions.
      path: the path of `spec` (field names, tuple indices and `"{tag}={choice index}"` for the
        options of a `OneOf`); `Decision.path` is this path.

    Returns:
      The folded value of `spec`.

    Raises:
      ValueError: a node of an unknown type (see `children`).
    """
    if isinstance(spec, OneOf):
        folded = [
            traverse(choice, on_one_of, on_node, path + (f"{spec.tag}={index}",))
            for index, choice in enumerate(spec.choices)
        ]
        return on_one_of(path, spec, folded)
    folded = [traverse(child, on_one_of, on_node, path + (key,)) for key, child in children(spec, path)]
    return rebuild(spec, folded) if on_node is None else on_node(path, spec, folded)


def iter_decisions(spec: Any) -> Iterator[Decision]:
    """Every decision of `spec` in decision order (children before the parent)."""
    decisions: list[Decision] = []

    def record(path: tuple, one_of: OneOf, folded: list) -> OneOf:
        del folded
        decisions.append(Decision(path, one_of))
        return one_of

    traverse(spec, record, on_node=lambda path, node, values: None)
    return iter(decisions)


def assign(spec: Any, indices: Sequence[int]) -> Any:
    """Returns `spec` with every `OneOf` replaced by its chosen (and resolved) option.

    Args:
      spec: a spec tree containing `OneOf`s.
      indices: one index per decision, in the order of `iter_decisions`; they must already be
        validated (see `SearchSpace.validate_indices`).

    Returns:
      The resolved spec tree (no `OneOf` left).

    Raises:
      ValueError: fewer or more indices than decisions.
    """
    iterator = iter(indices)

    def choose(path: tuple, one_of: OneOf, resolved_choices: list) -> Any:
        # Every option was resolved first, so nested decisions consumed their indices in order.
        index = next(iterator, None)
        if index is None:
            raise ValueError(f"Invalid value for argument `indices`: too few indices (none left for {path!r}).")
        return resolved_choices[index]

    resolved = traverse(spec, choose)
    leftover = sum(1 for _ in iterator)
    if leftover:
        raise ValueError(f"Invalid value for argument `indices`: {leftover} more indices than decisions.")
    return resolved


def contains_one_of(spec: Any) -> bool:
    """Whether `spec` still has decisions to make."""
    return next(iter_decisions(spec), None) is not None


class SearchSpace:
    """A named spec tree with its decisions, and the conversions between indices and specs.

    Args:
      name: the registry name (`"proxyless"`, ...).
      spec: the spec tree (a `tunas_keras.specs.Network` with `OneOf`s).
      target_latency: the default latency target T0 in ms of the Pixel-1 model for this space.
      reference_name: the name of the space in the reference implementation (for the cost model).
    """

    def __init__(self, name: str, spec: Any, target_latency: float, reference_name: str):
        self.name = name
        self.spec = spec
        self.target_latency = target_latency
        self.reference_name = reference_name
        self.decisions: tuple[Decision, ...] = tuple(iter_decisions(spec))

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, num_decisions={self.num_decisions})"

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    @property
    def num_choices(self) -> tuple[int, ...]:
        return tuple(decision.num_choices for decision in self.decisions)

    @property
    def cardinality(self) -> int:
        """Product of the choice counts (an upper bound on the number of distinct networks)."""
        product = 1
        for count in self.num_choices:
            product *= count
        return product

    def validate_indices(self, indices: Sequence[int]) -> tuple[int, ...]:
        """Checks length and ranges; returns the indices as a tuple of ints."""
        if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence):
            raise ValueError(
                "Invalid value for argument `indices`. Expected a sequence of "
                f"{self.num_decisions} ints. Received: indices={indices!r}"
            )
        if len(indices) != self.num_decisions:
            raise ValueError(
                f"Invalid value for argument `indices`. Expected {self.num_decisions} indices for "
                f"search space {self.name!r}. Received: {len(indices)} indices"
            )
        checked = []
        for position, (index, decision) in enumerate(zip(indices, self.decisions)):
            if isinstance(index, bool) or not _is_integral(index):
                raise ValueError(
                    f"Invalid value for argument `indices`. Expected an int at position {position}. Received: {index!r}"
                )
            if not 0 <= int(index) < decision.num_choices:
                raise ValueError(
                    f"Invalid value for argument `indices`. Expected index {position} "
                    f"({decision.name}) in range [0, {decision.num_choices - 1}]. Received: {index}"
                )
            checked.append(int(index))
        return tuple(checked)

    def architecture(self, indices: Sequence[int]) -> "Architecture":
        """An `Architecture` of this space from validated `indices`."""
        return Architecture(self.name, self.validate_indices(indices))

    def parse(self, text: str) -> "Architecture":
        """Parses the reference tools' colon-separated string, e.g. `"0:1:0:2"`."""
        if not isinstance(text, str):
            raise ValueError(f"Invalid value for argument `text`. Expected a string like '0:1:2'. Received: {text!r}")
        parts = text.strip().split(":")
        if not all(part.strip().isdigit() for part in parts):
            raise ValueError(
                "Invalid value for argument `text`. Expected colon-separated non-negative integers "
                f"like '0:1:2'. Received: text={text!r}"
            )
        return self.architecture([int(part) for part in parts])

    def resolve(self, architecture: "Architecture") -> Any:
        """The spec tree of `architecture` with every decision made."""
        if architecture.space != self.name:
            raise ValueError(
                f"Invalid value for argument `architecture`. Expected an architecture of space {self.name!r}. "
                f"Received: space={architecture.space!r}"
            )
        return assign(self.spec, self.validate_indices(architecture.indices))


def _is_integral(value: Any) -> bool:
    try:
        return int(value) == value
    except (TypeError, ValueError):
        return False


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A point of a search space: the space name plus one index per decision.

    `str(arch)` is the colon-separated index string of the reference tools
    (`"0:1:0:..."`); `to_json` / `from_json` round-trip it with a format version.
    """

    space: str
    indices: tuple

    def __post_init__(self):
        object.__setattr__(self, "indices", tuple(int(index) for index in self.indices))

    def __str__(self) -> str:
        return ":".join(str(index) for index in self.indices)

    def to_dict(self) -> dict:
        return {"format_version": ARCHITECTURE_FORMAT_VERSION, "space": self.space, "indices": list(self.indices)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "Architecture":
        """Reads the dict written by `to_dict` (extra keys such as `cost` are ignored)."""
        if not isinstance(data, dict):
            raise ValueError(f"Invalid architecture JSON. Expected an object. Received: {type(data).__name__}")
        version = data.get("format_version")
        if version != ARCHITECTURE_FORMAT_VERSION:
            raise ValueError(
                "Invalid architecture JSON `format_version`. Expected "
                f"{ARCHITECTURE_FORMAT_VERSION}. Received: format_version={version!r}"
            )
        missing = [key for key in ("space", "indices") if key not in data]
        if missing:
            raise ValueError(f"Invalid architecture JSON. Expected keys 'space' and 'indices'. Missing: {missing}")
        # Validate against the space so that a stale file fails here, not deep in a model build.
        return registry.get_search_space(data["space"]).architecture(data["indices"])

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Invalid architecture JSON: {error}. Received: {text[:80]!r}") from error
        return cls.from_dict(data)


def decision_parents(spec: Any) -> tuple:
    """For each decision (in `iter_decisions` order), the choice that must be active for it to matter.

    A decision nested inside option `c` of a `OneOf` at position `p` matters only when decision
    `p` picks `c` (and `p` itself matters): the kernel size of a skippable layer is irrelevant
    when the layer is skipped. Since parents are listed after their children, `p` is always
    larger than the child's position.

    Args:
      spec: a spec tree containing `OneOf`s.

    Returns:
      A tuple with one entry per decision: `(parent_position, choice_index)`, or `None` for a
      top-level decision.
    """
    parents: list = []

    def nest(path: tuple, one_of: OneOf, inner: list) -> list:
        # `inner[c]`: the positions of the decisions inside option `c` (already numbered).
        position = len(parents)
        parents.append(None)
        for choice_index, positions in enumerate(inner):
            for child in positions:
                # Deeper decisions already got their own (nearer) parent.
                if parents[child] is None:
                    parents[child] = (position, choice_index)
        return [child for positions in inner for child in positions] + [position]

    traverse(spec, nest, on_node=lambda path, node, values: [child for positions in values for child in positions])
    return tuple(parents)
