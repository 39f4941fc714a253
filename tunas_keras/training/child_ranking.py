"""Is the search signal there? Accuracy of sampled children under a search's shared weights.

The search's reward only carries information if, under the shared weights, children differ in
accuracy, and for a latency-constrained search the interesting question is whether children
that cost more (more depth, larger kernels and expansions) are more accurate. `rank_children`
restores the supernet of a finished (or running) search, evaluates uniformly sampled children
plus the space's smallest and largest one on held-out batches (one-hot masks and batch
statistics, exactly as the search's validation pass) and reports Spearman's correlation of
accuracy with cost.

    >>> result = rank_children("runs/search", num_architectures=32, num_batches=4)
    >>> result["spearman"], result["smallest"]["accuracy"], result["largest"]["accuracy"]
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from tunas_keras import cost_models, masks
from tunas_keras.cost_models.calibration import spearman
from tunas_keras.cost_models.sampling import extreme_indices, uniform_indices
from tunas_keras.models.supernet import Supernet, build_supernet
from tunas_keras.search.controller import decision_ancestors
from tunas_keras.training.config import SearchConfig, config_from_dict
from tunas_keras.training.search_task import RL_START_CHECKPOINT, dataset_from_config, top1_accuracy


def read_search_config(
    search_dir: str, argument: str = "search_dir", config_class: type = SearchConfig, checkpoint: str = "latest"
) -> tuple[SearchConfig, str]:
    """`(config, checkpoint path)` of a `tools/search.py` model_dir, or a ValueError naming `argument`.

    `config_class`: the search's config dataclass (e.g. `detection.config.DetectionSearchConfig`).
    `checkpoint`: "latest", or the name of a kept checkpoint (e.g. "rl_start", the weights as
    the warmup left them; see `SearchTask.kept_checkpoints`).
    """
    config_path = os.path.join(search_dir, "config.json")
    directory = os.path.join(search_dir, "checkpoints")
    if checkpoint == "latest":
        checkpoint_path = tf.train.latest_checkpoint(directory)
    else:
        checkpoint_path = os.path.join(directory, checkpoint)
        if not os.path.isfile(checkpoint_path + ".index"):
            raise ValueError(
                f"Invalid value for argument `checkpoint`. Expected 'latest' or a checkpoint kept in {directory} "
                f"(e.g. '{RL_START_CHECKPOINT}', which searches keep). Received: {checkpoint!r}"
            )
    if not os.path.isfile(config_path) or checkpoint_path is None:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a search model_dir with config.json and "
            f"checkpoints/. Received: {search_dir!r}"
        )
    with open(config_path) as handle:
        return config_from_dict(config_class, json.load(handle)), checkpoint_path


def load_search_supernet(config: SearchConfig, checkpoint_path: str, num_classes: int, input_shape=None) -> Supernet:
    """The supernet of a search (`read_search_config`'s result), restored from `checkpoint_path`.

    Args:
      config: the search's config.
      checkpoint_path: its checkpoint.
      num_classes: classifier outputs (the search's dataset's class count).
      input_shape: (height, width, channels); default: the search's image size.
    """
    shape = tuple(input_shape) if input_shape is not None else (config.image_size, config.image_size, 3)
    supernet = build_supernet(config.space, num_classes=num_classes, input_shape=shape)
    supernet(tf.zeros((1,) + shape), masks.uniform_masks(supernet.space), training=False)
    tf.train.Checkpoint(supernet=supernet).restore(checkpoint_path).expect_partial()
    return supernet


def evaluate_children(supernet: Supernet, indices: np.ndarray, batches: list) -> np.ndarray:
    """Top-1 accuracy of each architecture (rows of int `indices`) over `batches` of (images, labels)."""

    @tf.function
    def correct(images, labels, *one_hot):
        logits = supernet(images, list(one_hot), training=False, one_hot=True)
        return top1_accuracy(labels, logits) * tf.cast(tf.shape(labels)[0], tf.float32)

    total = sum(int(labels.shape[0]) for _, labels in batches)
    accuracies = []
    for row in indices:
        row_masks = masks.one_hot_masks(supernet.space, [int(index) for index in row])
        accuracies.append(sum(float(correct(images, labels, *row_masks)) for images, labels in batches) / total)
    return np.asarray(accuracies)


def rank_children(
    search_dir: str,
    num_architectures: int = 32,
    num_batches: int = 4,
    batch_size: int = 128,
    seed: int = 0,
    checkpoint: str = "latest",
) -> dict:
    """Evaluates sampled children of a search's supernet; see the module docstring.

    `checkpoint`: "latest" (the final shared weights of a finished search) or a kept one
    ("rl_start": the weights at the end of the warmup, before the policy trains).

    Returns:
      `{"children": [{"indices", "cost", "accuracy"}, ...], "spearman": accuracy vs cost over
      the sampled children, "smallest" / "largest": the extreme architectures' entries,
      "accuracy_by_cost_tercile": mean accuracy of the cheapest, middle and dearest third,
      "decision_effects": `decision_effects` of the uniform children, "found": the search's own
      architectures (`found_architectures`) with their accuracy and "target_latency",
      "num_images", "space", "cost_model", "checkpoint"}`.
    """
    checks = (
        ("num_architectures", num_architectures, 3),
        ("num_batches", num_batches, 1),
        ("batch_size", batch_size, 1),
    )
    for name, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"Invalid value for argument `{name}`. Expected an int >= {minimum}. Received: {value!r}")
    config, checkpoint_path = read_search_config(search_dir, checkpoint=checkpoint)
    data = dataset_from_config(config)
    supernet = load_search_supernet(config, checkpoint_path, data.num_classes)
    cost_model = cost_models.get_cost_model(config.cost_model, supernet.space)
    found = found_architectures(search_dir)
    ranking = rank_supernet_children(
        supernet, data, cost_model, num_architectures, num_batches, batch_size, seed, found
    )
    # The cost model as the search names it (e.g. a .json path).
    return {**ranking, "cost_model": config.cost_model, "checkpoint": checkpoint}


def found_architectures(search_dir: str) -> list:
    """The entries of a search's architectures.json index (one per target; `[]` without one).

    A search from before the index existed: its architecture.json, as one entry.
    """
    for name in ("architectures.json", "architecture.json"):
        path = os.path.join(search_dir, name)
        if os.path.isfile(path):
            with open(path) as handle:
                stored = json.load(handle)
            return stored["architectures"] if name == "architectures.json" else [stored]
    return []


def rank_supernet_children(
    supernet: Supernet,
    data,
    cost_model,
    num_architectures: int,
    num_batches: int,
    batch_size: int,
    seed: int = 0,
    found: Sequence[dict] = (),
) -> dict:
    """`rank_children` on a built supernet and dataset (e.g. a running search's), with `found`
    (entries with "indices" and "target_latency") evaluated beside the uniform children."""
    batches = list(data.make("valid", batch_size, training=False, repeat=False).take(num_batches))
    space = supernet.space
    sampled = uniform_indices(space, np.random.default_rng(seed), num_architectures)
    found_indices = np.asarray([entry["indices"] for entry in found], np.int32).reshape(-1, space.num_decisions)
    indices = np.concatenate([sampled, np.asarray(extreme_indices(space), np.int32), found_indices])
    accuracies = evaluate_children(supernet, indices, batches)
    costs = np.asarray([cost_model.cost(row.tolist()) for row in indices])
    children = [
        {"indices": row.tolist(), "cost": float(cost), "accuracy": float(accuracy)}
        for row, cost, accuracy in zip(indices, costs, accuracies)
    ]
    order = np.argsort(costs[:num_architectures], kind="stable")
    return {
        "space": space.name,
        "cost_model": cost_model.name,
        "num_images": sum(int(labels.shape[0]) for _, labels in batches),
        "children": children[:num_architectures],
        "smallest": children[num_architectures],
        "largest": children[num_architectures + 1],
        "found": [
            {**child, "target_latency": entry.get("target_latency")}
            for child, entry in zip(children[num_architectures + 2 :], found)
        ],
        "spearman": spearman(costs[:num_architectures], accuracies[:num_architectures]),
        "accuracy_by_cost_tercile": [float(np.mean(accuracies[part])) for part in np.array_split(order, 3)],
        "decision_effects": decision_effects(space, sampled, accuracies[:num_architectures], costs[:num_architectures]),
    }


def decision_effects(space, indices: np.ndarray, accuracies: np.ndarray, costs: np.ndarray) -> list:
    """Which decisions move the children's accuracy, and do they move cost the same way?

    For each searched decision: the children's mean accuracy and mean cost per choice, over the
    children where the decision is active (e.g. not the kernel of a skipped layer), and `spread`
    (largest minus smallest mean accuracy). `spearman_without` is Spearman(cost, accuracy) once
    each child's accuracy has the mean accuracy of its group subtracted (its choice, or "inactive"):
    what the ranking would be without this decision's accuracy effect. Sorted by `spread`, largest first.

    Args:
      space: the search space; `indices`: int `[N, num_decisions]` (uniform children);
      `accuracies`, `costs`: `[N]`.
    """
    indices = np.asarray(indices)
    accuracies, costs = np.asarray(accuracies, np.float64), np.asarray(costs, np.float64)
    effects = []
    for position, (decision, ancestors) in enumerate(zip(space.decisions, decision_ancestors(space))):
        if decision.num_choices < 2:
            continue
        active = np.ones(len(indices), bool)
        for at, choice in ancestors:
            active &= indices[:, at] == choice
        chosen = [active & (indices[:, position] == choice) for choice in range(decision.num_choices)]
        means = [float(np.mean(accuracies[rows])) if rows.any() else None for rows in chosen]
        present = [mean for mean in means if mean is not None]
        if len(present) < 2:
            continue
        adjusted = accuracies.copy()
        for rows in chosen + [~active]:  # the children where the decision is inactive: one more group
            if rows.any():
                adjusted[rows] -= np.mean(accuracies[rows])
        effects.append(
            {
                "decision": decision.name,
                "count": [int(rows.sum()) for rows in chosen],
                "mean_accuracy": means,
                "mean_cost": [float(np.mean(costs[rows])) if rows.any() else None for rows in chosen],
                "spread": max(present) - min(present),
                "spearman_without": spearman(costs, adjusted),
            }
        )
    return sorted(effects, key=lambda effect: -effect["spread"])
