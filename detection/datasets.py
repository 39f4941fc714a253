"""`get_detection_dataset`: the one entry point to detection data (embedded shapes or COCO).

>>> data = get_detection_dataset("embedded", image_size=128)       # generated, offline
>>> data = get_detection_dataset("coco/2017", data_dir="~/tensorflow_datasets")
"""

from __future__ import annotations

from detection.anchors import SSD_ANCHORS, AnchorConfig
from detection.coco import CocoDataset
from detection.data import DetectionDataset
from detection.synthetic import ShapesDetectionDataset
from tunas_keras.datasets.base import check_held_out_fraction, check_positive_int

COCO_PREFIX = "coco"


def get_detection_dataset(
    name: str = "embedded",
    image_size: int = 320,
    seed: int = 0,
    held_out_fraction: float = 0.1,
    data_dir=None,
    download: bool = False,
    anchor_config: AnchorConfig = SSD_ANCHORS,
) -> DetectionDataset:
    """A detection dataset with the splits "train", "valid", "train_all", "test".

    Args:
      name: "embedded" (the generated shapes, `detection.synthetic`) or a TFDS COCO name
        ("coco/2017", `detection.coco`).
      image_size: the detector's square input size.
      seed: seed of the generated data (embedded only).
      held_out_fraction: fraction of the training split held out as "valid", in (0, 1).
      data_dir / download: TFDS options (COCO only).
      anchor_config: the anchors the targets are computed for.

    Raises:
      ValueError: an unknown name or invalid sizes.
    """
    check_positive_int(image_size, "image_size")
    check_held_out_fraction(held_out_fraction)
    if name == "embedded":
        return ShapesDetectionDataset(
            image_size=image_size, seed=seed, held_out_fraction=held_out_fraction, anchor_config=anchor_config
        )
    if isinstance(name, str) and name.split("/")[0].split(":")[0] == COCO_PREFIX:
        return CocoDataset(
            name, image_size, held_out_fraction, data_dir=data_dir, download=download, anchor_config=anchor_config
        )
    raise ValueError(
        "Invalid value for argument `dataset`. Expected 'embedded' or a TFDS COCO name (e.g. 'coco/2017') for "
        f"detection. Received: dataset={name!r}"
    )
