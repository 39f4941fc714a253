"""Schema: OneOf, the decision traversal, Architecture parsing and JSON."""

import dataclasses
import json

import pytest

import tunas_keras
from tunas_keras.schema import Architecture, OneOf, assign, iter_decisions


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
