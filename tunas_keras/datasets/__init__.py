"""Image-classification data for search and training: one entry point, `get_dataset`.

    >>> from tunas_keras import datasets
    >>> data = datasets.get_dataset("embedded", image_size=32)       # no download needed
    >>> data.num_classes, data.num_examples("train"), data.num_examples("valid")
    (10, 9000, 1000)
    >>> images, labels = next(iter(data.make("train", batch_size=64, training=True)))

Sources, chosen by `name`:
    "embedded"            procedurally generated shapes shipped as code (`embedded.py`);
    "folder:/path/root"   one sub-folder per class (`folder.py`);
    anything else         a TFDS image-classification dataset ("cifar10", "imagenet2012", ...).
"""

from __future__ import annotations

from typing import Callable

from tunas_keras.datasets.base import SPLITS, ImageDataset, check_held_out_fraction, check_positive_int
from tunas_keras.datasets.embedded import CLASS_NAMES, EmbeddedDataset
from tunas_keras.datasets.folder import FolderDataset
from tunas_keras.datasets.preprocessing import MEAN_RGB, STDDEV_RGB, preprocess_image
from tunas_keras.datasets.tfds_source import TFDSDataset

FOLDER_PREFIX = "folder:"


def _embedded(name, image_size, seed, held_out_fraction, data_dir, download):
    del name, data_dir, download
    return EmbeddedDataset(image_size=image_size, seed=seed, held_out_fraction=held_out_fraction)


def _folder(name, image_size, seed, held_out_fraction, data_dir, download):
    del data_dir, download
    root = name[len(FOLDER_PREFIX) :]
    return FolderDataset(root, image_size=image_size, seed=seed, held_out_fraction=held_out_fraction)


def _tfds(name, image_size, seed, held_out_fraction, data_dir, download):
    del seed  # TFDS splits are slices by index, as in the reference.
    return TFDSDataset(
        name, image_size=image_size, held_out_fraction=held_out_fraction, data_dir=data_dir, download=download
    )


# Source scheme -> builder; a name without a registered scheme is looked up in TFDS.
SOURCES: dict[str, Callable[..., ImageDataset]] = {"embedded": _embedded, "folder": _folder}


def get_dataset(
    name: str = "embedded",
    image_size: int = 32,
    seed: int = 0,
    held_out_fraction: float = 0.1,
    data_dir: str | None = None,
    download: bool = False,
) -> ImageDataset:
    """Returns an image-classification dataset with the splits "train", "valid", "train_all", "test".

    Args:
      name: "embedded", "folder:/path/to/root", or a TFDS image-classification name ("cifar10",
        "imagenet2012", ...).
      image_size: height and width of the images the pipelines yield.
      seed: seed of the data itself (the embedded examples, the image folder's held-out choice).
      held_out_fraction: fraction of the training split held out as "valid", in (0, 1)
        (imagenet2012 uses the reference's fixed `train[:50046]`).
      data_dir: TFDS data directory (TFDS sources only).
      download: let TFDS download and prepare missing data (TFDS sources only; off by default).

    Returns:
      An `ImageDataset`: `.name`, `.num_classes`, `.image_size`, `.num_examples(split)` and
      `.make(split, batch_size, training, seed=0, repeat=True, input_context=None)`.

    Raises:
      ValueError: for an unknown name, a missing or single-class folder, a non-positive
        `image_size` or a `held_out_fraction` outside (0, 1).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Invalid value for argument `name`. Expected a non-empty string. Received: name={name!r}")
    check_positive_int(image_size, "image_size")
    check_held_out_fraction(held_out_fraction)
    scheme = name.split(":", 1)[0] if name.startswith(FOLDER_PREFIX) else name
    builder = SOURCES.get(scheme, _tfds)
    return builder(name, image_size, seed, held_out_fraction, data_dir, download)


__all__ = [
    "CLASS_NAMES",
    "MEAN_RGB",
    "SPLITS",
    "STDDEV_RGB",
    "SOURCES",
    "EmbeddedDataset",
    "FolderDataset",
    "ImageDataset",
    "TFDSDataset",
    "get_dataset",
    "preprocess_image",
]
