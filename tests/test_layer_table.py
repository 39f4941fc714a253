"""Per-layer latency tables: layer variants, their ops, tables as linear files, the op predictor, the protocol."""

import math

import numpy as np
import pytest

import tunas_keras
from tunas_keras import specs
from tunas_keras.cost_models import features, layer_table, op_predictor, protocol
from tunas_keras.cost_models.linear import LinearCostModel
from tunas_keras.cost_models.sampling import uniform_indices
from tunas_keras.export import tflite

SPACES = ("proxyless", "proxyless_enlarged", "mobilenet_v3_like")


def _catalogue(name, image_size=224):
    return layer_table.layer_catalogue(tunas_keras.get_search_space(name), image_size, 1001)


def test_catalogue_counts_fusion_and_what_runs():
    catalogue = _catalogue("proxyless")
    kinds = [
        type(v.spec).__name__ if v.spec != layer_table.CLASSIFIER else "Classifier" for v in catalogue.variants.values()
    ]
    # 3 sepconv kernels; per bottleneck block 6 first layers + 6 shared residual layers; stem, head, pool, classifier.
    assert len(catalogue.variants) == 73
    assert kinds.count("Bottleneck") == 36 and kinds.count("Residual") == 30 and "Activation" not in kinds
    stem = next(v for v in catalogue.variants.values() if isinstance(v.spec, specs.Conv) and v.spec.strides == 2)
    assert stem.fused_activation == "relu" and stem.input_shape == (224, 224, 3) and stem.filters == 32
    space = catalogue.space
    smallest = [0] * space.num_decisions
    for position, decision in enumerate(space.decisions):
        if any(isinstance(choice, specs.Zero) for choice in decision.choices):
            smallest[position] = 1
    # stem conv, sepconv, 6 first bottlenecks, head conv, pool, classifier: skipped layers run nothing.
    assert len(catalogue.network_variants(smallest)) == 11
    assert len(catalogue.network_variants([0] * space.num_decisions)) == 11 + 15
    mobilenet = _catalogue("mobilenet_v3_like")
    swish = [v for v in mobilenet.variants.values() if isinstance(v.spec, specs.Activation)]
    assert len(swish) == 4 + 7 + 7 and all(v.spec.activation == specs.SWISH6 for v in swish)
    assert len(_catalogue("proxyless_enlarged").variants) == 1651 and len(mobilenet.variants) == 7602
    assert len(layer_table.catalogue_ops(mobilenet)) < len(mobilenet.variants) / 3


@pytest.mark.parametrize("name", SPACES)
def test_tables_to_linear_equals_the_layer_sum(name):
    """The Pixel-1-layout file of a table model predicts exactly its per-block scaled sums."""
    catalogue = _catalogue(name, 64)
    space = catalogue.space
    rng = np.random.default_rng(1)
    latency = {key: float(value) for key, value in zip(catalogue.variants, rng.uniform(0.01, 2.0, 10**5))}
    scales = rng.uniform(0.8, 1.2, len(space.spec.blocks))
    bias, kernel = layer_table.tables_to_linear(space, catalogue, latency, 3.0, scales)
    model = LinearCostModel(space, bias, kernel)
    rows = uniform_indices(space, rng, 16)
    batch = model.batch_cost(rows).numpy()
    for row, batched in zip(rows.tolist(), batch):
        expected = 3.0 + layer_table.block_costs(catalogue, latency, row) @ scales
        assert bias + features(space, row).astype(np.float64) @ kernel == pytest.approx(expected, rel=1e-6)
        assert model.cost(row) == pytest.approx(expected, rel=1e-5)
        assert batched == pytest.approx(expected, rel=1e-4)  # the search's gather, in float32
    plain = layer_table.network_cost(catalogue, latency, rows[0].tolist(), 3.0)
    assert plain == pytest.approx(3.0 + layer_table.block_costs(catalogue, latency, rows[0].tolist()).sum())


def test_variant_ops_are_the_ops_of_the_converted_layer_and_op_models():
    """Real conversions (tiny shapes): a layer model runs exactly the ops `variant_ops` lists."""
    names = {
        "conv": "CONV_2D",
        "depthwise": "DEPTHWISE_CONV_2D",
        "hard_swish": "HARD_SWISH",
        "add": "ADD",
        "mul": "MUL",
        "mean": "MEAN",
        "logistic": "LOGISTIC",
        "dense": "FULLY_CONNECTED",
    }
    variants = [
        layer_table.LayerVariant(specs.Residual(specs.Bottleneck(5, 4, True, activation=specs.SWISH6)), (8, 8, 16), 16),
        layer_table.LayerVariant(specs.Bottleneck(7, 3, strides=2), (8, 8, 8), 24),
        layer_table.LayerVariant(specs.Conv(3, 2), (16, 16, 3), 8, fused_activation="relu"),
        layer_table.LayerVariant(specs.SeparableConv(3, activation=specs.RELU), (8, 8, 8), 16),
    ]
    for variant in variants:
        ops = layer_table.variant_ops(variant)
        converted = tflite.tflite_op_names(tflite.convert_to_tflite(layer_table.build_variant_model(variant)))
        assert [name for name in converted if name != "RESHAPE"] == [names[op.kind] for op in ops], variant.key
    for op in layer_table.variant_ops(variants[0]):
        converted = tflite.tflite_op_names(tflite.convert_to_tflite(layer_table.build_op_model(op)))
        assert converted == [names[op.kind]], op.key
    classifier = layer_table.LayerVariant(layer_table.CLASSIFIER, (1, 1, 32), 10)
    assert "FULLY_CONNECTED" in tflite.tflite_op_names(
        tflite.convert_to_tflite(layer_table.build_variant_model(classifier))
    )
    expand, *_ = layer_table.variant_ops(variants[1])
    assert expand.macs == 8 * 8 * 8 * 24 and expand.output_shape == (8, 8, 24)


def test_op_predictor_recovers_a_linear_device_and_samples_every_group():
    ops = layer_table.catalogue_ops(_catalogue("mobilenet_v3_like"))
    weights = {}

    scale = np.asarray([1e-3, 1e-6, 1e-7, 1e-7] + [1e-6, 1e-7, 1e-7] * 2)

    def latency(op):  # A device that is linear in the predictor's features, different per kind of op.
        if op.kind not in weights:
            weights[op.kind] = np.random.default_rng(len(weights)).uniform(0.5, 1, 10) * scale
        return float(op_predictor.op_features(op) @ weights[op.kind])

    sample = op_predictor.sample_ops(ops, 400, seed=0)
    assert len(sample) == 400 and len(set(sample)) == 400 and sample == op_predictor.sample_ops(ops, 400, seed=0)
    groups = {op_predictor.op_group(op) for op in ops.values()}
    assert {op_predictor.op_group(ops[key]) for key in sample} == groups
    predictor = op_predictor.OpPredictor.fit([ops[key] for key in sample], [latency(ops[key]) for key in sample])
    errors = {key: abs(predictor.predict(op) - latency(op)) / latency(op) for key, op in ops.items()}
    assert np.mean(list(errors.values())) < 1e-3 and max(errors.values()) < 0.02
    with pytest.raises(ValueError, match="no op of kind"):
        op_predictor.OpPredictor.fit([ops[sample[0]]], [1.0]).predict(
            next(op for op in ops.values() if op.kind != ops[sample[0]].kind)
        )
    assert op_predictor.sample_ops(ops, 10**6) == list(ops)


def test_schedule_interleaves_rounds_and_repeats_anchors():
    keys = [f"k{index}" for index in range(45)]
    visits = protocol.schedule(
        "network", keys, rounds=3, anchors=["k3", "k7"], anchor_every=20, seed=0, first=["empty"]
    )
    assert visits == protocol.schedule(
        "network", keys, rounds=3, anchors=["k3", "k7"], anchor_every=20, seed=0, first=["empty"]
    )
    for round_index in range(3):
        keys_of_round = [key for r, key, _ in visits if r == round_index]
        assert keys_of_round[0] == "empty"
        assert sorted(set(keys_of_round) - {"empty"}) == sorted(keys)
        assert keys_of_round.count("k3") == 4 and keys_of_round.count("k11") == 1  # before 0, 20, 40 and at the end
    orders = [[key for r, key, _ in visits if r == index and key not in ("k3", "k7", "empty")] for index in range(3)]
    assert orders[0] != orders[1] != orders[2]
    more = protocol.schedule(
        "network", keys + ["new"], rounds=3, anchors=["k3", "k7"], anchor_every=20, seed=0, first=["empty"]
    )
    assert set(visits) <= set(more) and len(more) == len(visits) + 3
    with pytest.raises(ValueError, match="`anchors`"):
        protocol.schedule("network", keys, rounds=1, anchors=["nope"])


def _record(key, round_index, value, occurrence=0):
    return {"key": key, "round": round_index, "occurrence": occurrence, "median": value, "min": value, "mean": value}


def test_noise_floor_is_the_agreement_between_rounds():
    first, second = np.array([10.0, 20.0, 30.0, 40.0]), np.array([11.0, 19.0, 33.0, 40.0])
    records = [_record(f"n{i}", 0, value) for i, value in enumerate(first)]
    records += [_record(f"n{i}", 1, value) for i, value in enumerate(second)]
    records += [_record("n0", 0, 12.0, 1), _record("n0", 1, 10.0, 1)]  # an anchor visited twice a round
    noise = protocol.noise_floor(records, "median")
    per_round = protocol.round_values(records, "median")
    assert per_round["n0"] == {0: 11.0, 1: 10.5}
    a, b = np.array([11.0, 20.0, 30.0, 40.0]), np.array([10.5, 19.0, 33.0, 40.0])
    expected_mape = 100 * np.mean(np.abs(a - b) / b)
    assert noise["round_to_round"]["mean"]["mape_percent"] == pytest.approx(expected_mape)
    assert noise["round_to_round"]["mean"]["spearman"] == pytest.approx(1.0)
    assert noise["final_noise_percent"] == pytest.approx(math.sqrt(math.pi) / 2 * expected_mape / math.sqrt(2))
    values = [10.0, 12.0, 11.0, 10.0]
    assert noise["anchors"]["n0"]["cv_percent"] == pytest.approx(100 * np.std(values) / np.mean(values))
    assert protocol.item_values(records, "median")["n0"] == pytest.approx(10.75)
    assert "round_to_round" not in protocol.noise_floor(records[:4], "median")
