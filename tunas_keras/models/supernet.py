"""The weight-sharing supernet (one-shot model) of a search space, and child extraction.

    >>> supernet = build_supernet("proxyless", num_classes=10, input_shape=(32, 32, 3))
    >>> masks = tunas_keras.masks.one_hot_masks(supernet.space, arch)      # or just `arch`
    >>> logits = supernet(images, masks, training=True)                   # [batch, 10]
    >>> loss += 4e-5 / 2 * supernet.regularization_loss(masks)        # weight decay 4e-5
    >>> child = supernet.extract_child(arch)      # == tunas_keras.build_model(arch) + copied weights

The graph has no control flow: every op decision is the mask-weighted sum of its branches
(`tunas_keras.layers.choice`), which is exact for one-hot masks (a sampled architecture) and
for fractional ones (op warmup). How much of it runs is the *execution mode*:
- `"mask"`: every tensor at its full width, masked channels exactly zero, every branch of a
  choice computed. Static shapes: compiles with XLA (`tf.function(jit_compile=True)`), the
  mode for GPUs and TPUs (no device-to-host copies of predicates).
- `"slice"`: tensors cut to the active channels (`kernel[..., :in, :out]` with tensor-valued
  counts) and branches the sample did not choose run on one channel, so the compute follows
  the sampled child. Dynamic shapes: CPU and GPU without XLA.
- `"auto"`: `AUTO_EXECUTION` by device (see `resolve_execution`).
With `one_hot=True` (the caller promises one-hot op masks) a kernel-size choice runs one
convolution with merged weights instead of one per kernel size (in "slice" at the sampled
kernel size). The modes compute the same logits and gradients for one-hot masks.

Planning (spec → ops, widths, selections) lives in `supernet_plan`, the ops in
`supernet_blocks`, widths and the per-call state in `supernet_widths`.

Batch norm always uses the current batch's statistics (also with `training=False`) and keeps no
moving statistics (the reference's search uses a stateless batch norm too): an extracted child
starts with moving mean 0 / variance 1; re-estimate them before evaluating it with
`training=False`.

References: Bender et al., CVPR 2020, §4.1, §4.3 and Appendix G.
"""

from __future__ import annotations

from typing import Sequence, Union

import tensorflow as tf
import tf_keras as keras
from absl import logging

from tunas_keras.layers.common import classifier_initializer
from tunas_keras.masks import one_hot_masks
from tunas_keras.models.arguments import check_dropout_rate, check_input_shape, check_num_classes
from tunas_keras.models.standalone import DETECTION_ENDPOINTS, ENDPOINT_STRIDES, build_model
from tunas_keras.models.supernet_plan import UNSHARED_SPACES, WEIGHT_SHARING_MODES, plan_supernet
from tunas_keras.models.supernet_widths import EXECUTION_MODES, CallContext
from tunas_keras.registry import get_search_space
from tunas_keras.schema import Architecture, SearchSpace

# Chosen from measurements (docs/benchmarks.md, "Supernet execution modes"): on CPU the sliced
# graph is faster; on GPU / TPU the static-shape graph compiles with XLA.
AUTO_EXECUTION = {"CPU": "slice", "GPU": "mask", "TPU": "mask"}


def resolve_execution(execution: str) -> str:
    """`"mask"` / `"slice"`, or for `"auto"` the mode of the first accelerator found (else CPU's)."""
    if execution not in EXECUTION_MODES + ("auto",):
        raise ValueError(
            f"Invalid value for argument `execution`. Expected one of {EXECUTION_MODES + ('auto',)}. "
            f"Received: execution={execution!r}"
        )
    if execution != "auto":
        return execution
    for device in ("TPU", "GPU"):
        if tf.config.list_logical_devices(device):
            return AUTO_EXECUTION[device]
    return AUTO_EXECUTION["CPU"]


def _check_weight_sharing(space: SearchSpace, weight_sharing: str) -> None:
    if weight_sharing not in WEIGHT_SHARING_MODES:
        raise ValueError(
            f"Invalid value for argument `weight_sharing`. Expected one of {WEIGHT_SHARING_MODES}. "
            f"Received: weight_sharing={weight_sharing!r}"
        )
    if weight_sharing == "none" and space.name not in UNSHARED_SPACES:
        raise ValueError(
            f"Invalid value for argument `weight_sharing`: 'none' is implemented for spaces {UNSHARED_SPACES} only "
            f"(the paper's Appendix-G comparison). Received: weight_sharing='none', space={space.name!r}"
        )


def _padded(features: tf.Tensor, channels: int) -> tf.Tensor:
    """Zero-pads sliced features back to the full width (no op in the "mask" execution), static width."""
    if features.shape[-1] == channels:
        return features
    padded = tf.pad(features, [[0, 0], [0, 0], [0, 0], [0, channels - tf.shape(features)[-1]]])
    # The padding amount is computed: restore the static width (a detection head needs it).
    return tf.ensure_shape(padded, features.shape[:-1].concatenate([channels]))


class Supernet(keras.Model):
    """The one-shot model of a search space; see the module docstring.

    Args:
      space: a search space or its name ("proxyless", "proxyless_enlarged", "mobilenet_v3_like").
      num_classes: classifier outputs.
      input_shape: (height, width, channels) of the images.
      weight_sharing: "aggressive" (TuNAS: shared expand / project convs, channel masking) or
        "none" (ProxylessNAS-style separate paths; space "proxyless" only).
      dropout_rate: dropout before the classifier, in [0, 1).
      zero_init_residual: start the γ of the batch norms that end each residual branch at 0, as
        `build_model(..., zero_init_residual=True)`: every residual block starts as the identity.
      execution: "auto", "mask" or "slice" (module docstring); a call may override it.
      rematerialize: recompute the branches of weighted sums (op warmup) in the backward pass.

    Call arguments:
      images: `(batch, height, width, channels)` float32, the shape given at construction.
      masks: a list of `space.num_decisions` float32 vectors (`tunas_keras.masks` format:
        one-hot, or fractional under op / filter warmup), or an `Architecture`.
      training: whether to apply dropout (batch norm always uses batch statistics).
      one_hot: Python bool; True promises one-hot op masks (module docstring). Filter masks
        may be anything.
      execution: Python str, overrides the supernet's execution mode for this call.

    Returns:
      Logits `(batch, num_classes)`.

    Raises:
      ValueError: an invalid argument.
    """

    def __init__(
        self,
        space: Union[str, SearchSpace] = "proxyless",
        num_classes: int = 1001,
        input_shape=(224, 224, 3),
        weight_sharing: str = "aggressive",
        dropout_rate: float = 0.0,
        zero_init_residual: bool = False,
        execution: str = "auto",
        rematerialize: bool = False,
        **kwargs,
    ):
        space = get_search_space(space)
        _check_weight_sharing(space, weight_sharing)
        num_classes, dropout_rate = check_num_classes(num_classes), check_dropout_rate(dropout_rate)
        shape = check_input_shape(input_shape)
        self.execution = resolve_execution(execution)
        super().__init__(name=kwargs.pop("name", f"supernet_{space.name}"), **kwargs)
        self.space = space
        self.num_classes = num_classes
        self.image_shape = shape
        self.weight_sharing = weight_sharing
        self.dropout_rate = float(dropout_rate)
        self.zero_init_residual = bool(zero_init_residual)
        self.rematerialize = bool(rematerialize)
        self._requested_execution = execution
        plan = plan_supernet(space, shape[-1], weight_sharing, self.rematerialize)
        self._plan = plan
        self.ops = [op for kind, op, _ in plan.entries if kind == "op"]
        self.dropout = keras.layers.Dropout(dropout_rate, name="dropout") if dropout_rate else None
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=classifier_initializer(), name="classifier"
        )

    def build(self, input_shape=None):
        """Creates every variable (all branches) from the planned widths."""
        for op in self.ops:
            op.build(tf.TensorShape([None, None, None, None]))
            if self.zero_init_residual and hasattr(op, "zero_init"):
                op.zero_init()
        self.classifier.build(tf.TensorShape([None, self._plan.feature_width.max_value]))
        self.built = True

    # -- inputs ---------------------------------------------------------------------------
    def _check_masks(self, masks) -> list:
        if isinstance(masks, Architecture):
            return one_hot_masks(self.space, self._check_architecture(masks))
        if not isinstance(masks, (list, tuple)) or len(masks) != self.space.num_decisions:
            received = len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__
            raise ValueError(
                f"Invalid value for argument `masks`. Expected a list of {self.space.num_decisions} mask vectors "
                f"(one per decision of {self.space.name!r}) or an Architecture. Received: {received}"
            )
        checked = []
        for position, (mask, decision) in enumerate(zip(masks, self.space.decisions)):
            mask = tf.convert_to_tensor(mask, tf.float32)
            if mask.shape.rank is not None and mask.shape.as_list() not in ([decision.num_choices], [None]):
                raise ValueError(
                    f"Invalid value for argument `masks`. Expected mask {position} ({decision.name}) of shape "
                    f"({decision.num_choices},). Received: shape={tuple(mask.shape)}"
                )
            checked.append(tf.stop_gradient(tf.reshape(mask, [decision.num_choices])))
        return checked

    def _check_images(self, images) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        shape = images.shape
        expected = (None,) + self.image_shape
        if shape.rank != 4 or any(
            size is not None and want is not None and size != want for size, want in zip(shape.as_list(), expected)
        ):
            raise ValueError(
                "Invalid value for argument `images`. Expected shape "
                f"(batch, {', '.join(map(str, self.image_shape))}). "
                f"Received: images.shape={tuple(shape)}"
            )
        return tf.cast(images, tf.float32)

    def _context(self, masks: Sequence[tf.Tensor], one_hot: bool = False, execution=None) -> CallContext:
        mode = self.execution if execution is None else resolve_execution(execution)
        return CallContext.create(self._plan.widths, self._plan.selections, masks, mode, one_hot)

    # -- forward ----------------------------------------------------------------------------
    def _backbone(self, images, masks, one_hot, execution):
        images = self._check_images(images)
        context = self._context(self._check_masks(masks), one_hot=bool(one_hot), execution=execution)
        features, endpoints = images, {}
        for kind, op, _ in self._plan.entries:
            if kind == "op":
                features = op(features, context=context)
            elif kind == "endpoint":
                endpoints[op] = features
            else:
                features = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        return features, endpoints

    def call(self, images, masks, training=None, one_hot=False, execution=None):
        features, _ = self._backbone(images, masks, one_hot, execution)
        features = tf.reshape(features, [tf.shape(features)[0], -1])
        if self.dropout is not None:
            features = self.dropout(features, training=training)
        kernel = self.classifier.kernel
        if features.shape[-1] != kernel.shape[0]:  # "slice": the active feature channels only
            kernel = kernel[: tf.shape(features)[-1]]
        return tf.nn.bias_add(tf.matmul(features, kernel), self.classifier.bias)

    def features(self, images, masks, training=None, one_hot=False, execution=None) -> dict:
        """Detection endpoints `{"stride_4": ..., "stride_32": ..., "c4": ..., "c5": ...}` (as `build_backbone`).

        Channels are at the supernet's largest width; masked channels are zero.
        """
        del training
        _, endpoints = self._backbone(images, masks, one_hot, execution)
        widths = self._plan.endpoint_widths
        names = [(f"stride_{stride}", stride) for stride in ENDPOINT_STRIDES] + [(n, n) for n in DETECTION_ENDPOINTS]
        return {name: _padded(endpoints[key], widths[key].max_value) for name, key in names if key in endpoints}

    def regularization_loss(self, masks) -> tf.Tensor:
        """Σw² over the ACTIVE kernels, as the reference regularises the one-shot model.

        Multiply by `weight_decay / 2` (the reference's `l2(weight_decay / 2)`, tf.contrib
        semantics). Rule: conv, depthwise and squeeze-excite kernels, not biases, not batch norm,
        and NOT the final classifier (the reference's head has no regulariser). Each kernel is
        masked by its channel masks (0/1 masks: only the active channels count), and each branch
        of an op decision is weighted by its selection weight (one-hot: the chosen branch only;
        op warmup: 1/3 per kernel branch, 1/2 for skip or squeeze-excite, products when nested).
        Shared weights (expand / project) count once.
        """
        context = self._context(self._check_masks(masks), execution="mask")
        return tf.add_n([op.active_l2(context) for op in self.ops])

    # -- child extraction -------------------------------------------------------------------
    def child_weights(self, architecture: Architecture) -> dict:
        """`{standalone layer name: [weights]}` of `architecture`, sliced to its widths."""
        indices = self._check_architecture(architecture).indices
        weights = {}
        for kind, op, prefix in self._plan.entries:
            if kind == "op":
                weights.update(op.export(prefix, indices))
        channels = self._plan.feature_width.value(indices)
        weights["classifier"] = [self.classifier.kernel.numpy()[:channels], self.classifier.bias.numpy()]
        return weights

    def _check_architecture(self, architecture) -> Architecture:
        if not isinstance(architecture, Architecture):
            architecture = self.space.architecture(architecture)
        if architecture.space != self.space.name:
            raise ValueError(
                f"Invalid value for argument `architecture`. Expected an architecture of space {self.space.name!r}. "
                f"Received: space={architecture.space!r}"
            )
        return self.space.architecture(architecture.indices)

    def extract_child(self, architecture, input_shape=None) -> keras.Model:
        """`tunas_keras.build_model(architecture)` with this supernet's weights copied in.

        Kernels and batch-norm parameters are sliced to the architecture's widths (the first k
        channels). Moving statistics start at 0 / 1 (module docstring).
        """
        architecture = self._check_architecture(architecture)
        model = build_model(
            architecture, self.num_classes, input_shape or self.image_shape, dropout_rate=self.dropout_rate
        )
        weights = self.child_weights(architecture)
        for layer in model.layers:
            if not layer.weights:
                continue
            if layer.name not in weights:
                raise RuntimeError(f"The supernet has no weights for the child's layer {layer.name!r}.")
            layer.set_weights(weights.pop(layer.name))
        if weights:
            raise RuntimeError(f"Supernet weights without a child layer: {sorted(weights)}")
        return model

    def get_config(self):
        """The constructor arguments: `Supernet(**supernet.get_config())` rebuilds the model."""
        return {
            "space": self.space.name,
            "num_classes": self.num_classes,
            "input_shape": self.image_shape,
            "weight_sharing": self.weight_sharing,
            "dropout_rate": self.dropout_rate,
            "zero_init_residual": self.zero_init_residual,
            "execution": self._requested_execution,
            "rematerialize": self.rematerialize,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_supernet(
    space: Union[str, SearchSpace] = "proxyless",
    num_classes: int = 1001,
    input_shape=(224, 224, 3),
    weight_sharing: str = "aggressive",
    dropout_rate: float = 0.0,
    zero_init_residual: bool = False,
    execution: str = "auto",
    rematerialize: bool = False,
) -> Supernet:
    """Builds (all variables created) the weight-sharing supernet of a search space.

    Arguments as `Supernet`; `execution="auto"` logs the mode it chose.

    Raises:
      ValueError: an invalid argument.
    """
    supernet = Supernet(
        space, num_classes, input_shape, weight_sharing, dropout_rate, zero_init_residual, execution, rematerialize
    )
    supernet.build()
    if execution == "auto":
        logging.info("Supernet execution mode: %s (auto, chosen by device)", supernet.execution)
    return supernet
