"""Standalone training of one architecture as a `Task` (design.md §6), plus evaluation.

`--protocol=valid`: train on the training part, evaluate on the held-out part (the numbers the
random-search baseline and the search compare on). `--protocol=test`: train on the whole
training split, evaluate on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

import search_spaces
from tunas_keras.export import sources
from tunas_keras.models.standalone import build_model, kernel_weights
from tunas_keras.schema import Architecture
from tunas_keras.training import schedules
from tunas_keras.training.child_ranking import load_search_supernet, read_search_config
from tunas_keras.training.config import SearchConfig, TrainConfig
from tunas_keras.training.search_task import classification_loss, dataset_from_config, top1_accuracy, total_steps_for
from tunas_keras.training.trainer import Task, write_atomic

PROTOCOLS = {"valid": ("train", "valid"), "test": ("train_all", "test")}
LONG_TRAINING_EPOCHS = 150


def default_dropout_rate(epochs: float, architecture) -> float:
    """0 below 150 epochs, else 0.15 (0.25 for MobileNetV3-like networks), as the reference."""
    if epochs < LONG_TRAINING_EPOCHS:
        return 0.0
    mobilenet_v3 = architecture == "mobilenet_v3_large" or getattr(architecture, "space", "") == "mobilenet_v3_like"
    return 0.25 if mobilenet_v3 else 0.15


CLASSIFIER = "classifier"  # the final dense layer of `build_model`: not regularised (reference `_make_head`)


def kernel_l2(model: keras.Model):
    """Σw² over the convolution, depthwise and squeeze-excite kernels (not biases, batch norm or the classifier).

    Multiply by `weight_decay / 2`: the reference's `l2(weight_decay / 2)` (tf.contrib semantics).
    """
    classifier = {id(weight) for weight in model.get_layer(CLASSIFIER).weights}
    kernels = [kernel for kernel in kernel_weights(model) if id(kernel) not in classifier]
    return tf.add_n([tf.reduce_sum(tf.square(kernel)) for kernel in kernels])


class SingleModelTask(Task):
    """What the standalone training of one model shares across tasks (classification here, detection
    in `detection.tasks`): the protocol's splits, the architecture (and its `init_from_supernet`
    search, checked up front), the data, the step count, the optimizer and the training pipeline.

    Subclasses build the model and define the step; `_make_data` gives the dataset.
    """

    search_config_class = SearchConfig  # the config class of the searches `init_from_supernet` reads

    def __init__(self, config: TrainConfig):
        if config.protocol not in PROTOCOLS:
            raise ValueError(
                f"Invalid value for argument `protocol`. Expected one of {sorted(PROTOCOLS)}. "
                f"Received: {config.protocol!r}"
            )
        self.config = config
        self.architecture = sources.resolve_architecture(
            config.architecture, config.indices, config.space, config.reference
        )
        if config.init_from_supernet:
            supernet_source(self.architecture, config.init_from_supernet, self.search_config_class)
        self.data = self._make_data()
        self.train_split, self.eval_split = PROTOCOLS[config.protocol]
        self.train_examples = self.data.num_examples(self.train_split)
        self.total_steps = total_steps_for(config.steps, config.epochs, self.train_examples, config.batch_size)

    def _make_data(self):
        """The dataset (called in `__init__` after `config` is set)."""
        return dataset_from_config(self.config)

    def _build_optimizer(self, variables) -> None:
        """`self.optimizer` of the config's recipe, its slots created now (not in the first step: a
        tf.function that creates variables traces twice)."""
        config = self.config
        self.optimizer = schedules.make_optimizer(
            config.optimizer,
            config.learning_rate,
            config.batch_size,
            self.total_steps,
            config.learning_rate_warmup_fraction,
        )
        schedules.create_optimizer_slots(self.optimizer, variables)

    def dataset_fn(self, start_step: int):
        def make(input_context):
            dataset = self.data.make(
                self.train_split,
                self.config.batch_size,
                training=True,
                seed=self.config.seed,
                input_context=input_context,
            )
            return dataset.skip(start_step)

        return make


class StandaloneTask(SingleModelTask):
    """Trains `build_model(architecture)` with the reference recipe."""

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.epochs = self.total_steps * config.batch_size / self.train_examples
        self.dropout_rate = (
            config.dropout_rate
            if config.dropout_rate is not None
            else default_dropout_rate(self.epochs, self.architecture)
        )

    def build(self, strategy: tf.distribute.Strategy) -> None:
        config = self.config
        self.num_replicas = strategy.num_replicas_in_sync
        self.model = build_model(
            self.architecture,
            num_classes=self.data.num_classes,
            input_shape=(config.image_size, config.image_size, 3),
            dropout_rate=self.dropout_rate,
            zero_init_residual=config.zero_init_residual,
        )
        if config.init_from_supernet:
            copy_weights_from_supernet(self.model, self.architecture, config.init_from_supernet)
        self._build_optimizer(self.model.trainable_variables)
        self.averages = None
        if config.weight_ema:
            self.averages = [
                tf.Variable(v, trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name="ema")
                for v in self.model.variables
            ]

    def checkpoint_items(self) -> dict:
        items = {"model": self.model, "optimizer": self.optimizer}
        if self.averages is not None:
            items["weight_averages"] = self.averages
        return items

    def replica_step(self, inputs, step, phase=None) -> dict:
        images, labels = inputs
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            cross_entropy = classification_loss(labels, logits, self.config.label_smoothing)
            regularization = self.config.weight_decay / 2 * kernel_l2(self.model)
            loss = cross_entropy + regularization
            scaled = loss / self.num_replicas  # optimizers sum gradients across replicas
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        if self.averages is not None:
            decay = self.config.weight_ema
            for average, variable in zip(self.averages, self.model.variables):
                average.assign(decay * average + (1.0 - decay) * variable)
        return {
            "loss": loss,
            "cross_entropy": cross_entropy,
            "regularization_loss": regularization,
            "train_accuracy": top1_accuracy(labels, logits),
        }

    progress_names = ("loss", "train_accuracy")

    def finalize(self, model_dir: str, history: list) -> dict:
        if self.averages is not None:
            for average, variable in zip(self.averages, self.model.variables):
                variable.assign(average)
        metrics = evaluate(self.model, self.data, self.eval_split, self.config.batch_size, self.config.eval_batches)
        self.model.save_weights(os.path.join(model_dir, "model.weights.h5"))
        architecture = self.architecture
        result = {
            "architecture": architecture.to_dict()
            if isinstance(architecture, Architecture)
            else {"reference": architecture},
            "protocol": self.config.protocol,
            "eval_split": self.eval_split,
            "steps": self.total_steps,
            "epochs": self.epochs,
            "dropout_rate": self.dropout_rate,
            "params": int(self.model.count_params()),
            **metrics,
            "final_train_loss": history[-1]["loss"] if history else None,
            "config": dataclasses.asdict(self.config),
        }
        write_atomic(os.path.join(model_dir, "train_result.json"), json.dumps(result, indent=2))
        return result


def evaluate(model: keras.Model, data, split: str, batch_size: int, max_batches: Optional[int] = None) -> dict:
    """Top-1 / top-5 accuracy and mean loss of `model` on one pass over `split`."""
    dataset = data.make(split, batch_size, training=False, repeat=False)
    if max_batches:
        dataset = dataset.take(max_batches)

    @tf.function
    def batch_stats(images, labels):
        logits = model(images, training=False)
        labels = tf.cast(labels, tf.int32)
        top5 = tf.math.in_top_k(labels, logits, k=min(5, int(logits.shape[-1])))
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        top1 = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        return tf.reduce_sum(tf.cast(top1, tf.float32)), tf.reduce_sum(tf.cast(top5, tf.float32)), tf.reduce_sum(loss)

    totals = np.zeros(3)
    count = 0
    for images, labels in dataset:
        totals += [float(value) for value in batch_stats(images, labels)]
        count += int(labels.shape[0])
    if count == 0:
        raise ValueError(f"Invalid evaluation: split {split!r} yielded no examples.")
    return {
        "top1": totals[0] / count,
        "top5": totals[1] / count,
        "eval_loss": totals[2] / count,
        "eval_examples": count,
    }


def supernet_source(architecture, search_dir: str, config_class: type = SearchConfig) -> tuple:
    """`(search config, checkpoint path)` of the search in `search_dir` that `architecture` can start
    from; a ValueError naming `init_from_supernet` otherwise (cheap: reads config.json only).

    `config_class`: the search's config dataclass (e.g. `detection.config.DetectionSearchConfig`).
    """
    if not isinstance(architecture, Architecture):
        raise ValueError(
            "Invalid value for argument `init_from_supernet`: only searched architectures (points of a space) can "
            f"start from supernet weights. Received a reference name: {architecture!r}"
        )
    search_config, checkpoint_path = read_search_config(search_dir, "init_from_supernet", config_class)
    if search_spaces.get_search_space(search_config.space).name != architecture.space:
        raise ValueError(
            f"Invalid value for argument `init_from_supernet`: the search used space {search_config.space!r}, "
            f"the architecture is of space {architecture.space!r}."
        )
    return search_config, checkpoint_path


def copy_weights_from_supernet(model: keras.Model, architecture, search_dir: str) -> None:
    """Initialises `model` from the shared weights of the search in `search_dir` (child extraction)."""
    search_config, checkpoint_path = supernet_source(architecture, search_dir)
    input_shape = tuple(model.input_shape[1:])
    supernet = load_search_supernet(search_config, checkpoint_path, int(model.output_shape[-1]), input_shape)
    child = supernet.extract_child(architecture, input_shape=input_shape)
    model.set_weights(child.get_weights())
