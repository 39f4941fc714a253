"""Schema: OneOf, the decision traversal, Architecture parsing and JSON."""

import dataclasses
import json
from typing import NamedTuple

import pytest

import tunas_keras
from tests.conftest import random_indices
from tunas_keras.cost_models.tables import network_slots
from tunas_keras.schema import (
    LEAF_TYPES,
    Architecture,
    OneOf,
    SearchSpace,
    assign,
    decision_parents,
    iter_decisions,
    traverse,
)


@dataclasses.dataclass(frozen=True)
class _Leaf:
    kernel: object
    width: object


@dataclasses.dataclass(frozen=True)
class _Block:
    layers: tuple
    filters: object


def _toy_spec():
    inner = _Leaf(OneOf((3, 5), "kernel"), OneOf((1, 2, 3), "width"))
    return _Block((OneOf((inner, "skip"), "op"), _Leaf(7, OneOf((8, 9), "width"))), OneOf((16, 32), "filters"))


def test_traversal_order_children_before_parent_layers_before_filters():
    tags = [decision.tag for decision in iter_decisions(_toy_spec())]
    assert tags == ["kernel", "width", "op", "width", "filters"]


def test_assign_resolves_in_traversal_order():
    resolved = assign(_toy_spec(), [1, 2, 0, 1, 1])
    assert resolved == _Block((_Leaf(5, 3), _Leaf(7, 9)), 32)
    assert assign(_toy_spec(), [0, 0, 1, 0, 0]).layers[0] == "skip"


class _Pair(NamedTuple):
    first: object
    second: object


@pytest.mark.parametrize(
    "bad_node, kind",
    [([OneOf((3, 5), "kernel")], "list"), ({"kernel": 3}, "dict"), (object(), "object"), (_Leaf, "type")],
)
def test_unknown_node_types_are_clear_errors(bad_node, kind):
    spec = _Block((_Leaf(3, 4), _Leaf(bad_node, 1)), OneOf((16, 32), "filters"))
    message = rf"Invalid search space spec at 'layers/1/kernel'. Expected a OneOf, a dataclass.*Received: {kind}"
    for consumer in (lambda: list(iter_decisions(spec)), lambda: assign(spec, [0]), lambda: decision_parents(spec)):
        with pytest.raises(ValueError, match=message):
            consumer()
    with pytest.raises(ValueError, match=message):
        SearchSpace("toy", spec, target_latency=1.0, reference_name="toy")


def test_traverse_rebuilds_named_tuples_and_shares_subtrees_without_decisions():
    fixed = _Leaf(7, 8)
    spec = _Pair(OneOf((_Leaf(OneOf((3, 5), "kernel"), 1), "skip"), "op"), fixed)
    resolved = assign(spec, [1, 0])
    assert resolved == _Pair(_Leaf(5, 1), fixed) and isinstance(resolved, _Pair)
    assert resolved.second is fixed
    assert traverse(spec, lambda path, one_of, choices: one_of) == spec
    with pytest.raises(ValueError, match="too few indices"):
        assign(spec, [1])


def _value_at(resolved, path: tuple):
    """Follows a decision path into a resolved tree by attribute and item access (no traversal).

    A `"tag=c"` component names option `c` of an enclosing `OneOf`; for an active decision that
    option is what the resolved tree holds in the `OneOf`'s place, so the component is skipped.
    """
    node = resolved
    for part in path:
        if isinstance(part, str) and "=" in part:
            continue
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def test_every_consumer_agrees_on_the_decision_order(space):
    parents = decision_parents(space.spec)
    for seed in range(4):
        indices = random_indices(space, seed)
        resolved = assign(space.spec, indices)
        for position, decision in enumerate(space.decisions):
            parent, active = parents[position], True
            while parent is not None:  # the decision matters only if every enclosing choice is taken
                active = active and indices[parent[0]] == parent[1]
                parent = parents[parent[0]]
            if not active:
                continue
            chosen, value = decision.choices[indices[position]], _value_at(resolved, decision.path)
            if isinstance(chosen, LEAF_TYPES):
                assert type(value) is type(chosen) and value == chosen, (space.name, position, decision.name)
            else:
                assert type(value) is type(chosen), (space.name, position, decision.name)
    # The cost tables number the decisions block by block: layers first, then the block's width.
    slots = network_slots(space)
    walked = []
    for block_index in range(len(space.spec.blocks)):
        block_slots = [slot for slot in slots if slot.block_index == block_index]
        walked += [position for slot in block_slots for position in slot.vector.positions()]
        walked += block_slots[0].width.positions()
    assert walked == list(range(space.num_decisions))
    assert tuple(iter_decisions(space.spec)) == space.decisions


def test_one_of_validates_arguments():
    with pytest.raises(ValueError, match="`choices`"):
        OneOf((), "kernel")
    with pytest.raises(ValueError, match="`tag`"):
        OneOf((1, 2), "")


def test_parse_str_and_json_round_trip(space):
    indices = [count - 1 for count in space.num_choices]
    text = ":".join(map(str, indices))
    arch = space.parse(text)
    assert str(arch) == text
    assert arch.indices == tuple(indices)
    assert Architecture.from_json(arch.to_json()) == arch
    assert json.loads(arch.to_json())["format_version"] == 1


def test_bad_indices_raise_clear_errors():
    space = tunas_keras.get_search_space("proxyless")
    with pytest.raises(ValueError, match=r"Expected 73 indices.*Received: 72"):
        space.architecture([0] * 72)
    with pytest.raises(ValueError, match=r"range \[0, 2\]. Received: 3"):
        space.architecture([0, 3] + [0] * 71)
    with pytest.raises(ValueError, match=r"Expected colon-separated.*Received: text='0:a:1'"):
        space.parse("0:a:1")
    with pytest.raises(ValueError, match=r"Expected colon-separated"):
        space.parse("0:-1:0")


def test_json_with_unknown_version_or_space_is_rejected():
    arch = tunas_keras.reference_architecture("proxylessnas_mobile")
    data = arch.to_dict()
    with pytest.raises(ValueError, match=r"format_version.*Expected 1. Received: format_version=7"):
        Architecture.from_dict({**data, "format_version": 7})
    with pytest.raises(ValueError, match=r"`space`.*Received: space='nope'"):
        Architecture.from_dict({**data, "space": "nope"})
    with pytest.raises(ValueError, match="Invalid architecture JSON"):
        Architecture.from_json("{not json")
