"""Does the search's quality signal rank detectors like mAP? (the evidence in docs/detection.md)

Trains a few architectures of `mobilenet_v3_like` the same way on the embedded data, then
scores each on the held-out split twice: the search's signal (mean over batches of
`exp(-validation loss)`, `detection.tasks`) and COCO AP from `COCOEvaluator`; reports both
and their Spearman correlation. Run (minutes on a CPU; not part of the tests):

    python -m detection.experiments --steps=300 --image_size=64
"""

from __future__ import annotations

import json
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from detection.config import DetectionTrainConfig
from detection.losses import detection_loss
from detection.synthetic import ShapesDetectionDataset
from detection.tasks import DetectionTask, loss_config
from tunas_keras.cost_models.calibration import spearman
from tunas_keras.cost_models.sampling import extreme_indices, uniform_indices
from tunas_keras.registry import get_search_space
from tunas_keras.training.trainer import run_task


def validation_quality(model, data, split: str, batch_size: int, max_batches: int, config) -> float:
    """Mean over batches of `exp(-detection loss)` (the search's Q, here with moving statistics)."""
    values = []
    for images, labels in data.make(split, batch_size, training=False, repeat=False).take(max_batches):
        loss = detection_loss(model(images, training=False), labels, data.num_classes, loss_config(config))["loss"]
        values.append(float(tf.exp(-loss)))
    return float(np.mean(values))


def candidate_architectures(space, count: int, seed: int = 0) -> dict:
    """The smallest point of the space, middle widths with every optional layer skipped, random points."""
    smallest = list(extreme_indices(space)[0])
    middle = [
        decision.num_choices // 2 if decision.tag == "filters" else index
        for decision, index in zip(space.decisions, smallest, strict=True)
    ]
    sampled = uniform_indices(space, np.random.default_rng(seed), max(0, count - 2))
    rows = [smallest, middle] + [row.tolist() for row in sampled]
    return {f"arch{position}": space.architecture(row) for position, row in enumerate(rows)}


def rank_quality_against_map(steps: int, image_size: int, count: int, batch_size: int = 32, eval_batches: int = 4):
    """Trains `count` architectures for `steps` steps; returns their quality, AP and the rank correlation."""
    data = ShapesDetectionDataset(image_size=image_size)
    space = get_search_space("mobilenet_v3_like")
    rows = []
    for name, architecture in candidate_architectures(space, count).items():
        with tempfile.TemporaryDirectory() as model_dir:
            config = DetectionTrainConfig(
                indices=str(architecture),
                space=space.name,
                image_size=image_size,
                steps=steps,
                batch_size=batch_size,
                model_dir=model_dir,
                progress_bar=False,
                eval_batches=eval_batches,
                eval_batch_size=batch_size,
                checkpoint_every=steps,
            )
            task = DetectionTask(config, data)
            result = run_task(task, config)
        quality = validation_quality(task.model, data, "valid", batch_size, eval_batches, config)
        rows.append(
            {
                "name": name,
                "indices": str(architecture),
                "quality": quality,
                "AP": result["AP"],
                "AP50": result["AP50"],
                "params": result["params"],
            }
        )
        print(json.dumps(rows[-1]))
    return {
        "rows": rows,
        "spearman_quality_AP": spearman([row["quality"] for row in rows], [row["AP"] for row in rows]),
        "spearman_quality_AP50": spearman([row["quality"] for row in rows], [row["AP50"] for row in rows]),
    }


FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 300, "Training steps per architecture.")
flags.DEFINE_integer("image_size", 64, "Input size.")
flags.DEFINE_integer("count", 5, "Architectures.")


def main(argv):
    del argv
    result = rank_quality_against_map(FLAGS.steps, FLAGS.image_size, FLAGS.count)
    print(json.dumps({key: value for key, value in result.items() if key != "rows"}))


if __name__ == "__main__":
    app.run(main)
