"""Image-folder source: `root/<class name>/<image>.{jpg,jpeg,png}`, class labels by sorted name.

Two layouts are accepted:
    root/<class>/...                                   "test" is not available
    root/train/<class>/... and root/{test,validation,val}/<class>/...

"valid" is a deterministic, class-stratified held-out part of the training images: within each
class the sorted file list is shuffled with the dataset seed and the first
`round(held_out_fraction · n)` files are held out.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf

from tunas_keras.datasets import base

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_TEST_DIRECTORIES = ("test", "validation", "val")
SHUFFLE_BUFFER_SIZE = 10_000


def _class_files(root: pathlib.Path) -> dict[str, list[str]]:
    """Sorted class name -> sorted image paths, for the class directories of `root`."""
    classes = {}
    for directory in sorted(path for path in root.iterdir() if path.is_dir()):
        files = sorted(
            str(path) for path in directory.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        )
        if files:
            classes[directory.name] = files
    return classes


def _held_out_mask(num_files: int, held_out_fraction: float, seed: int, class_index: int) -> np.ndarray:
    order = np.random.Generator(np.random.Philox(key=[seed, class_index])).permutation(num_files)
    mask = np.zeros(num_files, bool)
    mask[order[: int(round(num_files * held_out_fraction))]] = True
    return mask


class FolderDataset(base.ImageDataset):
    """Images in one sub-folder per class (see the module docstring).

    Args:
      root: the folder.
      image_size: output height and width.
      seed: seed of the held-out selection.
      held_out_fraction: fraction of each class's training images held out as "valid".
    """

    shuffle_buffer_size = SHUFFLE_BUFFER_SIZE

    def __init__(self, root: str, image_size: int = 224, seed: int = 0, held_out_fraction: float = 0.1):
        base.check_positive_int(image_size, "image_size")
        held_out_fraction = base.check_held_out_fraction(held_out_fraction)
        root_path = pathlib.Path(root)
        if not root_path.is_dir():
            raise ValueError(
                "Invalid value for argument `name`. Expected 'folder:' followed by an existing directory. "
                f"Received: name='folder:{root}' (no such directory)"
            )
        train_root = root_path / "train" if (root_path / "train").is_dir() else root_path
        classes = _class_files(train_root)
        if len(classes) < 2:
            raise ValueError(
                "Invalid value for argument `name`. Expected an image folder with at least 2 class sub-folders "
                f"holding {'/'.join(IMAGE_EXTENSIONS)} files. Received: name='folder:{root}' with "
                f"{len(classes)} class(es) {sorted(classes)}"
            )
        super().__init__(f"folder:{root}", num_classes=len(classes), image_size=image_size)
        self.root = str(root_path)
        self.class_names = tuple(classes)
        self._files = self._split_files(classes, held_out_fraction, seed)
        test_root = next((root_path / name for name in _TEST_DIRECTORIES if (root_path / name).is_dir()), None)
        if train_root != root_path and test_root is not None:
            self._files["test"] = self._labelled(_class_files(test_root))

    def _labelled(self, classes: dict[str, list[str]]) -> list[tuple[str, int]]:
        unknown = sorted(set(classes) - set(self.class_names))
        if unknown:
            raise ValueError(f"The test folder of {self.name!r} has classes absent from its training folder: {unknown}")
        return [(path, self.class_names.index(name)) for name, files in classes.items() for path in files]

    def _split_files(self, classes, held_out_fraction, seed) -> dict[str, list[tuple[str, int]]]:
        splits = {"train": [], "valid": [], "train_all": []}
        for label, files in enumerate(classes.values()):
            held_out = _held_out_mask(len(files), held_out_fraction, seed, label)
            for path, is_held_out in zip(files, held_out):
                splits["train_all"].append((path, label))
                splits["valid" if is_held_out else "train"].append((path, label))
        return splits

    def files(self, split: str) -> list[tuple[str, int]]:
        """The `(path, label)` pairs of `split`, in a fixed order."""
        base.check_split(split)
        if split not in self._files:
            raise ValueError(
                f"Invalid value for argument `split`. The image folder {self.root!r} has no test images (expected "
                f"'train' and one of {_TEST_DIRECTORIES} sub-folders). Received: split='test'"
            )
        return self._files[split]

    def num_examples(self, split: str) -> int:
        return len(self.files(split))

    def _examples(self, split: str, shuffle_files: bool, seed: int) -> tf.data.Dataset:
        del shuffle_files, seed  # The file list is small: `make` shuffles it whole (up to the buffer size).
        paths, labels = zip(*self.files(split)) if self.files(split) else ((), ())
        return tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))

    def _decode(self, path: tf.Tensor) -> tf.Tensor:
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
