"""Tests of tunas_keras.datasets: embedded, TFDS (mocked, offline) and image-folder sources."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tunas_keras import datasets
from tunas_keras.datasets import embedded, preprocessing, tfds_source

SIZE = 32
MEAN = np.array(preprocessing.MEAN_RGB, np.float32)
STD = np.array(preprocessing.STDDEV_RGB, np.float32)
# Normalised values of pixels 0 and 255, per channel.
LOW, HIGH = -MEAN / STD, (1.0 - MEAN) / STD


def first_batch(data, split="train", batch_size=8, training=True, seed=0, **kwargs):
    images, labels = next(iter(data.make(split, batch_size, training, seed=seed, **kwargs)))
    return images.numpy(), labels.numpy()


def check_batch(images, labels, batch_size, num_classes, size=SIZE):
    assert images.shape == (batch_size, size, size, 3) and images.dtype == np.float32
    assert labels.shape == (batch_size,) and labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < num_classes
    assert np.all(images >= LOW - 1e-4) and np.all(images <= HIGH + 1e-4)


@pytest.fixture(scope="module")
def small_embedded():
    return datasets.EmbeddedDataset(image_size=SIZE, num_train_all=600, num_test=200)


# --- preprocessing ---------------------------------------------------------------------------


def test_normalize_uses_imagenet_statistics():
    pixels = tf.constant([[[0, 128, 255]]], tf.uint8)
    expected = (np.array([0, 128, 255]) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(preprocessing.normalize(pixels).numpy()[0, 0], expected, rtol=1e-6)


def test_eval_center_crop_keeps_central_fraction():
    # A 64 px image whose outer border (8 px, outside the central 0.875) is white and centre black.
    image = np.full((64, 64, 3), 255, np.uint8)
    image[4:60, 4:60] = 0
    output = preprocessing.preprocess_image(tf.constant(image), 56, training=False).numpy()
    np.testing.assert_allclose(output, np.broadcast_to(LOW, output.shape), atol=1e-5)  # all black
    output = preprocessing.preprocess_image(tf.constant(image), 32, training=False)
    assert output.shape == (32, 32, 3)


def test_train_preprocessing_is_stateless_and_seeded():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (48, 40, 3)), tf.uint8)
    first = preprocessing.preprocess_image(image, SIZE, training=True, seed=tf.constant([1, 2], tf.int64))
    again = preprocessing.preprocess_image(image, SIZE, training=True, seed=tf.constant([1, 2], tf.int64))
    other = preprocessing.preprocess_image(image, SIZE, training=True, seed=tf.constant([1, 3], tf.int64))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())
    with pytest.raises(ValueError, match="argument `seed`"):
        preprocessing.preprocess_image(image, SIZE, training=True)


# --- embedded --------------------------------------------------------------------------------


def test_embedded_default_sizes():
    data = datasets.get_dataset("embedded", image_size=SIZE, held_out_fraction=0.2)
    assert (data.name, data.num_classes, data.image_size) == ("embedded", 10, SIZE)
    sizes = {split: data.num_examples(split) for split in datasets.SPLITS}
    assert sizes == {"train": 8000, "valid": 2000, "train_all": 10_000, "test": 2000}


def test_embedded_generation_is_fast_balanced_and_prefix_stable():
    images, labels = embedded.generate(1500, SIZE, seed=0, stream=0)
    assert images.shape == (1500, SIZE, SIZE, 3) and images.dtype == np.uint8
    counts = np.bincount(labels, minlength=10)
    assert counts.min() > 100, counts  # every class is present, roughly balanced
    assert images.std() > 40  # real pictures, not constants
    prefix, prefix_labels = embedded.generate(700, SIZE, seed=0, stream=0)
    np.testing.assert_array_equal(prefix, images[:700])
    np.testing.assert_array_equal(prefix_labels, labels[:700])
    other, _ = embedded.generate(700, SIZE, seed=1, stream=0)
    assert not np.array_equal(other, prefix)


def test_embedded_pipeline_shapes_and_normalisation(small_embedded):
    for split, training in (("train", True), ("valid", False), ("test", False), ("train_all", True)):
        images, labels = first_batch(small_embedded, split, batch_size=16, training=training)
        check_batch(images, labels, 16, 10)
    images, _ = first_batch(small_embedded, "test", batch_size=64, training=False)
    # ImageNet normalisation of [0, 1] pixels: the per-channel means are those of the raw pixels.
    raw, _ = small_embedded.arrays("test")
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), ((raw[:64] / 255.0).mean((0, 1, 2)) - MEAN) / STD, atol=0.1)


def test_embedded_splits_partition_and_test_is_disjoint(small_embedded):
    train, _ = small_embedded.arrays("train")
    valid, _ = small_embedded.arrays("valid")
    train_all, _ = small_embedded.arrays("train_all")
    test, _ = small_embedded.arrays("test")
    assert (len(train), len(valid), len(train_all), len(test)) == (540, 60, 600, 200)
    np.testing.assert_array_equal(np.concatenate([valid, train]), train_all)
    training_images = {image.tobytes() for image in train_all}
    assert not any(image.tobytes() in training_images for image in test)


def test_embedded_pipeline_is_deterministic(small_embedded):
    first, first_labels = first_batch(small_embedded, seed=3)
    again, again_labels = first_batch(small_embedded, seed=3)
    other, other_labels = first_batch(small_embedded, seed=4)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_labels, again_labels)
    assert not np.array_equal(first, other)
    evaluation, _ = first_batch(small_embedded, "valid", training=False, seed=3)
    evaluation_again, _ = first_batch(small_embedded, "valid", training=False, seed=4)
    np.testing.assert_array_equal(evaluation, evaluation_again)  # no shuffling, no augmentation


def test_embedded_one_pass_and_repeat(small_embedded):
    batches = list(small_embedded.make("valid", 25, training=False, repeat=False))
    assert [int(labels.shape[0]) for _, labels in batches] == [25, 25, 10]
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in batches]), small_embedded.arrays("valid")[1])
    repeated = small_embedded.make("valid", 25, training=True)
    assert repeated.element_spec[0].shape.as_list() == [25, SIZE, SIZE, 3]  # static batch for tf.function
    assert len(list(repeated.take(5))) == 5  # more batches than one pass holds


def test_input_context_shards_and_splits_the_batch(small_embedded):
    labels = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        batches = list(small_embedded.make("valid", 20, training=False, repeat=False, input_context=context))
        assert int(batches[0][1].shape[0]) == 10  # per-replica batch
        labels.append(np.concatenate([batch_labels for _, batch_labels in batches]))
    all_labels = small_embedded.arrays("valid")[1]
    np.testing.assert_array_equal(labels[0], all_labels[0::2])
    np.testing.assert_array_equal(labels[1], all_labels[1::2])


# --- TFDS (mocked: nothing is downloaded) -----------------------------------------------------

SPLIT_PATTERN = re.compile(r"^(\w+)(?:\[(\d*):(\d*)\])?$")


def mock_tfds(monkeypatch, split_sizes: dict[str, int]):
    """Mocks TFDS with split metadata and examples whose label and pixels encode their index."""
    split_dict = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=name, shard_lengths=[size], num_bytes=0) for name, size in split_sizes.items()]
    )
    monkeypatch.setattr(tfds.core.DatasetInfo, "splits", property(lambda self: split_dict))
    requested = []

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        requested.append(split)
        name, begin, end = SPLIT_PATTERN.match(split).groups()
        indices = np.arange(split_sizes[name])[int(begin or 0) : int(end) if end else None][:300]
        num_classes = self.info.features["label"].num_classes
        shape = (48, 40, 3)

        def encode(index):
            image = tf.fill(shape, tf.cast(index % 256, tf.uint8))
            return {"image": tf.io.encode_png(image), "label": tf.cast(index % num_classes, tf.int64)}

        return tf.data.Dataset.from_tensor_slices(indices).map(encode)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset), requested


def decode_indices(images):
    """Recovers the constant pixel value (= index % 256) of eval-preprocessed constant images."""
    pixels = (images[:, 0, 0, :] * STD + MEAN) * 255.0
    return np.round(pixels[:, 0]).astype(int)


def test_held_out_split_strings():
    splits = tfds_source.held_out_splits("train", 1281167, 50046)
    assert splits == {
        "train": ("train[50046:]", 1231121),
        "valid": ("train[:50046]", 50046),
        "train_all": ("train", 1281167),
    }


def test_tfds_cifar10_partition(monkeypatch):
    context, requested = mock_tfds(monkeypatch, {"train": 200, "test": 50})
    with context:
        data = datasets.get_dataset("cifar10", image_size=SIZE, held_out_fraction=0.25)
        assert data.num_classes == 10
        assert {split: data.num_examples(split) for split in datasets.SPLITS} == {
            "train": 150,
            "valid": 50,
            "train_all": 200,
            "test": 50,
        }
        seen = {}
        for split in ("train", "valid"):
            batches = list(data.make(split, 32, training=False, repeat=False))
            images = np.concatenate([batch_images for batch_images, _ in batches])
            labels = np.concatenate([batch_labels for _, batch_labels in batches])
            seen[split] = decode_indices(images)
            np.testing.assert_array_equal(labels, seen[split] % 10)
        check_batch(*first_batch(data, "train", batch_size=8, training=True), 8, 10)
        check_batch(*first_batch(data, "test", batch_size=8, training=False), 8, 10)
    np.testing.assert_array_equal(seen["valid"], np.arange(50))
    np.testing.assert_array_equal(seen["train"], np.arange(50, 200) % 256)
    assert {"train[50:]", "train[:50]", "test"} <= set(requested)


def test_tfds_imagenet_uses_reference_held_out_split(monkeypatch):
    context, requested = mock_tfds(monkeypatch, {"train": 50046 + 300, "validation": 100})
    with context:
        data = datasets.get_dataset("imagenet2012", image_size=SIZE, held_out_fraction=0.5)
        assert data.num_classes == 1001  # the reference's classifier size (labels stay in [0, 1000))
        assert data.num_examples("valid") == 50046 and data.num_examples("train") == 300
        assert data.num_examples("test") == 100
        images, labels = first_batch(data, "valid", batch_size=16, training=False)
        check_batch(images, labels, 16, 1001)
        np.testing.assert_array_equal(decode_indices(images), np.arange(16))
        images, labels = first_batch(data, "train", batch_size=16, training=False)
        np.testing.assert_array_equal(labels, np.arange(50046, 50062) % 1000)
        check_batch(*first_batch(data, "train", batch_size=4, training=True, seed=1), 4, 1001)
    assert requested[:3] == ["train[:50046]", "train[50046:]", "train[50046:]"]


def test_tfds_stock_mock_data_pipeline(monkeypatch):
    # The stock TFDS mock (random encoded images), with split metadata patched in.
    split_dict = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=name, shard_lengths=[12], num_bytes=0) for name in ("train", "test")]
    )
    monkeypatch.setattr(tfds.core.DatasetInfo, "splits", property(lambda self: split_dict))
    with tfds.testing.mock_data(num_examples=12):
        data = datasets.get_dataset("cifar10", image_size=24)
        check_batch(*first_batch(data, "train", batch_size=4, training=True), 4, 10, size=24)
        check_batch(*first_batch(data, "test", batch_size=4, training=False), 4, 10, size=24)


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
    data = datasets.get_dataset("cifar10", image_size=SIZE, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not prepared"):
        data.num_examples("train")


# --- image folder ----------------------------------------------------------------------------


def write_folder(root, counts, layout=""):
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        directory = root / layout / name
        directory.mkdir(parents=True)
        for index in range(count):
            image = rng.integers(0, 256, (20 + index % 3, 24, 3), dtype=np.uint8)
            extension, encode = (".png", tf.io.encode_png) if index % 2 else (".jpg", tf.io.encode_jpeg)
            tf.io.write_file(str(directory / f"{index}{extension}"), encode(image))


def test_folder_source(tmp_path):
    write_folder(tmp_path, {"cat": 10, "dog": 20, "emu": 6})
    (tmp_path / "notes.txt").write_text("ignored")
    data = datasets.get_dataset(f"folder:{tmp_path}", image_size=SIZE, held_out_fraction=0.5)
    assert data.num_classes == 3 and data.class_names == ("cat", "dog", "emu")
    assert {split: data.num_examples(split) for split in ("train", "valid", "train_all")} == {
        "train": 18,
        "valid": 18,
        "train_all": 36,
    }
    train, valid = set(data.files("train")), set(data.files("valid"))
    assert not train & valid and train | valid == set(data.files("train_all"))
    assert sorted(label for _, label in data.files("valid")) == [0] * 5 + [1] * 10 + [2] * 3  # stratified
    again = datasets.get_dataset(f"folder:{tmp_path}", image_size=SIZE, held_out_fraction=0.5)
    assert again.files("valid") == data.files("valid")  # deterministic
    other = datasets.get_dataset(f"folder:{tmp_path}", image_size=SIZE, held_out_fraction=0.5, seed=1)
    assert other.files("valid") != data.files("valid")
    check_batch(*first_batch(data, "train", batch_size=6), 6, 3)
    check_batch(*first_batch(data, "valid", batch_size=6, training=False), 6, 3)
    np.testing.assert_array_equal(first_batch(data, seed=5)[0], first_batch(data, seed=5)[0])
    with pytest.raises(ValueError, match="no test images"):
        data.num_examples("test")


def test_folder_with_train_and_test_layout(tmp_path):
    write_folder(tmp_path, {"a": 4, "b": 4}, layout="train")
    write_folder(tmp_path, {"a": 2, "b": 3}, layout="validation")
    data = datasets.get_dataset(f"folder:{tmp_path}", image_size=SIZE)
    assert data.num_examples("train_all") == 8 and data.num_examples("test") == 5
    check_batch(*first_batch(data, "test", batch_size=5, training=False), 5, 2)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "no_such_dataset_xyz"}, r"argument `name`.*Received: name='no_such_dataset_xyz'"),
        ({"name": "folder:/no/such/dir"}, r"argument `name`.*existing directory.*folder:/no/such/dir"),
        ({"name": "embedded", "image_size": 0}, r"argument `image_size`. Expected a positive int.*image_size=0"),
        ({"name": "embedded", "held_out_fraction": 1.0}, r"argument `held_out_fraction`.*\(0, 1\).*=1.0"),
        ({"name": "embedded", "held_out_fraction": 0}, r"argument `held_out_fraction`.*Received: held_out_fraction=0"),
        ({"name": ""}, r"argument `name`"),
    ],
)
def test_get_dataset_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.get_dataset(**kwargs)


def test_folder_with_one_class_is_an_error(tmp_path):
    write_folder(tmp_path, {"only": 3})
    with pytest.raises(ValueError, match=r"at least 2 class.*Received: name='folder:.*' with 1 class"):
        datasets.get_dataset(f"folder:{tmp_path}")


def test_non_image_tfds_dataset_is_an_error():
    with pytest.raises(ValueError, match=r"Expected an image-classification dataset.*imdb_reviews"):
        datasets.get_dataset("imdb_reviews")


def test_make_errors(small_embedded):
    with pytest.raises(ValueError, match=r"argument `split`. Expected one of .*Received: split='validation'"):
        small_embedded.make("validation", 8, training=False)
    with pytest.raises(ValueError, match=r"argument `split`"):
        small_embedded.num_examples("dev")
    with pytest.raises(ValueError, match=r"argument `batch_size`. Expected a positive int. Received: batch_size=0"):
        small_embedded.make("train", 0, training=True)
