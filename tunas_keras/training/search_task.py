"""The TuNAS search as a `Task`: one step = sample → weight step → validation reward → REINFORCE.

Per replica and step (all inside `strategy.run` in one `tf.function`):
1. sample an architecture α from the controller (stateless, seeded by step and replica);
2. train the shared weights on a *training* batch with α's masks after op / filter warmup;
3. score α on a *validation* batch 4× larger (top-1 accuracy Q, batch statistics);
4. reward = f(Q, T(α)/T0) and one REINFORCE step (baseline over the cross-replica mean).

References: Bender et al., CVPR 2020, §4 and Appendix E; design.md §4–§5.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from tunas_keras import cost_models, datasets, masks
from tunas_keras.models.supernet import build_supernet
from tunas_keras.registry import get_search_space
from tunas_keras.search import rewards
from tunas_keras.search.controller import Controller
from tunas_keras.search.reinforce import Reinforce, rl_learning_rate
from tunas_keras.training import report, schedules
from tunas_keras.training.config import SearchConfig
from tunas_keras.training.trainer import Task, write_atomic

_SEED_STRIDE = 1_000_003  # keeps the per-purpose seed streams apart


def total_steps_for(steps: Optional[int], epochs: Optional[float], num_examples: int, batch_size: int) -> int:
    """`epochs` (if set) converted to steps, else `steps`."""
    if epochs is not None:
        if epochs <= 0:
            raise ValueError(f"Invalid value for argument `epochs`. Expected > 0. Received: epochs={epochs}")
        return max(1, int(epochs * num_examples / batch_size))
    if steps is None or steps < 1:
        raise ValueError(f"Invalid value for argument `steps`. Expected an int >= 1. Received: steps={steps!r}")
    return int(steps)


def _use_xla(jit_compile: Optional[bool], execution: str) -> bool:
    """`jit_compile` if set, else XLA for the static-shape "mask" execution on an accelerator."""
    if jit_compile is not None:
        return bool(jit_compile)
    accelerator = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    return execution == "mask" and accelerator


def dataset_from_config(config):
    """The dataset named by a run config's `dataset`, `image_size`, `seed`, ... fields."""
    return datasets.get_dataset(
        config.dataset,
        image_size=config.image_size,
        seed=config.seed,
        held_out_fraction=config.held_out_fraction,
        data_dir=config.data_dir,
    )


def classification_loss(labels, logits, label_smoothing: float):
    """Mean softmax cross-entropy with label smoothing over the replica's batch."""
    one_hot = tf.one_hot(labels, tf.shape(logits)[-1])
    return tf.reduce_mean(
        keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=label_smoothing)
    )


def top1_accuracy(labels, logits):
    predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predictions, tf.cast(labels, tf.int32)), tf.float32))


class SearchTask(Task):
    """A TuNAS search over `config.space` on `config.dataset`."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.space = get_search_space(config.space)
        self.target_latency = config.target_latency or self.space.target_latency
        self.reward = rewards.get_reward(config.reward, beta=config.beta, target=self.target_latency)
        self.cost_model = cost_models.get_cost_model(config.cost_model, self.space)
        self.data = dataset_from_config(config)
        self.total_steps = total_steps_for(
            config.steps, config.epochs, self.data.num_examples("train"), config.batch_size
        )
        self.validation_batch_size = config.batch_size * config.validation_batch_multiplier

    def build(self, strategy: tf.distribute.Strategy) -> None:
        config = self.config
        self.num_replicas = strategy.num_replicas_in_sync
        shape = (config.image_size, config.image_size, 3)
        self.supernet = build_supernet(
            self.space,
            num_classes=self.data.num_classes,
            input_shape=shape,
            zero_init_residual=config.zero_init_residual,
            execution=config.supernet_execution,
        )
        self.jit_compile = _use_xla(config.jit_compile, self.supernet.execution)
        logging.info(
            "Supernet execution: %s%s (--supernet_execution=%s)",
            self.supernet.execution, " with XLA" if self.jit_compile else "", config.supernet_execution,
        )
        self.optimizer = schedules.make_optimizer(
            config.optimizer, config.learning_rate, config.batch_size, self.total_steps,
            config.learning_rate_warmup_fraction,
        )
        self.controller = Controller(self.space)
        self.rl_base_learning_rate = schedules.scaled_learning_rate(config.rl_learning_rate, config.batch_size)
        self.reinforce = Reinforce(self.controller, entropy_weight=config.entropy_weight)

    def checkpoint_items(self) -> dict:
        return {
            "supernet": self.supernet,
            "optimizer": self.optimizer,
            "controller": self.controller,
            "reinforce": self.reinforce,
        }

    def dataset_fn(self, start_step: int):
        config, data = self.config, self.data

        def make(input_context):
            train = data.make("train", config.batch_size, training=True, seed=config.seed, input_context=input_context)
            valid = data.make(
                "valid", self.validation_batch_size, training=False, seed=config.seed + 1, input_context=input_context
            )
            return tf.data.Dataset.zip((train, valid)).skip(start_step)

        return make

    def _seed(self, step):
        """Stateless seed of this step and replica (so a resumed run draws what an uninterrupted one draws)."""
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        return tf.stack([tf.cast(step, tf.int64) * _SEED_STRIDE + self.config.seed, replica])

    def phase(self, step: int) -> str:
        """"op_warmup" while op warmup may make op masks fractional, then "one_hot".

        One step function per phase: the one-hot graph runs each kernel-size choice as one
        merged convolution (`tunas_keras.layers.choice`), exact only for one-hot masks.
        """
        if not self.config.op_warmup:
            return "one_hot"
        probability = schedules.warmup_probability(step, self.total_steps, self.config.warmup_fraction)
        return "op_warmup" if float(probability) > 0.0 else "one_hot"

    def _weight_step(self, images, labels, step_masks, one_hot):
        variables = self.supernet.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.supernet(images, step_masks, training=True, one_hot=one_hot)
            cross_entropy = classification_loss(labels, logits, self.config.label_smoothing)
            regularization = self.config.weight_decay * self.supernet.regularization_loss(step_masks)
            loss = cross_entropy + regularization
            scaled = loss / self.num_replicas  # optimizers sum gradients across replicas
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return loss, cross_entropy, top1_accuracy(labels, logits)

    def replica_step(self, inputs, step, phase=None) -> dict:
        (train_images, train_labels), (valid_images, valid_labels) = inputs
        probability = schedules.warmup_probability(step, self.total_steps, self.config.warmup_fraction)
        op_probability = probability if self.config.op_warmup else 0.0
        filter_probability = probability if self.config.filter_warmup else 0.0
        indices, step_masks = self.controller.sample_masks(self._seed(step), op_probability, filter_probability)
        loss, cross_entropy, train_accuracy = self._weight_step(
            train_images, train_labels, step_masks, one_hot=phase == "one_hot"
        )

        # The reward scores the sampled architecture itself (no warmup replacement).
        sampled = masks.one_hot_masks(self.space, indices)
        quality = top1_accuracy(valid_labels, self.supernet(valid_images, sampled, training=False, one_hot=True))
        cost = self.cost_model.batch_cost(indices[tf.newaxis])[0]
        reward = self.reward(quality, cost)
        learning_rate = rl_learning_rate(
            step, self.total_steps, self.rl_base_learning_rate, self.config.rl_delay_fraction
        )
        rl_stats = self.reinforce.step(indices, reward, learning_rate)
        return {
            "loss": loss,
            "cross_entropy": cross_entropy,
            "train_accuracy": train_accuracy,
            "valid_accuracy": quality,
            "reward": reward,
            "cost": cost,
            "cost_ratio": cost / self.target_latency,
            "rl_learning_rate": tf.cast(learning_rate, tf.float32),
            "warmup_probability": probability,
            "learning_rate": tf.cast(self.optimizer.learning_rate(self.optimizer.iterations), tf.float32),
            **{key: tf.cast(value, tf.float32) for key, value in rl_stats.items() if key != "loss"},
        }

    def most_likely(self):
        architecture = self.controller.most_likely_architecture()
        return architecture, float(self.cost_model.cost(architecture))

    def write_summaries(self, step: int) -> None:
        _, cost = self.most_likely()
        tf.summary.scalar("most_likely/cost", cost)
        tf.summary.scalar("most_likely/cost_ratio", cost / self.target_latency)
        for position, (decision, probabilities) in enumerate(zip(self.space.decisions, self.controller.probabilities())):
            if decision.num_choices == 1:
                continue
            values = np.asarray(probabilities)
            name = f"decisions/{position:02d}_{decision.tag}"
            entropy = float(-(values * np.log(np.maximum(values, 1e-12))).sum())
            tf.summary.scalar(name + "/entropy", entropy)
            for choice, value in enumerate(values):
                tf.summary.scalar(f"{name}/p{choice}", float(value))

    progress_names = ("loss", "valid_accuracy", "cost", "most_likely_cost")

    def progress_values(self, metrics: dict) -> list:
        keys = ("loss", "valid_accuracy", "cost")
        return [(key, metrics[key]) for key in keys] + [("most_likely_cost", self.most_likely()[1])]

    def finalize(self, model_dir: str, history: list) -> dict:
        architecture, cost = self.most_likely()
        result = {
            **architecture.to_dict(),
            "cost": cost,
            "cost_model": self.config.cost_model,
            "target_latency": self.target_latency,
            "config": dataclasses.asdict(self.config),
        }
        write_atomic(os.path.join(model_dir, "architecture.json"), json.dumps(result, indent=2))
        probabilities = [np.asarray(p).tolist() for p in self.controller.probabilities()]
        log = {"history": history, "final_probabilities": probabilities, "architecture": result}
        write_atomic(os.path.join(model_dir, "search_log.json"), json.dumps(log))
        report.write_search_report(os.path.join(model_dir, "report.png"), self.space, history, probabilities, result)
        return result


