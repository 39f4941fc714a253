"""The dataset interface shared by every image source, and the common tf.data pipeline.

A source (embedded, TFDS, image folder) only says which examples a split holds and how an
example's image is decoded; `ImageDataset.make` turns that into the batched, shuffled, augmented
and normalised stream that training and the RL controller consume.

Splits (the TuNAS protocol, design §6):
    "train":     what the shared weights train on (ImageNet `train[50046:]`).
    "valid":     the held-out part of the training split (ImageNet `train[:50046]`), used for the
                 RL reward and `--protocol=valid` evaluation.
    "train_all": the whole training split (`--protocol=test` training).
    "test":      the dataset's test / validation split (ImageNet "validation").
"""

from __future__ import annotations

import abc
import numbers
from typing import Sequence

import tensorflow as tf

from tunas_keras.datasets import preprocessing

SPLITS = ("train", "valid", "train_all", "test")
DEFAULT_HELD_OUT_FRACTION = 0.1


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Invalid value for argument `split`. Expected one of {SPLITS}. Received: split={split!r}")
    return split


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Invalid value for argument `{name}`. Expected a positive int. Received: {name}={value!r}")
    return value


def check_held_out_fraction(held_out_fraction) -> float:
    if isinstance(held_out_fraction, bool) or not isinstance(held_out_fraction, (int, float)):
        valid = False
    else:
        valid = 0.0 < held_out_fraction < 1.0
    if not valid:
        raise ValueError(
            "Invalid value for argument `held_out_fraction`. Expected a float in (0, 1). "
            f"Received: held_out_fraction={held_out_fraction!r}"
        )
    return float(held_out_fraction)


def held_out_count(num_examples: int, held_out_fraction: float) -> int:
    """Number of held-out ("valid") examples: the rounded fraction, at least 1 and leaving 1 to train."""
    count = int(round(num_examples * held_out_fraction))
    return min(max(count, 1), max(num_examples - 1, 1))


class ImageDataset(abc.ABC):
    """An image-classification dataset with the four TuNAS splits.

    Subclasses implement `num_examples`, `_examples` (unbatched `(image, label)` pairs of a split
    in a fixed order) and, when the images are encoded, `_decode`.

    Attributes:
      name: the dataset's name as given to `get_dataset`.
      num_classes: number of classifier outputs a model needs.
      image_size: height and width of the images `make` yields.
    """

    # Crop area range of the training augmentation; sources may narrow it (see `EmbeddedDataset`).
    train_area_range: Sequence[float] = preprocessing.TRAIN_AREA_RANGE
    # Examples held in the shuffle buffer (None: the whole split, for in-memory sources).
    shuffle_buffer_size: int | None = None

    def __init__(self, name: str, num_classes: int, image_size: int):
        self.name = name
        self.num_classes = num_classes
        self.image_size = check_positive_int(image_size, "image_size")

    def __repr__(self) -> str:
        fields = f"name={self.name!r}, num_classes={self.num_classes}, image_size={self.image_size}"
        return f"{type(self).__name__}({fields})"

    @abc.abstractmethod
    def num_examples(self, split: str) -> int:
        """Number of examples in `split` (one of `SPLITS`)."""

    @abc.abstractmethod
    def _examples(self, split: str, shuffle_files: bool, seed: int) -> tf.data.Dataset:
        """Unbatched `(image, label)` pairs of `split`; `image` is whatever `_decode` accepts."""

    def _decode(self, image: tf.Tensor) -> tf.Tensor:
        """Decodes one stored image into a `uint8` `[height, width, 3]` tensor."""
        return image

    def make(
        self,
        split: str,
        batch_size: int,
        training: bool,
        seed: int = 0,
        repeat: bool = True,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """Builds the input pipeline of one split.

        Args:
          split: "train", "valid", "train_all" or "test".
          batch_size: global batch size (divided by the number of replicas under `input_context`).
          training: shuffle and augment (random crop + flip) when True; centre crop when False.
          seed: seed of the shuffling and of the augmentation; the pipeline is deterministic given it.
          repeat: loop forever (dropping the last partial batch, so batches have a static shape);
            when False one pass is made and the last batch may be smaller.
          input_context: a `tf.distribute.InputContext` (from
            `strategy.distribute_datasets_from_function`): the split is sharded by input pipeline
            and batched with the per-replica batch size.

        Returns:
          A `tf.data.Dataset` of `(images, labels)`: `float32 [batch, image_size, image_size, 3]`
          normalised with the ImageNet mean / std, and `int32 [batch]`.
        """
        check_split(split)
        check_positive_int(batch_size, "batch_size")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"Invalid value for argument `seed`. Expected an int. Received: seed={seed!r}")
        pipeline_id = 0
        seed = int(seed)
        dataset = self._examples(split, shuffle_files=training, seed=seed)
        if input_context is not None:
            pipeline_id = input_context.input_pipeline_id
            dataset = dataset.shard(input_context.num_input_pipelines, pipeline_id)
            batch_size = input_context.get_per_replica_batch_size(batch_size)
        if training:
            buffer_size = self.shuffle_buffer_size or self.num_examples(split)
            dataset = dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.enumerate().map(
            self._preprocess_fn(training, seed, pipeline_id), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        dataset = dataset.batch(batch_size, drop_remainder=repeat)
        options = tf.data.Options()
        options.deterministic = True
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def _preprocess_fn(self, training: bool, seed: int, pipeline_id: int):
        # One stateless seed per (seed, input pipeline, position in the stream): the augmentation
        # does not depend on thread scheduling, so the pipeline is reproducible.
        base_seed = tf.constant([seed, pipeline_id], tf.int64)

        def preprocess(index, example):
            image, label = example
            image = self._decode(image)
            element_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
            image = preprocessing.preprocess_image(
                image, self.image_size, training, seed=element_seed, area_range=self.train_area_range
            )
            return image, tf.cast(label, tf.int32)

        return preprocess
