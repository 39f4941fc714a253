"""Reference image preprocessing: inception-style crop + flip for training, centre crop for eval.

Every image source (embedded, TFDS, image folder) hands a decoded `uint8` image of any size to
`preprocess_image`, which returns a normalised `float32` image of the requested size.

References:
    TuNAS reference `imagenet_preprocessing.py` / `fast_imagenet_input.py` (paper §5 recipe):
    `sample_distorted_bounding_box` with area in [0.08, 1], aspect ratio in [3/4, 4/3],
    min_object_covered 0.1 and 10 attempts (falling back to the centre crop), random horizontal
    flip, bicubic resize; normalisation with the ImageNet mean and standard deviation.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

# ImageNet statistics of [0, 1]-scaled RGB pixels (the reference stores them ×255).
MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)
# Evaluation keeps the central 224/256 of the shorter side. The reference computes
# image_size / (image_size + 32), which is 0.875 at 224 px but would discard half of a 32 px
# image, so the fraction is fixed here.
EVAL_CROP_FRACTION = 0.875
TRAIN_AREA_RANGE = (0.08, 1.0)
TRAIN_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
TRAIN_MIN_OBJECT_COVERED = 0.1
TRAIN_MAX_ATTEMPTS = 10
RESIZE_METHOD = "bicubic"


def normalize(image: tf.Tensor) -> tf.Tensor:
    """Maps `[0, 255]` pixels to ImageNet-normalised `float32` values.

    Args:
      image: `[..., 3]` tensor of pixel values in [0, 255] (any real or integer dtype).

    Returns:
      `float32` tensor `(image / 255 - MEAN_RGB) / STDDEV_RGB`.
    """
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(MEAN_RGB, tf.float32)) / tf.constant(STDDEV_RGB, tf.float32)


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    # Bicubic interpolation overshoots near edges; clipping keeps pixels in [0, 255].
    image = tf.image.resize(image, [image_size, image_size], method=RESIZE_METHOD)
    return tf.clip_by_value(image, 0.0, 255.0)


def center_crop(image: tf.Tensor, image_size: int, crop_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """Crops the central square (`crop_fraction` of the shorter side) and resizes it.

    Args:
      image: `[height, width, 3]` image with pixel values in [0, 255].
      image_size: output height and width.
      crop_fraction: fraction of the shorter side kept, in (0, 1].

    Returns:
      `float32` tensor `[image_size, image_size, 3]` with pixel values in [0, 255].
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    crop_size = tf.cast(crop_fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    crop_size = tf.maximum(crop_size, 1)
    offset_height = (height - crop_size + 1) // 2
    offset_width = (width - crop_size + 1) // 2
    image = tf.image.crop_to_bounding_box(image, offset_height, offset_width, crop_size, crop_size)
    return _resize(image, image_size)


def random_crop(
    image: tf.Tensor, image_size: int, seed: tf.Tensor, area_range: Sequence[float] = TRAIN_AREA_RANGE
) -> tf.Tensor:
    """Inception-style random crop (stateless), resized to `image_size`.

    As in the reference, a sampled box equal to the whole image (all attempts failed) falls back
    to the evaluation centre crop.

    Args:
      image: `[height, width, 3]` image with pixel values in [0, 255].
      image_size: output height and width.
      seed: `[2]` integer seed of the stateless sampler.
      area_range: range of the crop's area as a fraction of the image area.

    Returns:
      `float32` tensor `[image_size, image_size, 3]` with pixel values in [0, 255].
    """
    shape = tf.shape(image)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=TRAIN_MIN_OBJECT_COVERED,
        aspect_ratio_range=TRAIN_ASPECT_RATIO_RANGE,
        area_range=tuple(area_range),
        max_attempts=TRAIN_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
    return tf.cond(
        failed,
        lambda: center_crop(image, image_size),
        lambda: _resize(tf.slice(image, begin, size), image_size),
    )


def preprocess_image(
    image: tf.Tensor,
    image_size: int,
    training: bool,
    seed: tf.Tensor | None = None,
    area_range: Sequence[float] = TRAIN_AREA_RANGE,
) -> tf.Tensor:
    """The reference preprocessing of one decoded image.

    Args:
      image: `[height, width, 3]` `uint8` (or [0, 255] float) image.
      image_size: output height and width.
      training: random crop + horizontal flip when True, centre crop when False.
      seed: `[2]` integer seed for the stateless augmentation (required when `training`).
      area_range: crop area range for training (the reference uses [0.08, 1]).

    Returns:
      Normalised `float32` tensor `[image_size, image_size, 3]`.
    """
    image.shape.assert_has_rank(3)
    if training:
        if seed is None:
            raise ValueError("Invalid value for argument `seed`. Expected a [2] seed when training. Received: None")
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = random_crop(image, image_size, crop_seed, area_range)
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    else:
        image = center_crop(image, image_size)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return normalize(image)
