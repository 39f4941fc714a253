"""Detection training, COCO mAP, the detection cost model and the detection search."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tunas_keras
from detection import cost
from detection.config import DetectionSearchConfig, DetectionTrainConfig
from detection.evaluation import evaluate_detection
from detection.losses import detection_loss
from detection.model import build_detector
from detection.synthetic import ShapesDetectionDataset
from detection.tasks import DetectionSearchTask, DetectionTask, next_step_commands, searched_detector
from tests.conftest import random_indices, small_architecture
from tunas_keras import masks
from tunas_keras.training.trainer import run_task


def test_training_steps_lower_the_loss_and_coco_map_is_positive():
    keras.utils.set_random_seed(0)
    data = ShapesDetectionDataset(image_size=64, num_train_all=18, num_test=2)
    images, labels = next(iter(data.make("train", 16, training=False, repeat=False)))
    detector = build_detector(small_architecture(), data.num_classes, (64, 64, 3))
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = detection_loss(detector(images, training=True), labels, data.num_classes)["loss"]
        optimizer.apply_gradients(
            zip(tape.gradient(loss, detector.trainable_variables), detector.trainable_variables, strict=True)
        )
        return loss

    losses = [float(step()) for _ in range(20)]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    # The same 16 images through COCOEvaluator (batch statistics: 20 steps leave the moving
    # averages far from them).
    metrics = evaluate_detection(lambda x: detector(x, training=True), data, "train", 16, max_batches=1)
    assert metrics["eval_images"] == 16
    assert 0.05 < metrics["AP50"] <= 1.0 and 0.0 < metrics["AP"] <= metrics["AP50"], metrics


def test_detection_task_runs_under_the_trainer_and_reports_map(tmp_path):
    data = ShapesDetectionDataset(image_size=48, num_train_all=20, num_test=4)
    config = DetectionTrainConfig(
        indices=str(small_architecture()),
        space="mobilenet_v3_like",
        image_size=48,
        steps=2,
        batch_size=4,
        model_dir=str(tmp_path / "run"),
        progress_bar=False,
        eval_batch_size=2,
        summary_every=1,
        eval_every=1,
    )
    result = run_task(DetectionTask(config, data), config)
    assert [entry["step"] for entry in result["evaluations"]] == [1]  # eval_every (the last step: finalize)
    assert result["eval_split"] == "valid" and result["eval_images"] == 2 and result["steps"] == 2
    assert -1.0 <= result["AP"] <= 1.0 and set(result) >= {"AP50", "AP75", "APs", "ARmax100", "params"}
    stored = json.load(open(tmp_path / "run" / "detection_result.json"))
    assert stored["AP"] == result["AP"] and stored["task"] == "detection"
    history = json.load(open(tmp_path / "run" / "history.json"))
    assert [entry["step"] for entry in history] == [1, 2]
    for entry in history:  # loss = focal + box + weight_decay / 2 · Σw² (every detector kernel)
        assert entry["loss"] == pytest.approx(entry["detection_loss"] + entry["regularization_loss"], rel=1e-5)
        assert entry["detection_loss"] == pytest.approx(entry["class_loss"] + entry["box_loss"], rel=1e-5)
    assert 0.0 < history[0]["regularization_loss"] < 1.0
    assert (tmp_path / "run" / "model.weights.h5").exists()


def test_detection_cost_model():
    model = cost.DetectionCostModel("mobilenet_v3_like", image_size=320, num_classes=80)
    space = model.space
    indices = [random_indices(space, seed) for seed in range(4)]
    np.testing.assert_allclose(
        model.batch_cost(tf.constant(indices)).numpy(), [model.cost(row) for row in indices], rtol=1e-5
    )
    assert 0.2e-6 < model.ms_per_mac < 0.3e-6  # the Pixel-1 model's ms per MAC
    # C4 = block 4's width × block 5's first expansion; C5 = the first head conv.
    c4, c5 = model.widths["c4"], model.widths["c5"]
    assert c4.factors == (67, 69) and c4.values[3 * 6 + 5] == 128 * 6 and c5.factors == (84,) and c5.values[-1] == 1024
    pixel1 = tunas_keras.get_cost_model("pixel1", space)
    for row in indices:  # T = (S/224)² T_pixel1 + κ MACs_head(C4, C5)
        c4_width, c5_width = model.endpoint_width("c4", row), model.endpoint_width("c5", row)
        head = model.ms_per_mac * cost.head_macs(c4_width, c5_width, 320, 80)
        assert model.cost(row) == pytest.approx(model.pixel_scale * pixel1.cost(row) + head, rel=1e-9)
    # Warmup (fractional) masks: the backbone's mask cost scaled + the head at the mask-weighted widths.
    rng = np.random.default_rng(0)
    fractional = [rng.dirichlet(np.ones(count)).astype(np.float32) for count in space.num_choices]
    fractional = [tf.constant(mask) for mask in fractional]
    padded = masks.pad_masks(space, fractional)
    widths = {name: float(np.dot(width.weights(fractional), width.values)) for name, width in model.widths.items()}
    expected = model.pixel_scale * float(pixel1.mask_cost(padded)) + model.head_cost(widths["c4"], widths["c5"])
    assert float(model.mask_cost(padded)) == pytest.approx(expected, rel=1e-5)
    one_hot = tf.stack([masks.pad_masks(space, masks.one_hot_masks(space, row)) for row in indices])
    np.testing.assert_allclose(model.mask_cost(one_hot), [model.cost(row) for row in indices], rtol=1e-5)
    # MobileNetV3-Large's backbone lands near the paper's 57 ms; + SSDLite at 320 px is the default target.
    assert abs(cost.mobilenet_v3_large_backbone_cost() - 57.0) < 3.0
    target = cost.mobilenet_v3_large_ssdlite_cost(320, 80)
    head = cost._pixel1_ms_per_mac("mobilenet_v3_like") * cost.head_macs(672, 960, 320, 80)
    assert abs(target - (320 / 224) ** 2 * cost.mobilenet_v3_large_backbone_cost() - head) < 1e-9
    assert 140 < target < 180
    nearest = cost.mobilenet_v3_large_nearest()
    widths = [block.filters for block in space.resolve(nearest).blocks]
    assert widths == list(cost.V3_LARGE_WIDTHS)


def _search_config(tmp_path, **overrides):
    values = dict(
        image_size=48,
        steps=24,
        batch_size=8,
        architectures_per_step=2,
        validation_batch_multiplier=1,
        model_dir=str(tmp_path / "search") if tmp_path else "unused",
        progress_bar=False,
        summary_every=2,
        checkpoint_every=24,
    )
    values.update(overrides)
    return DetectionSearchConfig(**values)


def test_detection_search_task_setup():
    data = ShapesDetectionDataset(48, num_train_all=20)
    task = DetectionSearchTask(_search_config(None), data)
    assert task.space.name == "mobilenet_v3_like" and task.quality_name == "valid_quality"
    assert task.target_latency == pytest.approx(cost.mobilenet_v3_large_ssdlite_cost(320, 10))
    assert task.cost_model.name == "pixel1+ssdlite@320" and task.cost_model.num_classes == 10
    assert task.weight_decay == 3e-5  # the reference's search default for mobilenet_v3_like
    assert DetectionSearchTask(_search_config(None, target_latency=120.0), data).target_latency == 120.0
    with pytest.raises(ValueError, match=r"`target_latency`: the default .* in Pixel-1 ms.*cost_model='macs'"):
        DetectionSearchTask(_search_config(None, cost_model="macs"), data)
    # The search's labels are nested dicts: split into K micro-batches / validation groups leaf by leaf.
    _, labels = next(iter(data.make("train", 8, training=False, repeat=False)))
    split = task._split(labels)
    assert split["cls_targets"]["4"].shape == (2, 4) + tuple(labels["cls_targets"]["4"].shape[1:])
    assert split["groundtruths"]["boxes"].shape == (2, 4, 6, 4)
    np.testing.assert_array_equal(task._group(split, 1)["box_weights"], labels["box_weights"][4:])


def test_detection_next_steps_chain_through_their_files():
    config = DetectionSearchConfig(image_size=48, data_dir="/data/tfds", model_dir="runs/d")
    train, export, latency = next_step_commands(config, num_classes=10)
    flags_of = lambda command: dict(part[2:].split("=", 1) for part in command.split()[2:] if "=" in part)  # noqa: E731
    train_flags, export_flags, latency_flags = flags_of(train), flags_of(export), flags_of(latency)
    assert train.startswith("python tools/train.py --task=detection ") and "--zero_init_residual" in train.split()
    assert export.startswith("python tools/export_tflite.py --task=detection ")
    assert train_flags["architecture"] == export_flags["architecture"] == "runs/d/architecture.json"
    for flags in (train_flags, export_flags):
        assert (flags["dataset"], flags["image_size"], flags["data_dir"]) == ("embedded", "48", "/data/tfds")
    assert export_flags["weights"] == train_flags["model_dir"] + "/model.weights.h5"  # the trained weights
    assert latency_flags["model"] == export_flags["output"] == train_flags["model_dir"] + "/ssdlite.tflite"


@pytest.mark.slow
def test_detection_search_runs_end_to_end_and_writes_the_architecture(tmp_path):
    data = ShapesDetectionDataset(image_size=48, num_train_all=40, num_test=4)
    config = _search_config(tmp_path)
    result = run_task(DetectionSearchTask(config, data), config)
    written = json.load(open(tmp_path / "search" / "architecture.json"))
    assert written["indices"] == result["indices"] and written["task"] == "detection"
    assert written["cost_model"] == "pixel1+ssdlite@320" and written["num_classes"] == 10
    architecture = tunas_keras.get_search_space("mobilenet_v3_like").architecture(written["indices"])
    assert build_detector(architecture, 10, (48, 48, 3)).count_params() > 0
    history = json.load(open(tmp_path / "search" / "history.json"))
    assert [entry["step"] for entry in history] == list(range(2, 25, 2))
    # Both step functions ran: op warmup (fractional op masks, one_hot=False) first, then one-hot.
    assert history[0]["warmup_probability"] > 0.0 and history[-1]["warmup_probability"] == 0.0
    for entry in history:
        assert 0.0 < entry["valid_quality"] <= 1.0
        assert entry["loss"] == pytest.approx(entry["detection_loss"] + entry["regularization_loss"], rel=1e-4)
    assert history[-1]["rl_learning_rate"] > 0.0  # the controller learned after the 25 % delay
    # --init_from_supernet: the searched detector with the shared weights, at another resolution.
    child = searched_detector(str(tmp_path / "search"), architecture, (64, 64, 3))
    outputs = child(np.zeros((1, 64, 64, 3), np.float32), training=False)
    assert outputs["scores"]["4"].shape == (1, 4, 4, 33)
