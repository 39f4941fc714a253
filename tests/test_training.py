"""Standalone training (tools/train.py's library): loss goes down, evaluation, errors."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tunas_keras.export.sources import resolve_architecture
from tunas_keras.training.config import TrainConfig
from tunas_keras.training.standalone_task import StandaloneTask, default_dropout_rate
from tunas_keras.training.train import run_training


def _config(tmp_path, **overrides):
    # Adam: the reference RMSProp recipe (tuned for long large-batch runs) barely moves in 60 steps.
    values = dict(
        reference="mobilenet_v2",
        steps=60,
        batch_size=32,
        image_size=32,
        model_dir=str(tmp_path / "run"),
        progress_bar=False,
        eval_batches=4,
        summary_every=1,
        checkpoint_every=30,
        optimizer="adam",
        learning_rate=0.1,
        learning_rate_warmup_fraction=0.1,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_training_lowers_the_loss_and_evaluates(tmp_path):
    result = run_training(_config(tmp_path))
    history = json.load(open(tmp_path / "run" / "history.json"))
    first = np.mean([entry["cross_entropy"] for entry in history[:10]])
    last = np.mean([entry["cross_entropy"] for entry in history[-10:]])
    assert last < first - 0.05, (first, last)
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    assert result["eval_examples"] == 4 * 32
    assert result["eval_split"] == "valid" and result["protocol"] == "valid"
    assert (tmp_path / "run" / "model.weights.h5").exists()
    stored = json.load(open(tmp_path / "run" / "train_result.json"))
    assert stored["top1"] == result["top1"]


def test_protocol_test_uses_all_training_data_and_test_split(tmp_path):
    result = run_training(
        _config(tmp_path, steps=2, protocol="test", reference="mnasnet_b1", weight_ema=0.9, optimizer="rmsprop")
    )
    assert result["eval_split"] == "test"


def test_standalone_regularisation_is_half_weight_decay_over_non_classifier_kernels(tmp_path):
    task = StandaloneTask(_config(tmp_path, weight_decay=0.03, batch_size=8))
    strategy = tf.distribute.get_strategy()
    task.build(strategy)
    squares = 0.0
    for layer in task.model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            squares += float(np.sum(layer.depthwise_kernel.numpy().astype(np.float64) ** 2))
        elif isinstance(layer, keras.layers.Conv2D):
            squares += float(np.sum(layer.kernel.numpy().astype(np.float64) ** 2))
    assert isinstance(task.model.get_layer("classifier"), keras.layers.Dense)  # excluded
    step = tf.Variable(0, dtype=tf.int64)
    inputs = next(iter(task.dataset_fn(0)(tf.distribute.InputContext())))
    result = tf.function(lambda inputs: strategy.run(task.replica_step, args=(inputs, step)))(inputs)
    assert float(result["regularization_loss"]) == pytest.approx(0.03 / 2 * squares, rel=1e-5)
    assert float(result["loss"]) == pytest.approx(
        float(result["cross_entropy"] + result["regularization_loss"]), rel=1e-6
    )


def test_dropout_defaults():
    assert default_dropout_rate(90, "mobilenet_v2") == 0.0
    assert default_dropout_rate(360, "mobilenet_v2") == 0.15
    assert default_dropout_rate(360, "mobilenet_v3_large") == 0.25


def test_architecture_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"exactly one of `architecture`.*indices='0', reference='mobilenet_v2'"):
        run_training(TrainConfig(indices="0", reference="mobilenet_v2"))
    with pytest.raises(FileNotFoundError, match=r"`architecture`.*Received: architecture='.*missing.json'"):
        resolve_architecture(str(tmp_path / "missing.json"))
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"format_version": 99, "space": "proxyless", "indices": [0]}))
    with pytest.raises(ValueError, match=r"`architecture`.*format_version.*Received: format_version=99"):
        run_training(TrainConfig(architecture=str(bad)))
    with pytest.raises(ValueError, match=r"`protocol`. Expected one of \['test', 'valid'\]. Received: 'final'"):
        run_training(_config(tmp_path, protocol="final"))
