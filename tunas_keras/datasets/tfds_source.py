"""TensorFlow Datasets image-classification sources (ImageNet, CIFAR-10, any TFDS name).

Nothing is downloaded unless asked (`download=True`): the data must already be prepared in
`data_dir` (e.g. `tfds build cifar10`; ImageNet needs its manual download, see the TFDS catalog).

References:
    TuNAS reference `fast_imagenet_input.py`: weights train on `train[50046:]`, the RL controller
    and `--protocol=valid` evaluation use `train[:50046]`, `--protocol=test` evaluates on
    "validation"; the classifier has 1001 outputs while the TFDS labels stay in [0, 1000).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from tunas_keras.datasets import base

IMAGENET_HELD_OUT_EXAMPLES = 50046  # (ref) held-out training examples of imagenet2012
# Per dataset: the training split, the evaluation split, a fixed held-out count (None: use
# `held_out_fraction`) and the number of classifier outputs (None: the label feature's classes).
_DATASET_OVERRIDES = {
    "imagenet2012": {"held_out_examples": IMAGENET_HELD_OUT_EXAMPLES, "num_classes": 1001},
}
_TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")
SHUFFLE_BUFFER_SIZE = 10_000


def _builder(name: str, data_dir: str | None):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except (ValueError, AssertionError) as error:  # DatasetNotFoundError is a ValueError.
        raise ValueError(
            "Invalid value for argument `name`. Expected 'embedded', 'folder:/path/to/root' or a TFDS "
            f"image-classification dataset name (e.g. 'cifar10', 'imagenet2012'). Received: name={name!r}"
        ) from error


def held_out_splits(train_split: str, num_train: int, held_out: int) -> dict[str, tuple[str, int]]:
    """TFDS split strings and sizes of "train" / "valid" / "train_all" (held out = the first examples).

    Args:
      train_split: the TFDS training split name ("train").
      num_train: number of examples in `train_split`.
      held_out: number of held-out examples.

    Returns:
      Split -> (TFDS split string, number of examples), e.g. for ImageNet
      `{"train": ("train[50046:]", 1231121), "valid": ("train[:50046]", 50046), "train_all": ("train", 1281167)}`.
    """
    if not 0 < held_out < num_train:
        raise ValueError(
            f"Invalid held-out size: expected 0 < held_out < {num_train} (the {train_split!r} split's size). "
            f"Received: held_out={held_out}"
        )
    return {
        "train": (f"{train_split}[{held_out}:]", num_train - held_out),
        "valid": (f"{train_split}[:{held_out}]", held_out),
        "train_all": (train_split, num_train),
    }


def prepared_split_sizes(builder, name: str, download: bool) -> dict[str, int]:
    """Split name -> examples of a prepared TFDS dataset; prepares it first only if `download`."""
    splits = builder.info.splits
    if "train" not in splits:
        if not download:
            raise ValueError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}: run "
                f"`tfds build {name}` (or pass download=True) first."
            )
        builder.download_and_prepare()
        splits = builder.info.splits
    return {split: splits[split].num_examples for split in splits}


class TFDSDataset(base.ImageDataset):
    """A TFDS image-classification dataset with the TuNAS splits.

    Args:
      name: TFDS name, optionally with a config / version ("imagenet2012", "cifar10:3.0.2").
      image_size: output height and width.
      held_out_fraction: fraction of the training split held out as "valid" (ImageNet uses the
        reference's fixed 50,046 examples).
      data_dir: TFDS data directory (None: the TFDS default).
      download: run `download_and_prepare` on first use instead of failing when data is missing.
    """

    shuffle_buffer_size = SHUFFLE_BUFFER_SIZE

    def __init__(
        self,
        name: str,
        image_size: int = 224,
        held_out_fraction: float = base.DEFAULT_HELD_OUT_FRACTION,
        data_dir: str | None = None,
        download: bool = False,
    ):
        base.check_positive_int(image_size, "image_size")
        self.held_out_fraction = base.check_held_out_fraction(held_out_fraction)
        self.builder = _builder(name, data_dir)
        self.download = download
        self._image_key, self._label_key = self._supervised_keys(name)
        overrides = _DATASET_OVERRIDES.get(self.builder.name, {})
        num_classes = overrides.get("num_classes") or self.builder.info.features[self._label_key].num_classes
        self._held_out_examples = overrides.get("held_out_examples")
        super().__init__(name, num_classes=num_classes, image_size=image_size)

    def _supervised_keys(self, name: str) -> tuple[str, str]:
        keys = self.builder.info.supervised_keys
        features = self.builder.info.features
        valid = (
            isinstance(keys, tuple)
            and len(keys) == 2
            and isinstance(features[keys[0]], tfds.features.Image)
            and isinstance(features[keys[1]], tfds.features.ClassLabel)
        )
        if not valid:
            raise ValueError(
                "Invalid value for argument `name`. Expected an image-classification dataset (supervised keys "
                f"(Image, ClassLabel)). Received: name={name!r} with supervised_keys={keys!r}"
            )
        return keys

    def _split_sizes(self) -> dict[str, int]:
        return prepared_split_sizes(self.builder, self.name, self.download)

    def splits(self) -> dict[str, tuple[str, int]]:
        """Split -> (TFDS split string, number of examples) for the four splits."""
        sizes = self._split_sizes()
        test_split = next((name for name in _TEST_SPLIT_NAMES if name in sizes), None)
        if test_split is None:
            raise ValueError(f"TFDS dataset {self.name!r} has no test split {_TEST_SPLIT_NAMES}: {sorted(sizes)}")
        held_out = self._held_out_examples or base.held_out_count(sizes["train"], self.held_out_fraction)
        return {**held_out_splits("train", sizes["train"], held_out), "test": (test_split, sizes[test_split])}

    def num_examples(self, split: str) -> int:
        return self.splits()[base.check_split(split)][1]

    def _examples(self, split: str, shuffle_files: bool, seed: int) -> tf.data.Dataset:
        base.check_split(split)
        return self.builder.as_dataset(
            split=self.splits()[split][0],
            shuffle_files=shuffle_files,
            as_supervised=True,
            # Images are decoded in the parallel preprocessing map, after the (smaller) shuffle.
            decoders={self._image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )

    def _decode(self, image: tf.Tensor) -> tf.Tensor:
        return tf.io.decode_image(image, channels=3, expand_animations=False)
