"""Detection as Trainer tasks: standalone SSDLite training and the TuNAS detection search.

`DetectionTask` trains `build_detector(architecture)` (the classification recipe's optimizer,
schedule and weight decay — `weight_decay / 2 · Σw²` over every kernel; focal + smooth-L1 loss)
and reports COCO mAP from `COCOEvaluator` at the end, and every `eval_every` steps if asked.
`DetectionSearchTask` is `SearchTask` (K architectures per step, warmup-mask scoring, RL
schedule, `CrossSampleAdam`) through its hooks: the detection supernet (backbone supernet +
SSDLite head), the detection loss for each micro-batch's shared-weight step, the backbone +
head latency (`detection.cost`, with `mask_cost` for warmup masks) and this quality signal:

    Q(α) = exp(-L(α)),  L = focal + box loss of α on its validation group (batch statistics)

It is cheap (one forward pass, the targets come with the data), monotone in the loss, and in
(0, 1] like the accuracy the paper's β = -0.1 was chosen for. docs/detection.md records how it
ranks architectures against mAP.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import tensorflow as tf

from detection.config import DetectionSearchConfig, DetectionTrainConfig
from detection.cost import DetectionCostModel, mobilenet_v3_large_ssdlite_cost
from detection.datasets import get_detection_dataset
from detection.evaluation import DetectionEvaluator
from detection.losses import LossConfig, detection_loss
from detection.model import PostprocessConfig, build_detector
from detection.supernet import build_detection_supernet
from tunas_keras.models.standalone import kernel_weights
from tunas_keras.schema import Architecture
from tunas_keras.training.search_task import SearchTask
from tunas_keras.training.standalone_task import SingleModelTask, supernet_source
from tunas_keras.training.trainer import prepare_task, run_task, write_atomic

RESULT_FILE = "detection_result.json"
LOSS_NAMES = ("detection_loss", "class_loss", "box_loss")


def detection_data_from_config(config):
    """The detection dataset named by a run config."""
    return get_detection_dataset(
        config.dataset,
        image_size=config.image_size,
        seed=config.seed,
        held_out_fraction=config.held_out_fraction,
        data_dir=config.data_dir,
    )


def loss_config(config) -> LossConfig:
    return LossConfig(config.focal_alpha, config.focal_gamma, box_loss_weight=config.box_loss_weight)


def postprocess_config(config) -> PostprocessConfig:
    return PostprocessConfig(config.score_threshold, config.nms_iou_threshold, config.max_detections)


def detection_metrics(outputs, labels, num_classes: int, config, regularization) -> dict:
    """`{"loss": detection loss + regularization, "detection_loss", "class_loss", "box_loss",
    "regularization_loss"}` of a batch (scalars)."""
    losses = detection_loss(outputs, labels, num_classes, loss_config(config))
    return {
        "loss": losses["loss"] + regularization,
        "detection_loss": losses["loss"],
        "class_loss": losses["class_loss"],
        "box_loss": losses["box_loss"],
        "regularization_loss": regularization,
    }


def detector_kernel_l2(model) -> tf.Tensor:
    """Σw² over every convolution kernel of a detector (it has no classifier to leave out)."""
    return tf.add_n([tf.reduce_sum(tf.square(kernel)) for kernel in kernel_weights(model)])


class DetectionTask(SingleModelTask):
    """Trains and evaluates one standalone SSDLite detector (see the module docstring)."""

    progress_names = ("loss", "class_loss", "box_loss")
    search_config_class = DetectionSearchConfig

    def __init__(self, config: DetectionTrainConfig, data=None):
        """`data`: a `DetectionDataset` to use instead of the one `config` names."""
        self._given_data = data
        super().__init__(config)
        self.evaluations = []
        self.evaluator = None

    def _make_data(self):
        return self._given_data or detection_data_from_config(self.config)

    def build(self, strategy: tf.distribute.Strategy) -> None:
        config = self.config
        self.num_replicas = strategy.num_replicas_in_sync
        shape = (config.image_size, config.image_size, 3)
        self.model = build_detector(
            self.architecture, self.data.num_classes, shape, self.data.anchor_config, config.zero_init_residual
        )
        if config.init_from_supernet:
            self.model.set_weights(searched_detector(config.init_from_supernet, self.architecture, shape).get_weights())
        self._build_optimizer(self.model.trainable_variables)

    def checkpoint_items(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer}

    def replica_step(self, inputs, step, phase=None) -> dict:
        images, labels = inputs
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            regularization = self.config.weight_decay / 2 * detector_kernel_l2(self.model)
            outputs = self.model(images, training=True)
            metrics = detection_metrics(outputs, labels, self.data.num_classes, self.config, regularization)
            scaled = metrics["loss"] / self.num_replicas  # optimizers sum gradients across replicas
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return metrics

    def evaluate(self) -> dict:
        """COCO metrics of the current weights on the evaluation split (decoding traced once)."""
        if self.evaluator is None:
            config = self.config
            self.evaluator = DetectionEvaluator(
                lambda images: self.model(images, training=False),
                self.data,
                self.eval_split,
                config.eval_batch_size,
                config.eval_batches,
                postprocess_config(config),
            )
        return self.evaluator.evaluate()

    def write_summaries(self, step: int) -> None:
        every = self.config.eval_every
        if every and step % every == 0 and step < self.total_steps:
            metrics = self.evaluate()
            self.evaluations.append({"step": step, **metrics})
            for name in ("AP", "AP50", "AP75"):
                tf.summary.scalar(f"eval/{name}", metrics[name])

    def finalize(self, model_dir: str, history: list) -> dict:
        metrics = self.evaluate()
        with warnings.catch_warnings():
            # The .h5 file stores the model config; Model Garden's head config holds TF (not Keras)
            # initialisers, which Keras warns about. The weights themselves are unaffected.
            warnings.simplefilter("ignore", UserWarning)
            self.model.save_weights(os.path.join(model_dir, "model.weights.h5"))
        architecture = self.architecture
        described = architecture.to_dict() if isinstance(architecture, Architecture) else {"reference": architecture}
        result = {
            "task": "detection",
            "architecture": described,
            "dataset": self.config.dataset,
            "num_classes": self.data.num_classes,
            "image_size": self.config.image_size,
            "protocol": self.config.protocol,
            "eval_split": self.eval_split,
            "steps": self.total_steps,
            "params": int(self.model.count_params()),
            **metrics,
            "evaluations": self.evaluations,
            "final_train_loss": history[-1]["loss"] if history else None,
            "config": dataclasses.asdict(self.config),
        }
        write_atomic(os.path.join(model_dir, RESULT_FILE), json.dumps(result, indent=2))
        return result


class DetectionSearchTask(SearchTask):
    """The TuNAS search of a detection backbone (see the module docstring)."""

    train_metric_names = ("loss",) + LOSS_NAMES + ("regularization_loss",)
    quality_name = "valid_quality"
    progress_names = ("loss", "valid_quality", "cost", "most_likely_cost")

    def __init__(self, config: DetectionSearchConfig, data=None):
        """`data`: a `DetectionDataset` to use instead of the one `config` names."""
        self._given_data = data
        super().__init__(config)

    def _make_data(self):
        return self._given_data or detection_data_from_config(self.config)

    def _make_cost_model(self):
        config = self.config
        return DetectionCostModel(self.space, config.cost_model, config.cost_image_size, self.data.num_classes)

    def _default_target_latency(self) -> float:
        if self.cost_model.backbone.name != "pixel1":
            raise ValueError(
                "Invalid value for argument `target_latency`: the default (MobileNetV3-Large + SSDLite) is in "
                f"Pixel-1 ms. Expected a target in the units of cost_model={self.config.cost_model!r} "
                f"({self.cost_model.backbone.units}). Received: target_latency={self.config.target_latency!r}"
            )
        return mobilenet_v3_large_ssdlite_cost(self.config.cost_image_size, self.data.num_classes)

    def _build_supernet(self, shape: tuple):
        config = self.config
        return build_detection_supernet(
            self.space,
            self.data.num_classes,
            shape,
            self.data.anchor_config,
            config.zero_init_residual,
            execution=config.supernet_execution,
        )

    def _micro_batch_loss(self, images, labels, sample_masks, one_hot) -> dict:
        outputs = self.supernet(images, sample_masks, training=True, one_hot=one_hot)
        regularization = self.weight_decay / 2 * self.supernet.regularization_loss(sample_masks)
        return detection_metrics(outputs, labels, self.data.num_classes, self.config, regularization)

    def _quality(self, images, labels, sample_masks, one_hot) -> tf.Tensor:
        """Q(α) = exp(-detection loss) on the validation group (module docstring)."""
        outputs = self.supernet(images, sample_masks, training=False, one_hot=one_hot)
        return tf.exp(-detection_loss(outputs, labels, self.data.num_classes, loss_config(self.config))["loss"])

    def _result_fields(self) -> dict:
        return {
            "task": "detection",
            "cost_model": self.cost_model.name,
            "num_classes": self.data.num_classes,
            "cost_image_size": self.config.cost_image_size,
        }


def searched_detector(search_dir: str, architecture: Architecture, input_shape) -> "tf.keras.Model":
    """The detector of `architecture` with the shared weights of the detection search in `search_dir`."""
    search, checkpoint = supernet_source(architecture, search_dir, DetectionSearchConfig)
    data = detection_data_from_config(search)
    shape = (search.image_size, search.image_size, 3)
    supernet = build_detection_supernet(search.space, data.num_classes, shape, data.anchor_config)
    tf.train.Checkpoint(supernet=supernet).restore(checkpoint).expect_partial()
    return supernet.extract_child(architecture, input_shape=tuple(input_shape))


def prepare_detection_training(config: DetectionTrainConfig) -> DetectionTask:
    """The validated task of `config` (see `trainer.prepare_task`: a UserInputError otherwise)."""
    return prepare_task(DetectionTask, config)


def prepare_detection_search(config: DetectionSearchConfig) -> DetectionSearchTask:
    """The validated task of `config` (see `trainer.prepare_task`: a UserInputError otherwise)."""
    return prepare_task(DetectionSearchTask, config)


def run_detection_training(config: DetectionTrainConfig, strategy=None, stop_after=None, task=None) -> dict:
    """Trains (or resumes) and evaluates a detector; returns `detection_result.json`.

    `task`: the result of `prepare_detection_training(config)` if the caller already validated.
    """
    return run_task(task or prepare_detection_training(config), config, strategy, stop_after)


def run_detection_search(config: DetectionSearchConfig, strategy=None, stop_after=None, task=None) -> dict:
    """Runs (or resumes) a detection search; returns the `architecture.json` dict.

    `task`: the result of `prepare_detection_search(config)` if the caller already validated.
    """
    return run_task(task or prepare_detection_search(config), config, strategy, stop_after)


def next_step_commands(config: DetectionSearchConfig, num_classes: int) -> list:
    """The train → export → latency commands after a detection search, chained through their files
    (as `tunas_keras.training.search.next_step_commands` for classification): train the found
    backbone + SSDLite on the search's data into `<model_dir>/standalone`, export those weights with
    the post-processing op and its parity check, time the `.tflite` on this host."""
    del num_classes  # the detector's classes come from --dataset
    architecture = os.path.join(config.model_dir, "architecture.json")
    train_dir = os.path.join(config.model_dir, "standalone")
    tflite_path = os.path.join(train_dir, "ssdlite.tflite")
    data = f"--dataset={config.dataset} --image_size={config.image_size}"
    if config.data_dir:
        data += f" --data_dir={config.data_dir}"
    zero_init = " --zero_init_residual" if config.zero_init_residual else ""
    return [
        f"python tools/train.py --task=detection --architecture={architecture} {data}{zero_init} "
        f"--model_dir={train_dir}",
        f"python tools/export_tflite.py --task=detection --architecture={architecture} "
        f"--weights={os.path.join(train_dir, 'model.weights.h5')} {data} --output={tflite_path}",
        f"python tools/benchmark_latency.py --model={tflite_path}",
    ]


# `(config class, prepare, run)` of `tools/train.py --task=detection`; `tools/search.py --task=detection`
# adds the next-step commands.
TRAINING = (DetectionTrainConfig, prepare_detection_training, run_detection_training)
SEARCH = (DetectionSearchConfig, prepare_detection_search, run_detection_search, next_step_commands)
