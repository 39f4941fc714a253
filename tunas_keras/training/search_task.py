"""The TuNAS search as a `Task`: one step = sample → weight step → validation reward → REINFORCE.

Per replica and step (all inside `strategy.run` in one `tf.function`), with K =
`architectures_per_step`:
1. split the replica's training batch into K micro-batches; for each (one `tf.while_loop`, so the
   supernet is traced once whatever K), sample an architecture α_k from the controller
   (stateless, seeded by step and global sample index `replica · K + k`), apply op / filter
   warmup and accumulate the gradient of its micro-batch (batch-norm statistics per
   micro-batch); one optimizer step on the mean gradient;
2. split the validation batch (4× larger) into K groups; score each α_k on its group with the
   masks it was trained with (top-1 accuracy Q, batch statistics; during the RL delay these are
   the warmup masks, as the reference);
3. reward_k = f(Q_k, T(α_k)/T0) and one REINFORCE step over all K × replicas samples (baseline
   over their mean, `CrossSampleAdam`).

With several targets (`--target_latency=60,84,110`, `tunas_keras.search.multi_target`) there is
one controller per target: the K samples of a step are divided among them in blocks of K / N,
the shared weights train on all K, and each controller's REINFORCE step uses only its own block,
rewarded against its own target. One target is exactly the search above.

References: Bender et al., CVPR 2020, §4 and Appendix E; design.md §4–§5; google-research
`tunas/mobile_architecture_search.py`.
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
from tunas_keras.search.controller import Sample
from tunas_keras.search.multi_target import TargetPolicies, parse_targets, target_label
from tunas_keras.search.reinforce import rl_delay_steps, rl_learning_rate
from tunas_keras.training import html_report, report, schedules
from tunas_keras.training.config import SearchConfig
from tunas_keras.training.trainer import Task, write_atomic

_SEED_STRIDE = 1_000_003  # keeps the per-purpose seed streams apart
_UNIFORM_STREAM = 1  # folded into a sample's seed for its uniform weight-training draw
# Steps after op warmup from which a second (one-hot) step graph pays for its tracing.
ONE_HOT_GRAPH_MIN_STEPS = 500
# The checkpoint kept at the RL start (`checkpoints/rl_start`): the weights the warmup trained.
RL_START_CHECKPOINT = "rl_start"
# The reference's default search weight decay: 3e-5 for the MobileNetV3-like space (which it
# trains in bfloat16), 4e-5 for the others (`mobile_architecture_search.py`).
SEARCH_WEIGHT_DECAY = {"mobilenet_v3_like": 3e-5}
DEFAULT_SEARCH_WEIGHT_DECAY = 4e-5


def default_search_weight_decay(space) -> float:
    """The reference's search weight decay for `space` (a `SearchSpace` or its name)."""
    return SEARCH_WEIGHT_DECAY.get(get_search_space(space).name, DEFAULT_SEARCH_WEIGHT_DECAY)


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
    return execution == "mask" and _has_accelerator()


def _has_accelerator() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


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
    """A TuNAS search over `config.space` (or `space`, e.g. a custom `SearchSpace`) on `config.dataset`.

    Another task with its own data, supernet and quality signal (the detection search,
    `detection.tasks`) reuses the step by overriding the hooks: `_make_data`,
    `_make_cost_model`, `_default_target_latency`, `_build_supernet` (construction),
    `_micro_batch_loss` (the weight loss of one micro-batch, with `train_metric_names`) and
    `_quality` (Q of one validation group, reported as `quality_name`), `_result_fields`
    (extra fields of `architecture.json`). Labels may be nested structures of tensors.
    """

    # What `_micro_batch_loss` returns, averaged over the K micro-batches; "loss" is differentiated.
    train_metric_names = ("loss", "cross_entropy", "regularization_loss", "train_accuracy")
    quality_name = "valid_accuracy"

    def __init__(self, config: SearchConfig, space=None):
        self.config = config
        self.space = get_search_space(space if space is not None else config.space)
        self.data = self._make_data()
        self.cost_model = self._make_cost_model()
        # One cost target per controller; `target_latency` is the first (a single search's only) one.
        # (The task's default is computed only when needed: detection's can refuse a cost model.)
        default = self._default_target_latency() if config.target_latency is None else None
        self.targets = parse_targets(config.target_latency, default)
        self.target_latency = self.targets[0]
        self.target_labels = [target_label(target, self.cost_model.units) for target in self.targets]
        self.architectures_per_step = int(config.architectures_per_step)
        if self.architectures_per_step < 1:
            raise ValueError(
                "Invalid value for argument `architectures_per_step`. Expected an int >= 1. "
                f"Received: architectures_per_step={config.architectures_per_step!r}"
            )
        if self.architectures_per_step % len(self.targets):
            raise ValueError(
                f"Invalid value for argument `architectures_per_step`: {self.architectures_per_step} architectures "
                f"per step do not divide among {len(self.targets)} targets (target_latency="
                f"{','.join(f'{target:g}' for target in self.targets)}). Expected a multiple of {len(self.targets)}. "
                f"Received: architectures_per_step={self.architectures_per_step}"
            )
        self.uniform_architectures_per_step = int(config.uniform_architectures_per_step)
        if not 0 <= self.uniform_architectures_per_step <= self.architectures_per_step:
            raise ValueError(
                "Invalid value for argument `uniform_architectures_per_step`. Expected an int in [0, "
                f"architectures_per_step={self.architectures_per_step}]. "
                f"Received: uniform_architectures_per_step={config.uniform_architectures_per_step!r}"
            )
        if len(self.targets) > 1:
            self.progress_names = ("loss", "valid_accuracy", "cost") + tuple(
                f"most_likely_{label}" for label in self.target_labels
            )
        self.weight_decay = (
            config.weight_decay if config.weight_decay is not None else default_search_weight_decay(self.space)
        )
        self.total_steps = total_steps_for(
            config.steps, config.epochs, self.data.num_examples("train"), config.batch_size
        )
        self.rl_delay = rl_delay_steps(self.total_steps, config.rl_delay_fraction)
        self.warmup_steps = schedules.warmup_steps(self.total_steps, config.warmup_fraction)
        if (config.op_warmup or config.filter_warmup) and self.warmup_steps > self.rl_delay:
            # As the reference: the controller must not learn from warmup-modified samples.
            raise ValueError(
                "Invalid value for argument `warmup_fraction`: op / filter warmup "
                f"({self.warmup_steps} steps) cannot be longer than the RL delay ({self.rl_delay} steps). "
                f"Expected warmup_fraction <= rl_delay_fraction. Received: warmup_fraction={config.warmup_fraction}, "
                f"rl_delay_fraction={config.rl_delay_fraction}"
            )
        self.validation_batch_size = config.batch_size * config.validation_batch_multiplier

    # -- construction hooks -------------------------------------------------------------------
    def _make_data(self):
        """The dataset (called in `__init__` after `config` and `space` are set)."""
        return dataset_from_config(self.config)

    def _make_cost_model(self):
        """The cost model of the reward; it needs `mask_cost` (warmup masks are scored)."""
        return cost_models.get_cost_model(self.config.cost_model, self.space)

    def _default_target_latency(self) -> float:
        """T0 when `config.target_latency` is not set."""
        return self.space.target_latency

    def _build_supernet(self, shape: tuple):
        """The weight-sharing model, every variable created; it has an `execution` attribute."""
        config = self.config
        return build_supernet(
            self.space,
            num_classes=self.data.num_classes,
            input_shape=shape,
            zero_init_residual=config.zero_init_residual,
            execution=config.supernet_execution,
        )

    def build(self, strategy: tf.distribute.Strategy) -> None:
        config = self.config
        self.num_replicas = strategy.num_replicas_in_sync
        self._check_batch_sizes()
        self.supernet = self._build_supernet((config.image_size, config.image_size, 3))
        self._logit_functions = {}  # `_logits`: (dropout on, one-hot) -> traced forward pass
        self.jit_compile = _use_xla(config.jit_compile, self.supernet.execution)
        # Grappler on CPU-only hosts: ~4.5 s of the first step, no faster steps (docs/benchmarks.md).
        self.graph_optimizations = _has_accelerator()
        logging.info(
            "Supernet execution: %s%s (--supernet_execution=%s)",
            self.supernet.execution,
            " with XLA" if self.jit_compile else "",
            config.supernet_execution,
        )
        self.optimizer = schedules.make_optimizer(
            config.optimizer,
            config.learning_rate,
            config.batch_size,
            self.total_steps,
            config.learning_rate_warmup_fraction,
        )
        # Slots now, not in the first step: a tf.function that creates variables traces twice.
        schedules.create_optimizer_slots(self.optimizer, self.supernet.trainable_variables)
        self.policies = TargetPolicies(
            self.space,
            self.targets,
            self.architectures_per_step,
            reward=config.reward,
            beta=config.beta,
            entropy_weight=config.entropy_weight,
        )
        # The first target's (a single search's only) controller and REINFORCE update.
        self.controller, self.reinforce = self.policies.controllers[0], self.policies.reinforces[0]
        # Constant padded logits of the uniform policy (`_uniform_sample`), computed once.
        self._uniform_logits = self.controller.padded_logits(tf.zeros_like(self.controller.flat_logits()))
        self.rl_base_learning_rate = schedules.scaled_learning_rate(config.rl_learning_rate, config.batch_size)

    def _check_batch_sizes(self) -> None:
        count = self.num_replicas * self.architectures_per_step
        sizes = (("batch_size", self.config.batch_size), ("validation batch", self.validation_batch_size))
        for argument, size in sizes:
            if size % count:
                raise ValueError(
                    f"Invalid value for argument `{argument}`: {size} images do not split into "
                    f"{self.num_replicas} replica(s) x {self.architectures_per_step} architectures per step. "
                    f"Expected a multiple of {count}. Received: batch_size={self.config.batch_size}, "
                    f"architectures_per_step={self.architectures_per_step}"
                )

    def checkpoint_items(self) -> dict:
        items = {"supernet": self.supernet, "optimizer": self.optimizer}
        if len(self.targets) == 1:  # the layout of single-target checkpoints
            return {**items, "controller": self.controller, "reinforce": self.reinforce}
        for index, (controller, reinforce) in enumerate(zip(self.policies.controllers, self.policies.reinforces)):
            items[f"controller_{index}"], items[f"reinforce_{index}"] = controller, reinforce
        return items

    def kept_checkpoints(self) -> dict:
        # The shared weights as the warmup left them, before the policy starts to specialise them.
        return {self.rl_delay: RL_START_CHECKPOINT} if 0 < self.rl_delay < self.total_steps else {}

    def dataset_fn(self, start_step: int):
        config, data = self.config, self.data

        def make(input_context):
            train = data.make("train", config.batch_size, training=True, seed=config.seed, input_context=input_context)
            valid = data.make(
                "valid", self.validation_batch_size, training=False, seed=config.seed + 1, input_context=input_context
            )
            return tf.data.Dataset.zip((train, valid)).skip(start_step)

        return make

    def _seed(self, step, index):
        """Stateless seed of this step and global sample `replica · K + index` (resumes draw the same)."""
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        sample = replica * self.architectures_per_step + tf.cast(index, tf.int64)
        return tf.stack([tf.cast(step, tf.int64) * _SEED_STRIDE + self.config.seed, sample])

    def phase(self, step: int) -> str:
        """ "op_warmup" while op warmup may make op masks fractional, then "one_hot".

        One step function per phase: the one-hot graph runs each kernel-size choice as one
        merged convolution (`tunas_keras.layers.choice`), exact only for one-hot masks. It saves
        ~7 % of a step but costs a second trace (tens of seconds on a CPU), so a search switches
        to it only with at least `ONE_HOT_GRAPH_MIN_STEPS` steps left (docs/benchmarks.md).
        """
        if not self.config.op_warmup:
            return "one_hot"
        warm = float(schedules.warmup_probability(step, self.total_steps, self.config.warmup_fraction)) > 0.0
        warmup_end = schedules.warmup_steps(self.total_steps, self.config.warmup_fraction)
        if warm or self.total_steps - warmup_end < ONE_HOT_GRAPH_MIN_STEPS:
            return "op_warmup"
        return "one_hot"

    def _split(self, tensors):
        """`[K · n, ...]` -> `[K, n, ...]` (the K micro-batches / validation groups) for each tensor of a structure."""

        def split(tensor):
            return tf.reshape(tensor, [self.architectures_per_step, -1] + tensor.shape[1:].as_list())

        return tf.nest.map_structure(split, tensors)

    @staticmethod
    def _group(tensors, index):
        """Micro-batch / validation group `index` of a structure split by `_split`."""
        return tf.nest.map_structure(lambda tensor: tensor[index], tensors)

    def _micro_batch_loss(self, images, labels, sample_masks, one_hot) -> dict:
        """The weight loss of one micro-batch under one sample's masks (inside the gradient tape).

        Returns:
          `{name: scalar}` for every name of `train_metric_names`; `"loss"` is differentiated.
        """
        logits = self._logits(images, sample_masks, training=True, one_hot=one_hot)
        cross_entropy = classification_loss(labels, logits, self.config.label_smoothing)
        # The reference's l2(weight_decay / 2) over the active non-classifier kernels.
        regularization = self.weight_decay / 2 * self.supernet.regularization_loss(sample_masks)
        return {
            "loss": cross_entropy + regularization,
            "cross_entropy": cross_entropy,
            "regularization_loss": regularization,
            "train_accuracy": top1_accuracy(labels, logits),
        }

    def _quality(self, images, labels, sample_masks, one_hot) -> tf.Tensor:
        """Q(α) of one sample on its validation group: top-1 accuracy (batch statistics)."""
        logits = self._logits(images, sample_masks, training=False, one_hot=one_hot)
        return top1_accuracy(labels, logits)

    def _logits(self, images, sample_masks, training, one_hot) -> tf.Tensor:
        """The supernet's logits, through one `tf.function` per (dropout on, one-hot) setting.

        The training micro-batches and the validation groups call the same traced function (its
        batch dimension is left open), so the supernet's forward pass is traced once per setting
        instead of once per caller (~0.4 s less start-up at the demo's size; docs/benchmarks.md).
        Without dropout `training` changes nothing in the supernet (batch norm always uses batch
        statistics), so both callers share one trace. The numbers are those of a direct call.
        """
        training = bool(training) and self.supernet.dropout is not None
        key = (training, bool(one_hot))
        if key not in self._logit_functions:
            supernet = self.supernet
            signature = [
                tf.TensorSpec([None, *images.shape[1:]], images.dtype),
                [tf.TensorSpec([count], tf.float32) for count in self.space.num_choices],
            ]

            def logits(batch, masks):
                return supernet(batch, list(masks), training=training, one_hot=bool(one_hot))

            self._logit_functions[key] = tf.function(logits, input_signature=signature, autograph=False)
        return self._logit_functions[key](images, [tf.cast(mask, tf.float32) for mask in sample_masks])

    def _micro_batch_gradients(self, images, labels, step, op_probability, filter_probability, one_hot):
        """Samples K architectures and sums the gradients of their micro-batches (one traced loop body).

        Each micro-batch's loss is differentiated times `1 / (K · replicas)`, so the sums are the
        step's gradients (the mean over micro-batches; optimizers sum across replicas). Scaling
        the loss, not the K sums, saves two ops per variable in the traced step; for K · replicas
        a power of two the result is the same bit for bit.

        Returns:
          `(gradients, sums of the `train_metric_names` values [M], Sample of [K, ...])`.
        """
        loss_scale = 1.0 / (self.architectures_per_step * self.num_replicas)
        variables = self.supernet.trainable_variables
        count = self.architectures_per_step
        fields = [
            tf.TensorArray(dtype, size=count, element_shape=shape)
            for dtype, shape in (
                (tf.int32, [self.space.num_decisions]),
                (tf.float32, [self.space.num_decisions, max(self.space.num_choices)]),
                (tf.bool, [self.space.num_decisions]),
                (tf.float32, [self.space.num_decisions]),
            )
        ]

        def body(index, gradient_sums, stat_sums, fields):
            seed = self._seed(step, index)
            sample = self.policies.sample_with_warmup(index, seed, op_probability, filter_probability)
            trained_masks = sample.masks
            if self.uniform_architectures_per_step:
                uniform = self._uniform_sample(step, index, op_probability, filter_probability)
                trained_masks = tf.where(index < self.uniform_architectures_per_step, uniform.masks, sample.masks)
            sample_masks = masks.unpad_masks(self.space, trained_masks)
            with tf.GradientTape() as tape:
                metrics = self._micro_batch_loss(images[index], self._group(labels, index), sample_masks, one_hot)
                scaled_loss = metrics["loss"] * loss_scale
            gradients = tape.gradient(scaled_loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradient_sums = [total + tf.convert_to_tensor(g) for total, g in zip(gradient_sums, gradients)]
            stats = tf.stack([tf.cast(metrics[name], tf.float32) for name in self.train_metric_names])
            fields = [array.write(index, value) for array, value in zip(fields, sample)]
            return index + 1, gradient_sums, stat_sums + stats, fields

        _, gradient_sums, stat_sums, fields = tf.while_loop(
            lambda index, *_: index < count,
            body,
            (tf.constant(0), [tf.zeros_like(v) for v in variables], tf.zeros([len(self.train_metric_names)]), fields),
            parallel_iterations=1,
        )
        return gradient_sums, stat_sums, Sample(*(array.stack() for array in fields))

    def _uniform_sample(self, step, index, op_probability, filter_probability) -> Sample:
        """A uniformly drawn architecture (with the step's warmup) for micro-batch `index`'s weights;
        its seed is folded from the policy sample's, so no replica's policy draw shares it."""
        seed = tf.random.experimental.stateless_fold_in(self._seed(step, index), _UNIFORM_STREAM)
        return self.controller.sample_with_warmup(
            seed, op_probability, filter_probability, padded_logits=self._uniform_logits
        )

    def _qualities(self, images, labels, samples: Sample, one_hot):
        """`_quality` of each sample on its validation group, `[K]` (one traced loop body)."""

        def score(index):
            sample_masks = masks.unpad_masks(self.space, samples.masks[index])
            return tf.cast(self._quality(images[index], self._group(labels, index), sample_masks, one_hot), tf.float32)

        return tf.map_fn(
            score, tf.range(self.architectures_per_step), fn_output_signature=tf.float32, parallel_iterations=1
        )

    def search_step(self, inputs, step, phase="op_warmup") -> dict:
        """One search step on this replica; per-sample values are `[K]` tensors (see the module docstring)."""
        (train_images, train_labels), (valid_images, valid_labels) = inputs
        probability = schedules.warmup_probability(step, self.total_steps, self.config.warmup_fraction)
        op_probability = probability if self.config.op_warmup else 0.0
        filter_probability = probability if self.config.filter_warmup else 0.0
        gradients, stat_sums, samples = self._micro_batch_gradients(
            self._split(train_images),
            self._split(train_labels),
            step,
            op_probability,
            filter_probability,
            one_hot=phase == "one_hot",
        )
        self.optimizer.apply_gradients(zip(gradients, self.supernet.trainable_variables))
        quality = self._qualities(self._split(valid_images), self._split(valid_labels), samples, phase == "one_hot")
        cost = self.cost_model.mask_cost(samples.masks)
        reward = self.policies.reward(quality, cost)
        learning_rate = rl_learning_rate(
            step, self.total_steps, self.rl_base_learning_rate, self.config.rl_delay_fraction
        )
        target_stats = self.policies.step(samples, reward, learning_rate)
        rl_stats = target_stats[0] if len(target_stats) == 1 else _mean_stats(target_stats)
        means = tf.unstack(stat_sums / float(self.architectures_per_step))
        return {
            "samples": samples,
            "quality": quality,
            "cost": cost,
            "reward": reward,
            **dict(zip(self.train_metric_names, means)),
            "rl_learning_rate": learning_rate,
            "warmup_probability": probability,
            "rl": rl_stats,
            # Several targets: each one's statistics (not with one: the graph stays the single-target one).
            **({"rl_per_target": target_stats} if len(target_stats) > 1 else {}),
        }

    def replica_step(self, inputs, step, phase=None) -> dict:
        result = self.search_step(inputs, step, phase or self.phase(0))
        cost = tf.reduce_mean(result["cost"])
        return {
            **{name: result[name] for name in self.train_metric_names},
            self.quality_name: tf.reduce_mean(result["quality"]),
            "reward": tf.reduce_mean(result["reward"]),
            "cost": cost,
            "cost_ratio": cost / self.target_latency,
            "rl_learning_rate": tf.cast(result["rl_learning_rate"], tf.float32),
            "warmup_probability": result["warmup_probability"],
            "learning_rate": tf.cast(self.optimizer.learning_rate(self.optimizer.iterations), tf.float32),
            **{key: tf.cast(value, tf.float32) for key, value in result["rl"].items() if key not in ("loss", "reward")},
            **(self._target_metrics(result) if len(self.targets) > 1 else {}),
        }

    def _target_metrics(self, result) -> dict:
        """Per-target means of a multi-target step (`target_<label>/cost`, ...) and the mean cost ratio."""
        split, metrics, ratios = self.policies.split, {}, []
        blocks = zip(split(result["cost"]), split(result["quality"]), split(result["reward"]), result["rl_per_target"])
        for label, target, (cost, quality, reward, stats) in zip(self.target_labels, self.targets, blocks):
            prefix = f"target_{label}/"
            ratios.append(tf.reduce_mean(cost) / target)
            metrics.update(
                {
                    prefix + "cost": tf.reduce_mean(cost),
                    prefix + "cost_ratio": ratios[-1],
                    prefix + "valid_accuracy": tf.reduce_mean(quality),
                    prefix + "reward": tf.reduce_mean(reward),
                    prefix + "baseline": stats["baseline"],
                    prefix + "entropy": stats["entropy"],
                }
            )
        metrics["cost_ratio"] = tf.reduce_mean(tf.stack(ratios))  # each sample against its own target
        return metrics

    def most_likely(self):
        """The first (a single search's only) target's argmax architecture and its cost."""
        return self.most_likely_per_target()[0]

    def most_likely_per_target(self) -> list:
        """`(architecture, cost)` of every target's controller's argmax, in the order of the targets."""
        results = []
        for controller in self.policies.controllers:
            architecture = controller.most_likely_architecture()
            results.append((architecture, float(self.cost_model.cost(architecture))))
        return results

    def write_summaries(self, step: int) -> None:
        single = len(self.targets) == 1
        for label, target, controller, (_, cost) in zip(
            self.target_labels, self.targets, self.policies.controllers, self.most_likely_per_target()
        ):
            prefix = "" if single else f"target_{label}/"
            tf.summary.scalar(prefix + "most_likely/cost", cost)
            tf.summary.scalar(prefix + "most_likely/cost_ratio", cost / target)
            for position, (decision, probabilities) in enumerate(zip(self.space.decisions, controller.probabilities())):
                if decision.num_choices == 1:
                    continue
                values = np.asarray(probabilities)
                name = f"{prefix}decisions/{position:02d}_{decision.tag}"
                entropy = float(-(values * np.log(np.maximum(values, 1e-12))).sum())
                tf.summary.scalar(name + "/entropy", entropy)
                for choice, value in enumerate(values):
                    tf.summary.scalar(f"{name}/p{choice}", float(value))

    progress_names = ("loss", "valid_accuracy", "cost", "most_likely_cost")

    def progress_values(self, metrics: dict) -> list:
        keys = ("loss", self.quality_name, "cost")
        values = [(key, metrics[key]) for key in keys]
        if len(self.targets) == 1:
            return values + [("most_likely_cost", self.most_likely()[1])]
        costs = [cost for _, cost in self.most_likely_per_target()]
        return values + [(f"most_likely_{label}", cost) for label, cost in zip(self.target_labels, costs)]

    def _result_fields(self) -> dict:
        """Extra fields of `architecture.json` (a subclass's task, dataset, ...)."""
        return {}

    def finalize(self, model_dir: str, history: list) -> dict:
        """Writes the outputs (see `architecture_file_name`); returns the architecture.json dict.

        The returned dict also holds "architectures": one entry per target (as in the index
        file architectures.json). With several targets it has no single "indices" / "cost".
        """
        if len(self.targets) > 1:
            return self._finalize_targets(model_dir, history)
        architecture, cost = self.most_likely()
        result = {
            **architecture.to_dict(),
            "cost": cost,
            "cost_model": self.config.cost_model,
            "target_latency": self.target_latency,
            "config": dataclasses.asdict(self.config),
            **self._result_fields(),
        }
        write_atomic(os.path.join(model_dir, "architecture.json"), json.dumps(result, indent=2))
        probabilities = [np.asarray(p).tolist() for p in self.controller.probabilities()]
        log = {"history": history, "final_probabilities": probabilities, "architecture": result}
        write_atomic(os.path.join(model_dir, "search_log.json"), json.dumps(log))
        report.write_search_report(os.path.join(model_dir, "report.png"), self.space, history, probabilities, result)
        html_report.write_html_report(
            os.path.join(model_dir, "report.html"), self.space, history, probabilities, result
        )
        entries = self._write_index(model_dir, [result])
        return {**result, "architectures": entries}

    def architecture_file_name(self, index: int) -> str:
        """ "architecture.json" for a single target, else "architecture_<label>.json" (e.g. architecture_84ms.json)."""
        return "architecture.json" if len(self.targets) == 1 else f"architecture_{self.target_labels[index]}.json"

    def _write_index(self, model_dir: str, results: list) -> list:
        """Writes architectures.json (one entry per target: file, target, cost, indices); returns the entries."""
        entries = [
            {
                "target_latency": result["target_latency"],
                "label": self.target_labels[index],
                "file": self.architecture_file_name(index),
                "cost": result["cost"],
                "relative_error": result["cost"] / result["target_latency"] - 1.0,
                "indices": result["indices"],
            }
            for index, result in enumerate(results)
        ]
        index = {
            "space": self.space.name,
            "cost_model": self.config.cost_model,
            "units": self.cost_model.units,
            "targets": self.targets,
            "architectures": entries,
        }
        write_atomic(os.path.join(model_dir, "architectures.json"), json.dumps(index, indent=2))
        return entries

    def _finalize_targets(self, model_dir: str, history: list) -> dict:
        """The outputs of a multi-target search: one architecture file per target, the index, the
        search log, report.png (every target), the Pareto front under the final shared weights
        (pareto.json / .png) and report.html (all of it)."""
        from tunas_keras.training import pareto  # pylint: disable=import-outside-toplevel  (imports this module)

        config = dataclasses.asdict(self.config)
        results, probabilities = [], []
        for index, (architecture, cost) in enumerate(self.most_likely_per_target()):
            result = {
                **architecture.to_dict(),
                "cost": cost,
                "cost_model": self.config.cost_model,
                "target_latency": self.targets[index],
                "config": config,
                **self._result_fields(),
            }
            write_atomic(os.path.join(model_dir, self.architecture_file_name(index)), json.dumps(result, indent=2))
            results.append(result)
            controller = self.policies.controllers[index]
            probabilities.append([np.asarray(p).tolist() for p in controller.probabilities()])
        entries = self._write_index(model_dir, results)
        per_target = [
            {"target_latency": result["target_latency"], "final_probabilities": values, "architecture": result}
            for result, values in zip(results, probabilities)
        ]
        write_atomic(
            os.path.join(model_dir, "search_log.json"), json.dumps({"history": history, "targets": per_target})
        )
        report.write_targets_report(
            os.path.join(model_dir, "report.png"), self.space, history, self.target_labels, results, probabilities
        )
        front = pareto.write_search_front(model_dir, self.supernet, self.data, self.cost_model, entries)
        with open(os.path.join(model_dir, "pareto.png"), "rb") as handle:
            pareto_png = handle.read()
        html_report.write_targets_html_report(
            os.path.join(model_dir, "report.html"),
            self.space,
            history,
            self.target_labels,
            results,
            probabilities,
            (front, pareto_png),
        )
        return {
            "space": self.space.name,
            "cost_model": self.config.cost_model,
            "target_latency": self.targets,
            "architectures": entries,
            "pareto": front,
            "config": config,
        }


def _mean_stats(per_target: list) -> dict:
    """The mean over targets of each `Reinforce.step` statistic."""
    return {key: tf.reduce_mean(tf.stack([stats[key] for stats in per_target])) for key in per_target[0]}
