"""The embedded detection dataset: several of our shapes per image, with boxes and classes.

The ten shape classes of the classification dataset (`tunas_keras.datasets.embedded`, whose
drawing code this reuses: signed distances, anti-aliased coverage, colours, textures) on a
textured background. Each image is split into a 1×1, 2×2 or 3×3 grid (so objects come in three
size ranges, for the detector's levels); 1 … `min(cells, MAX_OBJECTS)` cells get one object
each, at a random offset, size (45–90 % of the cell), aspect ratio, stroke and colour, so
objects never overlap. A box is the tight bound of the pixels the shape covers by at least
half. Every class is invariant under a horizontal flip, so SSD's flip keeps labels.

Deterministic: example `i` of a split is drawn from `numpy.random.Philox` keyed by
`(seed, split stream, chunk)`. Images are generated at `min(image_size, MAX_NATIVE_SIZE)` px
(the pipeline resizes them, as it does any source), which keeps memory small at 320 px.

    >>> data = get_detection_dataset("embedded", image_size=128)
    >>> images, labels = next(iter(data.make("train", batch_size=8, training=True)))
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from detection.data import DetectionDataset
from tunas_keras.datasets import base
from tunas_keras.datasets.embedded import (
    CLASS_NAMES,
    DIFFICULTY,
    SHAPES,
    _coverage,
    _grating,
    _shape_colours,
    _shape_distance,
    _uniform,
)

NUM_TRAIN_ALL = 4_000
NUM_TEST = 500
SPLIT_STREAMS = {"train_all": 2, "test": 3}  # apart from the classification streams 0 and 1
MAX_OBJECTS = 6
MAX_NATIVE_SIZE = 128
GRID_SIZES = (1, 2, 3)
GRID_PROBABILITIES = (0.2, 0.4, 0.4)
OBJECT_SCALE = (0.45, 0.9)  # half-size as a fraction of the cell's half-size
_CHUNK = 256


def _object_geometry(rng, count, grid, slot_cells):
    """Centre `(count, 2)` and half extents `(count, 2)` (y, x) of one object per image, in [-1, 1] units."""
    cell_half = 1.0 / grid
    row, column = slot_cells // grid, slot_cells % grid
    centre = np.stack([-1.0 + (2 * row + 1) * cell_half, -1.0 + (2 * column + 1) * cell_half], -1)
    half = cell_half[:, None] * _uniform(rng, *OBJECT_SCALE, (count, 1))
    aspect = np.sqrt(np.exp(_uniform(rng, *np.log(DIFFICULTY.aspect), (count, 1))))
    extents = np.minimum(np.concatenate([half / aspect, half * aspect], -1), 0.95 * cell_half[:, None])
    slack = cell_half[:, None] - extents
    centre = centre + _uniform(rng, -1.0, 1.0, (count, 2)) * slack * 0.9
    return centre.astype(np.float32), extents.astype(np.float32)


def _tight_boxes(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised `ymin, xmin, ymax, xmax` of the pixels with coverage ≥ 1/2, and whether any."""
    size = alpha.shape[-1]
    inside = alpha >= 0.5
    rows, columns = inside.any(axis=2), inside.any(axis=1)
    present = rows.any(axis=1)
    first_row, last_row = rows.argmax(axis=1), size - 1 - rows[:, ::-1].argmax(axis=1)
    first_column, last_column = columns.argmax(axis=1), size - 1 - columns[:, ::-1].argmax(axis=1)
    boxes = np.stack([first_row, first_column, last_row + 1, last_column + 1], -1).astype(np.float32) / size
    return boxes, present


def _generate_chunk(rng, count, size):
    """`count` images in [0, 1], boxes `(count, MAX_OBJECTS, 4)`, classes (-1 = none) and counts."""
    coordinates = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    grid_y, grid_x = np.meshgrid(coordinates, coordinates, indexing="ij")
    background, _ = _shape_colours(rng, count, DIFFICULTY.min_contrast)
    images = background[:, None, None, :] + _grating(
        rng, grid_x, grid_y, count, DIFFICULTY.background_texture, DIFFICULTY.grating_frequency
    )
    grid = rng.choice(np.asarray(GRID_SIZES), size=count, p=GRID_PROBABILITIES)
    cells = grid * grid
    num_objects = 1 + (rng.uniform(size=count) * np.minimum(cells, MAX_OBJECTS)).astype(np.int64)
    # A random order of each image's cells: invalid cells (beyond grid²) sort last.
    order = np.argsort(rng.uniform(size=(count, 9)) + (np.arange(9)[None, :] >= cells[:, None]), axis=1)
    boxes = np.zeros((count, MAX_OBJECTS, 4), np.float32)
    classes = np.full((count, MAX_OBJECTS), -1, np.int32)
    for slot in range(MAX_OBJECTS):
        labels = rng.integers(0, len(SHAPES), count)
        centre, extents = _object_geometry(rng, count, grid.astype(np.float32), order[:, slot])
        _, colour = _shape_colours(rng, count, DIFFICULTY.min_contrast)
        stroke = _uniform(rng, *DIFFICULTY.stroke, (count, 1, 1)) * np.ones((1, size, size), np.float32)
        v = (grid_y - centre[:, 0, None, None]) / extents[:, 0, None, None]
        u = (grid_x - centre[:, 1, None, None]) / extents[:, 1, None, None]
        pixels_per_unit = extents.min(axis=1)[:, None, None] * size / 2
        alpha = _coverage(_shape_distance(labels, u, v, stroke), pixels_per_unit)
        alpha *= (slot < num_objects)[:, None, None]
        images += (colour[:, None, None, :] - images) * alpha[..., None]
        slot_boxes, present = _tight_boxes(alpha)
        boxes[:, slot] = np.where(present[:, None], slot_boxes, 0.0)
        classes[:, slot] = np.where(present, labels, -1)
    images += _uniform(rng, *DIFFICULTY.noise, (count, 1, 1, 1)) * rng.standard_normal(images.shape, np.float32)
    return np.clip(images, 0.0, 1.0), boxes, classes


@functools.lru_cache(maxsize=4)
def generate(num_examples: int, image_size: int, seed: int = 0, stream: int = 2):
    """The first `num_examples` examples of a stream (cached; read-only arrays).

    Returns:
      `uint8` images `(n, s, s, 3)`, boxes `(n, MAX_OBJECTS, 4)` (normalised), classes
      `(n, MAX_OBJECTS)` in 0 … 9 (-1 = empty slot, whose box is 0). Present objects come first.
    """
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    boxes = np.empty((num_examples, MAX_OBJECTS, 4), np.float32)
    classes = np.empty((num_examples, MAX_OBJECTS), np.int32)
    for chunk, start in enumerate(range(0, num_examples, _CHUNK)):
        rng = np.random.Generator(np.random.Philox(key=[seed, stream * 2**32 + chunk]))
        end = min(start + _CHUNK, num_examples)
        chunk_images, chunk_boxes, chunk_classes = _generate_chunk(rng, _CHUNK, image_size)
        images[start:end] = np.round(chunk_images[: end - start] * 255.0).astype(np.uint8)
        # Stable sort: present objects first, in slot order.
        order = np.argsort(chunk_classes[: end - start] < 0, axis=1, kind="stable")
        boxes[start:end] = np.take_along_axis(chunk_boxes[: end - start], order[..., None], axis=1)
        classes[start:end] = np.take_along_axis(chunk_classes[: end - start], order, axis=1)
    for array in (images, boxes, classes):
        array.setflags(write=False)
    return images, boxes, classes


class ShapesDetectionDataset(DetectionDataset):
    """The embedded detection dataset (see the module docstring); category ids are 1 … 10."""

    def __init__(
        self,
        image_size: int = 320,
        seed: int = 0,
        held_out_fraction: float = base.DEFAULT_HELD_OUT_FRACTION,
        num_train_all: int = NUM_TRAIN_ALL,
        num_test: int = NUM_TEST,
        **kwargs,
    ):
        classes = len(CLASS_NAMES)
        super().__init__("embedded", classes, image_size, tuple(range(1, classes + 1)), MAX_OBJECTS, **kwargs)
        self.seed = seed
        self.native_size = min(image_size, MAX_NATIVE_SIZE)
        self.held_out_fraction = base.check_held_out_fraction(held_out_fraction)
        self._sizes = {
            "train_all": base.check_positive_int(num_train_all, "num_train_all"),
            "test": base.check_positive_int(num_test, "num_test"),
        }
        self._sizes["valid"] = base.held_out_count(num_train_all, self.held_out_fraction)
        self._sizes["train"] = num_train_all - self._sizes["valid"]

    def num_examples(self, split: str) -> int:
        return self._sizes[base.check_split(split)]

    def arrays(self, split: str):
        """Images, boxes, classes (as `generate`) and image ids of `split`."""
        base.check_split(split)
        stream_split = "test" if split == "test" else "train_all"
        arrays = generate(self._sizes[stream_split], self.native_size, self.seed, SPLIT_STREAMS[stream_split])
        begin = self._sizes["valid"] if split == "train" else 0
        end = begin + self._sizes[split]
        ids = np.arange(begin, end, dtype=np.int64) + (1_000_000 if split == "test" else 0)
        return tuple(array[begin:end] for array in arrays) + (ids,)

    def _examples(self, split, shuffle_files, seed):
        del shuffle_files, seed  # In memory: `make` shuffles the whole split.
        images, boxes, classes, ids = self.arrays(split)
        return tf.data.Dataset.from_tensor_slices({"image": images, "boxes": boxes, "classes": classes, "id": ids})

    def _standardize(self, example) -> dict:
        count = tf.reduce_sum(tf.cast(example["classes"] >= 0, tf.int32))
        return {
            "image": example["image"],
            "boxes": example["boxes"][:count],
            "classes": example["classes"][:count] + 1,
            "is_crowd": tf.zeros([count], tf.bool),
            "source_id": example["id"],
            "height": tf.constant(self.native_size),
            "width": tf.constant(self.native_size),
        }
