"""Detection data: the embedded shapes, SSD augmentation geometry, the mock-COCO pipeline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from detection.anchors import AnchorConfig
from detection.coco import COCO_CATEGORY_IDS, CocoDataset
from detection.data import random_crop_with_boxes, random_flip_with_boxes, sort_box_corners
from detection.datasets import get_detection_dataset
from detection.synthetic import MAX_OBJECTS, ShapesDetectionDataset, _tight_boxes, generate

SIDES_64 = {"4": 4, "5": 2, "6": 1, "7": 1, "8": 1, "9": 1}


def test_embedded_shapes_are_deterministic_with_tight_boxes():
    images, boxes, classes = generate(64, 48, seed=0, stream=2)
    again = generate.__wrapped__(64, 48, seed=0, stream=2)
    for first, second in zip((images, boxes, classes), again, strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(generate.__wrapped__(64, 48, seed=0, stream=3)[0], images)
    counts = (classes >= 0).sum(axis=1)
    assert counts.min() >= 1 and counts.max() <= MAX_OBJECTS and len(set(counts.tolist())) > 2
    present = classes >= 0
    assert np.all(np.sort(~present, axis=1, kind="stable") == ~present)  # objects first
    assert set(classes[present].tolist()) <= set(range(10))
    valid = boxes[present]
    assert np.all(valid[:, 2:] > valid[:, :2]) and np.all((valid >= 0) & (valid <= 1))
    alpha = np.zeros((1, 10, 10), np.float32)
    alpha[0, 2:5, 3:9] = 1.0
    alpha[0, 5, 3] = 0.4  # below half coverage: outside
    tight, found = _tight_boxes(alpha)
    np.testing.assert_allclose(tight[0], [0.2, 0.3, 0.5, 0.9])
    assert found[0]


def _square_image(box, size=80):
    image = np.zeros((size, size, 3), np.uint8)
    y0, x0, y1, x1 = (np.asarray(box) * size).astype(int)
    image[y0:y1, x0:x1] = 255
    return tf.constant(image)


def _white_box(image):
    inside = np.asarray(image)[..., 0] > 127
    rows, columns = np.where(inside.any(axis=1))[0], np.where(inside.any(axis=0))[0]
    height, width = inside.shape
    return np.array([rows[0] / height, columns[0] / width, (rows[-1] + 1) / height, (columns[-1] + 1) / width])


def test_ssd_crop_and_flip_move_boxes_with_the_pixels():
    box = np.array([[0.3, 0.2, 0.7, 0.55]], np.float32)
    image = _square_image(box[0])
    kept = 0
    for seed in range(12):
        cropped, boxes, classes = random_crop_with_boxes(
            image, tf.constant(box), tf.constant([4]), tf.constant([seed, 1])
        )
        if boxes.shape[0] == 0:
            continue
        kept += 1
        assert classes.numpy().tolist() == [4]
        tolerance = 1.5 / min(cropped.shape[:2])
        np.testing.assert_allclose(boxes.numpy()[0], _white_box(cropped), atol=tolerance)
        flipped, flipped_boxes = random_flip_with_boxes(cropped, boxes, tf.constant([seed, 2]))
        np.testing.assert_allclose(flipped_boxes.numpy()[0], _white_box(flipped), atol=tolerance)
    assert kept >= 6  # most SSD crops keep a box that covers a fifth of the image


def test_embedded_pipeline_shapes_and_targets():
    data = ShapesDetectionDataset(image_size=64, num_train_all=20, num_test=4)
    assert (data.num_examples("train"), data.num_examples("valid"), data.num_examples("test")) == (18, 2, 4)
    images, labels = next(iter(data.make("train", 4, training=True, seed=3)))
    assert images.shape == (4, 64, 64, 3) and images.dtype == tf.float32
    counts = AnchorConfig().anchors_per_location()
    assert {level: tuple(value.shape) for level, value in labels["cls_targets"].items()} == {
        level: (4, side, side, counts[level]) for level, side in SIDES_64.items()
    }
    assert labels["box_targets"]["4"].shape == (4, 4, 4, 12)
    assert labels["cls_weights"].shape == labels["box_weights"].shape == (4, 96)
    positives = labels["cls_targets"]["4"].numpy()
    assert set(np.unique(positives)) <= set(range(-1, 11))
    truth = labels["groundtruths"]
    assert truth["boxes"].shape == (4, MAX_OBJECTS, 4) and truth["height"].numpy().tolist() == [64] * 4
    evaluation = next(iter(data.make("test", 4, training=False, repeat=False)))[1]["groundtruths"]
    _, boxes, classes = generate(4, 64, 0, 3)
    count = int(evaluation["num_detections"][0])
    np.testing.assert_allclose(evaluation["boxes"][0, :count], boxes[0, :count] * 64, atol=1e-4)
    assert evaluation["classes"].numpy()[0, :count].tolist() == (classes[0, :count] + 1).tolist()
    with pytest.raises(ValueError, match=r"`dataset`. Expected 'embedded' or a TFDS COCO name"):
        get_detection_dataset("cifar10")


def _encoded(height, width, value):
    return tf.io.encode_jpeg(tf.fill([height, width, 3], tf.constant(value, tf.uint8))).numpy()


# TFDS' random mock data gives the Sequence fields of one example different lengths, so the
# COCO examples are built here (with unordered corners, as TFDS mocks have, and a crowd box).
COCO_FIXTURE = [
    {"image": _encoded(60, 90, 100), "image/id": 11, "bbox": [[0.5, 0.25, 0.1, 0.75], [0.2, 0.1, 0.6, 0.3]],
     "label": [0, 79], "is_crowd": [False, True]},
    {"image": _encoded(40, 40, 50), "image/id": 12, "bbox": [[0.0, 0.0, 1.0, 1.0]], "label": [11], "is_crowd": [False]},
    {"image": _encoded(30, 50, 200), "image/id": 13, "bbox": [[0.9, 0.8, 0.3, 0.2], [0.1, 0.1, 0.4, 0.4],
     [0.5, 0.5, 0.6, 0.6]], "label": [2, 3, 4], "is_crowd": [False, False, False]},
]  # fmt: skip


def _coco_fixture(*args, **kwargs):
    del args, kwargs

    def examples():
        for example in COCO_FIXTURE:
            count = len(example["label"])
            yield {
                "image": example["image"],
                "image/filename": b"fixture.jpg",
                "image/id": np.int64(example["image/id"]),
                "objects": {
                    "area": np.ones(count, np.int64),
                    "bbox": np.asarray(example["bbox"], np.float32),
                    "id": np.arange(count, dtype=np.int64),
                    "is_crowd": np.asarray(example["is_crowd"]),
                    "label": np.asarray(example["label"], np.int64),
                },
            }

    objects = {
        "area": tf.TensorSpec([None], tf.int64),
        "bbox": tf.TensorSpec([None, 4], tf.float32),
        "id": tf.TensorSpec([None], tf.int64),
        "is_crowd": tf.TensorSpec([None], tf.bool),
        "label": tf.TensorSpec([None], tf.int64),
    }
    signature = {
        "image": tf.TensorSpec([], tf.string),
        "image/filename": tf.TensorSpec([], tf.string),
        "image/id": tf.TensorSpec([], tf.int64),
        "objects": objects,
    }
    return tf.data.Dataset.from_generator(examples, output_signature=signature)


def test_mock_coco_pipeline_shapes():
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert COCO_CATEGORY_IDS[-1] == 90
    with tfds.testing.mock_data(as_dataset_fn=_coco_fixture):
        data = CocoDataset("coco/2017", image_size=64, split_sizes={"train": 3, "validation": 3})
        assert data.splits() == {
            "train": ("train[1:]", 2),
            "valid": ("train[:1]", 1),
            "train_all": ("train", 3),
            "test": ("validation", 3),
        }
        images, labels = next(iter(data.make("test", 3, training=False, repeat=False)))
        train_images, train_labels = next(iter(data.make("train", 3, training=True)))
    assert images.shape == train_images.shape == (3, 64, 64, 3)
    assert {level: value.shape[1:3] for level, value in labels["cls_targets"].items()} == {
        level: (side, side) for level, side in SIDES_64.items()
    }
    truth = {key: value.numpy() for key, value in labels["groundtruths"].items()}
    assert truth["boxes"].shape == (3, 100, 4)
    assert truth["source_id"].tolist() == [11, 12, 13] and truth["num_detections"].tolist() == [2, 1, 3]
    assert (truth["height"].tolist(), truth["width"].tolist()) == ([60, 40, 30], [90, 40, 50])
    np.testing.assert_allclose(truth["boxes"][0, :2], [[6.0, 22.5, 30.0, 67.5], [12.0, 9.0, 36.0, 27.0]], atol=1e-4)
    assert truth["classes"][0, :2].tolist() == [1, 90] and truth["classes"][1, 0] == 13
    assert truth["is_crowds"][0, :2].tolist() == [0, 1]
    assert np.all(truth["boxes"][2, :3, 2:] >= truth["boxes"][2, :3, :2])
    np.testing.assert_allclose(sort_box_corners(tf.constant([[0.9, 0.8, 0.3, 1.2]])).numpy(), [[0.3, 0.8, 0.9, 1.0]])
    # Training never targets the crowd box: every positive anchor of image 11 is class 1 (label 0).
    row = train_labels["groundtruths"]["source_id"].numpy().tolist().index(11)
    positives = np.concatenate([value.numpy()[row].ravel() for value in train_labels["cls_targets"].values()])
    assert set(positives[positives >= 0].tolist()) <= {1}


def test_unprepared_coco_is_a_clear_error(tmp_path):
    data = get_detection_dataset("coco/2017", image_size=64, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"not prepared.*tfds build coco/2017"):
        data.num_examples("train")
