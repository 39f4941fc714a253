"""The three search spaces: decision counts, cardinalities, order against the golden vectors."""

import math
import os
import subprocess
import sys

import pytest

import tunas_keras
from search_spaces import ALIASES, reference
from tests.conftest import SPACE_NAMES, load_golden_vectors
from tunas_keras import registry

EXPECTED = {
    # name: (decisions, cardinality, reference alias)
    "proxyless": (73, 2.2e21, "proxylessnas_search"),
    "proxyless_enlarged": (73, 1.4e28, "proxylessnas_enlarged_search"),
    "mobilenet_v3_like": (86, 8.5e42, "mobilenet_v3_like_search"),
}
PROXYLESS_MOBILE = (
    "0:0:0:1:0:0:0:0:0:0:0:1:0:0:1:0:2:0:0:0:0:0:1:0:0:1:0:0:0:2:1:0:1:0:0:1:0:0:1:0:0:0:1:1:0:1:0:0:1:0:0:1:"
    "0:0:0:2:1:0:2:1:0:2:0:0:2:0:0:0:2:1:0:0:0"
)
PROXYLESS_MOBILE_ENLARGED = (
    "3:0:1:1:0:0:0:0:0:0:0:1:0:0:1:3:2:0:0:0:0:0:1:0:0:1:0:0:3:2:1:0:1:0:0:1:0:0:1:0:0:4:1:1:0:1:0:0:1:0:0:1:"
    "0:0:2:2:1:0:2:1:0:2:0:0:2:0:0:2:2:1:0:1:4"
)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_decision_counts_and_cardinality(name):
    assert name in EXPECTED, f"pin the decision count and cardinality of the new space {name!r} here"
    decisions, cardinality, alias = EXPECTED[name]
    space = tunas_keras.get_search_space(name)
    assert space.num_decisions == decisions
    assert math.isclose(space.cardinality, cardinality, rel_tol=0.05), space.cardinality
    assert tunas_keras.get_search_space(alias) is space
    assert ALIASES[alias] == name


def test_exact_cardinalities():
    # proxyless: 3 (sepconv) · 6^6 (first layers: kernel × expansion) · 12^15 (skippable: k × e × op)
    assert tunas_keras.get_search_space("proxyless").cardinality == 3 * 6**6 * 12**15
    # mobilenet_v3_like: stem 2·3·2·4; five blocks of 36 · 72^3 and their widths; two heads of 7.
    widths = 4 * 6 * 7 * 7 * 7
    expected = (2 * 3 * 2 * 4) * (36 * 72**3) ** 5 * widths * 7 * 7
    assert tunas_keras.get_search_space("mobilenet_v3_like").cardinality == expected


def test_proxyless_positions_match_the_cost_model_table():
    space = tunas_keras.get_search_space("proxyless")
    tags = [decision.tag for decision in space.decisions]
    # Position 1: the separable conv is a choice among three whole ops (as the reference).
    assert tags[:3] == ["filters", "op", "filters"]
    assert [choice.kernel_size for choice in space.decisions[1].choices] == [3, 5, 7]
    for p in (3, 16, 29, 42, 55):
        assert tags[p : p + 3] == ["kernel_size", "expansion", "op"]
        assert space.decisions[p + 2].num_choices == 1
        for j in (1, 2, 3):
            assert tags[p + 3 * j : p + 3 * j + 3] == ["kernel_size", "expansion", "op"]
            assert space.decisions[p + 3 * j + 2].num_choices == 2
        assert tags[p + 12] == "filters"
    assert tags[68:] == ["kernel_size", "expansion", "op", "filters", "filters"]


def test_enlarged_width_choices():
    space = tunas_keras.get_search_space("proxyless_enlarged")
    widths = [decision.choices for decision in space.decisions if decision.tag == "filters"]
    assert [decision_index for decision_index, decision in enumerate(space.decisions) if decision.tag == "filters"] == [
        0,
        2,
        15,
        28,
        41,
        54,
        67,
        71,
        72,
    ]
    assert widths[0] == (8, 16, 24, 32)
    assert widths[3] == (16, 24, 32, 40, 48, 64)
    assert widths[8] == (512, 640, 768, 1024, 1280, 1536, 2048)


def test_mobilenet_v3_like_positions():
    space = tunas_keras.get_search_space("mobilenet_v3_like")
    assert [d.num_choices for d in space.decisions[:4]] == [2, 3, 2, 4]
    # Block widths: bases 16, 32, 64, 128, 256 give 4, 6, 7, 7, 7 choices (the segment table of
    # cost-model.md; its position table's "4, 4, 6, 7, 7" is a typo, the ~8.5e42 cardinality
    # only holds with 4, 6, 7, 7, 7).
    for q, widths in zip((4, 20, 36, 52, 68), (4, 6, 7, 7, 7)):
        assert [d.num_choices for d in space.decisions[q : q + 3]] == [3, 6, 2]
        for j in range(3):
            assert [d.num_choices for d in space.decisions[q + 3 + 4 * j : q + 7 + 4 * j]] == [3, 6, 2, 2]
        assert space.decisions[q + 15].num_choices == widths
    assert [d.num_choices for d in space.decisions[84:]] == [7, 7]


def test_golden_vectors_parse_in_their_space():
    vectors = load_golden_vectors()
    assert len(vectors) == 60
    for vector in vectors:
        space = tunas_keras.get_search_space(vector["space"])
        arch = space.architecture(vector["indices"])  # validates length and every range
        assert len(arch.indices) == space.num_decisions


def test_unknown_space_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`space`. Expected one of .*proxyless.*Received: space='resnet'"):
        tunas_keras.get_search_space("resnet")


def test_reference_architectures_match_the_cost_model_doc():
    assert str(tunas_keras.reference_architecture("proxylessnas_mobile")) == PROXYLESS_MOBILE
    enlarged = tunas_keras.reference_architecture("proxylessnas_mobile", space="proxyless_enlarged")
    assert str(enlarged) == PROXYLESS_MOBILE_ENLARGED
    for name in ("mobilenet_v2", "mnasnet_b1"):
        assert tunas_keras.reference_architecture(name).space == "proxyless_enlarged"


def test_reference_architecture_errors():
    with pytest.raises(ValueError, match=r"`name`. Expected one of .*mobilenet_v2.*Received: name='vgg'"):
        tunas_keras.reference_architecture("vgg")
    with pytest.raises(ValueError, match="not a point of any search space"):
        tunas_keras.reference_architecture("mobilenet_v3_large")
    with pytest.raises(ValueError, match=r"not a point of 'proxyless'"):
        tunas_keras.reference_architecture("mobilenet_v2", space="proxyless")


def test_layout_indices_follow_the_space_order_and_check_the_layout():
    layout = reference.PROXYLESS_LAYOUT_REFERENCES["mobilenet_v2"]
    space = tunas_keras.get_search_space("proxyless_enlarged")
    indices = reference.layout_indices(layout, space)
    resolved = space.resolve(space.architecture(indices))
    assert [block.filters for block in resolved.blocks] == list(layout.filters)
    with pytest.raises(ValueError, match="23 op codes; the space has 22 searched layers"):
        reference.layout_indices(layout._replace(ops=layout.ops + (0,)), space)
    with pytest.raises(ValueError, match="op codes; the space needs more"):
        reference.layout_indices(layout._replace(ops=layout.ops[:-1]), space)
    with pytest.raises(ValueError, match="Op code 6 matches 0 choices"):  # the first layer of a block is not skippable
        reference.layout_indices(layout._replace(ops=(0, 6) + layout.ops[2:]), space)


def test_importing_the_schema_imports_no_search_space():
    code = "import sys, tunas_keras.schema; assert not any(m.startswith('search_spaces') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_registry_rejects_duplicates_and_malformed_references():
    space = registry.get_search_space("proxyless")
    with pytest.raises(ValueError, match="'proxyless' is already registered"):
        registry.register_search_space(space)
    with pytest.raises(ValueError, match="'mobilenet_v2' is already registered"):
        registry.register_reference(registry.get_reference("mobilenet_v2"))
    with pytest.raises(ValueError, match="exactly one of `indices` and `network`"):
        registry.Reference("toy")
    with pytest.raises(ValueError, match="Expected the `spaces` that contain it"):
        registry.Reference("toy", indices=lambda space: [0] * space.num_decisions)
    assert registry.search_space_names() == tuple(registry.SEARCH_SPACES)
    with pytest.raises(ValueError, match=r"`space`. Expected one of .*Received: space=3"):
        registry.get_search_space(3)
