"""COCO 2017 through TensorFlow Datasets (`coco/2017`), with the TuNAS splits.

TFDS stores normalised `ymin, xmin, ymax, xmax` boxes and labels 0 … 79; the head's classes are
label + 1 (0 = background) and the evaluator needs COCO's category ids (1 … 90 with gaps):
`COCO_CATEGORY_IDS[label]`. Splits: "train" / "valid" are TFDS `train` without / with its first
`held_out_fraction` (the RL reward's data, as `train[:50046]` for ImageNet), "train_all" the
whole `train`, "test" is TFDS `validation` (val2017, the usual minival).

Nothing is downloaded unless asked: prepare the data first (`tfds build coco/2017`, ~25 GB).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from detection.data import DetectionDataset, sort_box_corners
from tunas_keras.datasets import base
from tunas_keras.datasets.tfds_source import held_out_splits, prepared_split_sizes

# COCO category id of each of the 80 TFDS labels (the 2017 detection categories, in order).
COCO_CATEGORY_IDS = (
    *range(1, 12),
    *range(13, 26),
    27,
    28,
    *range(31, 45),
    *range(46, 66),
    67,
    70,
    *range(72, 83),
    *range(84, 91),
)
TEST_SPLIT = "validation"
MAX_INSTANCES = 100
SHUFFLE_BUFFER_SIZE = 1_000


class CocoDataset(DetectionDataset):
    """COCO 2017 from TFDS (see the module docstring).

    Args:
      name: TFDS name ("coco/2017").
      image_size: square input size of the detector (SSDLite: 320).
      held_out_fraction: fraction of TFDS `train` held out as "valid".
      data_dir: TFDS data directory.
      download: let TFDS download and prepare the data if missing.
      split_sizes: `{"train": n, "validation": m}` to use instead of the prepared dataset's
        metadata (tests with `tfds.testing.mock_data`, which has none).
    """

    shuffle_buffer_size = SHUFFLE_BUFFER_SIZE

    def __init__(
        self,
        name: str = "coco/2017",
        image_size: int = 320,
        held_out_fraction: float = base.DEFAULT_HELD_OUT_FRACTION,
        data_dir=None,
        download: bool = False,
        split_sizes=None,
        **kwargs,
    ):
        super().__init__(name, len(COCO_CATEGORY_IDS), image_size, COCO_CATEGORY_IDS, MAX_INSTANCES, **kwargs)
        self.held_out_fraction = base.check_held_out_fraction(held_out_fraction)
        self.builder = tfds.builder(name, data_dir=data_dir)
        self.download = download
        self._split_sizes = dict(split_sizes) if split_sizes else None

    def _sizes(self) -> dict:
        return self._split_sizes or prepared_split_sizes(self.builder, self.name, self.download)

    def splits(self) -> dict:
        """Split → (TFDS split string, number of examples)."""
        sizes = self._sizes()
        held_out = base.held_out_count(sizes["train"], self.held_out_fraction)
        return {**held_out_splits("train", sizes["train"], held_out), "test": (TEST_SPLIT, sizes[TEST_SPLIT])}

    def num_examples(self, split: str) -> int:
        return self.splits()[base.check_split(split)][1]

    def _examples(self, split, shuffle_files, seed):
        return self.builder.as_dataset(
            split=self.splits()[base.check_split(split)][0],
            shuffle_files=shuffle_files,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )

    def _standardize(self, example) -> dict:
        image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        objects = example["objects"]
        shape = tf.shape(image)
        return {
            "image": image,
            "boxes": sort_box_corners(tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4])),
            "classes": tf.cast(objects["label"], tf.int32) + 1,
            "is_crowd": tf.cast(objects["is_crowd"], tf.bool),
            "source_id": example["image/id"],
            "height": shape[0],
            "width": shape[1],
        }
