"""The weight-sharing supernet (one-shot model) of a search space, and child extraction.

    >>> supernet = build_supernet("proxyless", num_classes=10, input_shape=(32, 32, 3))
    >>> masks = tunas_keras.masks.one_hot_masks(supernet.space, arch)      # or just `arch`
    >>> logits = supernet(images, masks, training=True)                   # [batch, 10]
    >>> loss += 4e-5 / 2 * supernet.regularization_loss(masks)        # weight decay 4e-5
    >>> child = supernet.extract_child(arch)      # == tunas_keras.build_model(arch) + copied weights

How decisions are implemented (paper §4.1, reference implementation):
- `filters` and `expansion` decisions: channel masking (`Combination.channel_mask`); the inner
  width of a bottleneck is `scale_filters(input width, expansion)` of the masked input width.
- every other decision (kernel size, squeeze-and-excite, keep/skip, a stem kernel): a
  `ChoiceBlock` (one branch runs under a one-hot mask; the weighted sum under op warmup).
- operation collapsing (`weight_sharing="aggressive"`): the 1×1 expand / project convs of a
  bottleneck are shared by all kernel sizes and SE choices; each kernel size has its own
  depthwise conv. `weight_sharing="none"` (space `proxyless` only; paper Appendix G): every
  (kernel, expansion) combination is its own bottleneck with its own weights, selected by the
  outer product of the expansion and kernel masks (op code `3·e + k`, as the reference).
- batch norm always uses the current batch's statistics (also with `training=False`).

Moving statistics: the supernet never reads them. With `training=True` each masked batch norm
updates them on its active channels (one-hot paths only: the rematerialised op-warmup path does
not), so they are a running average over many sampled architectures. `extract_child` copies
them as they are: re-estimate them (e.g. run the child with `training=True` on some batches)
before evaluating a child with `training=False`.

References: Bender et al., CVPR 2020, §4.1, §4.3 and Appendix G.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import tensorflow as tf
import tf_keras as keras

from tunas_keras import specs
from tunas_keras.layers.common import classifier_initializer
from tunas_keras.masks import one_hot_masks
from tunas_keras.models import supernet_blocks as blocks
from tunas_keras.models.standalone import ENDPOINT_STRIDES, build_model
from tunas_keras.schema import Architecture, OneOf, SearchSpace

WEIGHT_SHARING_MODES = ("aggressive", "none")
UNSHARED_SPACES = ("proxyless",)


class _Planner:
    """Turns a spec tree with `OneOf`s into supernet ops (one traversal, keyed by decision path)."""

    def __init__(self, space: SearchSpace, weight_sharing: str):
        self.space = space
        self.weight_sharing = weight_sharing
        self.decision_at = {decision.path: position for position, decision in enumerate(space.decisions)}
        self.widths: dict = {}
        self.selections: dict = {}
        self.entries: list = []  # (kind, op or stride, prefix)
        self.stride = 1

    def decision(self, path: tuple) -> int:
        return self.decision_at[path]

    def width(self, width: blocks.Combination) -> blocks.Combination:
        self.widths[width.key] = width
        return width

    def selection(self, factors: tuple) -> blocks.Combination:
        shape = tuple(self.space.decisions[factor].num_choices for factor in factors)
        selection = blocks.Combination(factors, shape)
        self.selections[selection.key] = selection
        return selection

    def filters(self, value, path: tuple) -> blocks.Combination:
        if isinstance(value, OneOf):
            position = self.decision(path)
            return self.width(blocks.Combination((position,), (len(value.choices),), tuple(value.choices)))
        return self.width(blocks.constant_width(value))

    def plan(self, network: specs.Network, input_channels: int) -> blocks.Combination:
        width = self.width(blocks.constant_width(input_channels))
        for block_index, block in enumerate(network.blocks):
            block_width = self.filters(block.filters, ("blocks", block_index, "filters"))
            for layer_index, layer in enumerate(block.layers):
                prefix = f"block{block_index}_layer{layer_index}_"
                path = ("blocks", block_index, "layers", layer_index)
                width = self.layer(layer, path, width, block_width, prefix)
        return width

    def layer(self, spec, path, input_width, output_width, prefix) -> blocks.Combination:
        """Plans one top-level layer spec; returns its output width."""
        if isinstance(spec, specs.Endpoint):
            self.entries.append(("endpoint", self.stride, prefix))
            return input_width
        if isinstance(spec, specs.GlobalPool):
            self.entries.append(("pool", None, prefix))
            return input_width
        op, width = self.op(spec, path, input_width, output_width, prefix)
        self.entries.append(("op", op, prefix))
        return width

    def op(self, spec, path, input_width, output_width, prefix):
        """A `SupernetOp` for `spec` and its output width, through `OP_PLANNERS`."""
        if isinstance(spec, OneOf):
            return self._one_of(spec, path, input_width, output_width, prefix)
        planner = OP_PLANNERS.get(type(spec))
        if planner is None:
            raise ValueError(
                f"Invalid layer spec for the supernet. Expected one of {[kind.__name__ for kind in OP_PLANNERS]}. "
                f"Received: {type(spec).__name__}"
            )
        return planner(self, spec, path, input_width, output_width, prefix)

    def _one_of(self, spec: OneOf, path, input_width, output_width, prefix):
        # Keras names must not repeat among the branches (e.g. three whole separable convs).
        def branch_prefix(index):
            return prefix if len(spec.choices) == 1 else f"{prefix}{spec.tag}{index}_"

        planned = [
            self.op(choice, path + (f"{spec.tag}={index}",), input_width, output_width, branch_prefix(index))
            for index, choice in enumerate(spec.choices)
        ]
        if len(planned) == 1:
            return planned[0]
        selection = self.selection((self.decision(path),))
        return blocks.Choice([op for op, _ in planned], selection, name=prefix + spec.tag), planned[0][1]

    def kernel_op(self, kernel_size, path, make: Callable[[int], Any], prefix):
        """One op per kernel size (own weights, no centre-cropping), in a `Choice` if searched."""
        if not isinstance(kernel_size, OneOf):
            return make(kernel_size)
        selection = self.selection((self.decision(path + ("kernel_size",)),))
        return blocks.Choice([make(size) for size in kernel_size.choices], selection, name=prefix + "kernel_choice")


def _plan_conv(planner: _Planner, spec: specs.Conv, path, input_width, output_width, prefix):
    def make(kernel_size):
        return blocks.ConvBatchNorm(
            kernel_size, spec.strides, input_width, output_width, spec.use_batch_norm, name=f"{prefix}conv{kernel_size}"
        )

    planner.stride *= spec.strides
    return planner.kernel_op(spec.kernel_size, path, make, prefix), output_width


def _plan_separable_conv(planner: _Planner, spec: specs.SeparableConv, path, input_width, output_width, prefix):
    def make(kernel_size):
        return blocks.DepthwiseBatchNorm(
            kernel_size, spec.strides, input_width, spec.activation, name=f"{prefix}depthwise{kernel_size}"
        )

    depthwise = planner.kernel_op(spec.kernel_size, path, make, prefix)
    project = blocks.ConvBatchNorm(
        1, 1, input_width, output_width, names=("project", "project_bn"), name=prefix + "project"
    )
    planner.stride *= spec.strides
    return blocks.Separable(depthwise, project, name=prefix + "separable"), output_width


def _inner_width(planner: _Planner, spec: specs.Bottleneck, path, input_width) -> blocks.Combination:
    if spec.expanded_filters is not None:
        return planner.width(blocks.constant_width(spec.expanded_filters))
    expansion = spec.expansion
    if isinstance(expansion, OneOf):
        factor, choices = planner.decision(path + ("expansion",)), expansion.choices
        width = input_width.times(factor, len(choices), lambda value, index: specs.scale_filters(value, choices[index]))
    else:
        width = input_width.mapped(lambda value: specs.scale_filters(value, expansion))
    return planner.width(width)


def _plan_squeeze_excite(planner: _Planner, spec: specs.Bottleneck, path, inner_width, prefix):
    if spec.squeeze_excite is False:
        return None
    hidden = planner.width(blocks.squeeze_excite_width(inner_width))
    if spec.squeeze_excite is True:
        return blocks.SqueezeExcite(inner_width, hidden, name=prefix + "se")
    if not isinstance(spec.squeeze_excite, OneOf) or spec.squeeze_excite.choices != (False, True):
        raise ValueError(
            "Invalid value for `squeeze_excite`. Expected a bool or OneOf((False, True)). "
            f"Received: squeeze_excite={spec.squeeze_excite!r}"
        )
    selection = planner.selection((planner.decision(path + ("squeeze_excite",)),))
    branches = [blocks.Identity(name=prefix + "no_se"), blocks.SqueezeExcite(inner_width, hidden, name=prefix + "se")]
    return blocks.Choice(branches, selection, name=prefix + "se_choice")


def _plan_bottleneck(planner: _Planner, spec: specs.Bottleneck, path, input_width, output_width, prefix):
    if planner.weight_sharing == "none" and isinstance(spec.expansion, OneOf):
        return _plan_unshared_bottleneck(planner, spec, path, input_width, output_width, prefix)
    inner_width = _inner_width(planner, spec, path, input_width)
    expand = blocks.ConvBatchNorm(1, 1, input_width, inner_width, names=("expand", "expand_bn"), name=prefix + "expand")

    def make(kernel_size):
        return blocks.DepthwiseBatchNorm(
            kernel_size, spec.strides, inner_width, spec.activation, name=f"{prefix}depthwise{kernel_size}"
        )

    depthwise = planner.kernel_op(spec.kernel_size, path, make, prefix)
    squeeze_excite = _plan_squeeze_excite(planner, spec, path, inner_width, prefix)
    project = blocks.ConvBatchNorm(
        1, 1, inner_width, output_width, names=("project", "project_bn"), name=prefix + "project"
    )
    planner.stride *= spec.strides
    bottleneck = blocks.Bottleneck(
        expand, spec.activation, depthwise, squeeze_excite, project, name=prefix + "bottleneck"
    )
    return bottleneck, output_width


def _plan_unshared_bottleneck(planner: _Planner, spec: specs.Bottleneck, path, input_width, output_width, prefix):
    """ProxylessNAS-style: one complete bottleneck per (expansion, kernel) pair, op = 3·e + k."""
    if not isinstance(spec.kernel_size, OneOf) or spec.squeeze_excite not in (False, True):
        raise ValueError(f"weight_sharing='none' expects kernel and expansion decisions at {prefix!r}")
    branches = []
    stride = planner.stride
    for expansion in spec.expansion.choices:
        for kernel_size in spec.kernel_size.choices:
            planner.stride = stride
            fixed = specs.Bottleneck(kernel_size, expansion, spec.squeeze_excite, spec.strides, spec.activation)
            branch_prefix = f"{prefix}e{expansion}_k{kernel_size}_"
            op, _ = _plan_bottleneck(planner, fixed, path, input_width, output_width, branch_prefix)
            branches.append(op)
    factors = (planner.decision(path + ("expansion",)), planner.decision(path + ("kernel_size",)))
    return blocks.Choice(branches, planner.selection(factors), name=prefix + "path_choice"), output_width


def _plan_residual(planner: _Planner, spec: specs.Residual, path, input_width, output_width, prefix):
    op, width = planner.op(spec.layer, path + ("layer",), input_width, output_width, prefix)
    if width != input_width:
        raise ValueError(f"Invalid residual at {prefix!r}: the layer must keep the width of its input.")
    return blocks.Residual(op, name=prefix + "residual"), input_width


def _plan_zero(planner: _Planner, spec: specs.Zero, path, input_width, output_width, prefix):
    del planner, spec, path, output_width
    return blocks.Zero(name=prefix + "zero"), input_width


def _plan_activation(planner: _Planner, spec: specs.Activation, path, input_width, output_width, prefix):
    del planner, path, output_width
    return blocks.Activation(spec.activation, name=prefix + spec.activation), input_width


OP_PLANNERS: dict[type, Callable] = {
    specs.Conv: _plan_conv,
    specs.SeparableConv: _plan_separable_conv,
    specs.Bottleneck: _plan_bottleneck,
    specs.Residual: _plan_residual,
    specs.Zero: _plan_zero,
    specs.Activation: _plan_activation,
}


class Supernet(keras.Model):
    """The one-shot model of a search space; see the module docstring and `build_supernet`.

    Call arguments:
      images: `(batch, height, width, channels)` float32, the shape given at construction.
      masks: a list of `space.num_decisions` float32 vectors (`tunas_keras.masks` format:
        one-hot, or fractional under op / filter warmup), or an `Architecture`.
      training: whether to update the batch norms' moving statistics (the normalisation always
        uses batch statistics) and to apply dropout.

    Returns:
      Logits `(batch, num_classes)`.
    """

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int = 1001,
        input_shape=(224, 224, 3),
        weight_sharing: str = "aggressive",
        dropout_rate: float = 0.0,
        zero_init_residual: bool = False,
        **kwargs,
    ):
        super().__init__(name=kwargs.pop("name", f"supernet_{space.name}"), **kwargs)
        self.space = space
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)
        self.weight_sharing = weight_sharing
        self.dropout_rate = dropout_rate
        self.zero_init_residual = zero_init_residual
        planner = _Planner(space, weight_sharing)
        self._feature_width = planner.plan(space.spec, self.image_shape[-1])
        self._widths = dict(planner.widths)
        self._selections = dict(planner.selections)
        self._entries = list(planner.entries)
        self.ops = [op for kind, op, _ in self._entries if kind == "op"]
        self.dropout = keras.layers.Dropout(dropout_rate, name="dropout") if dropout_rate else None
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=classifier_initializer(), name="classifier"
        )

    def build(self, input_shape=None):
        """Creates every variable (all branches) from the planned widths."""
        for op in self.ops:
            op.build(tf.TensorShape([None, None, None, None]))
            if self.zero_init_residual and isinstance(op, blocks.Residual):
                op.zero_init()
        self.classifier.build(tf.TensorShape([None, self._feature_width.max_value]))
        self.built = True

    # -- inputs ---------------------------------------------------------------------------
    def _check_masks(self, masks) -> list:
        if isinstance(masks, Architecture):
            return one_hot_masks(self.space, masks)
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

    def _context(self, masks: Sequence[tf.Tensor], one_hot: bool = False) -> dict:
        context = {
            "channels": {key: width.channel_mask(masks) for key, width in self._widths.items()},
            "selections": {key: selection.weights(masks) for key, selection in self._selections.items()},
        }
        if one_hot:  # a Python flag, present only when set (the context is otherwise all tensors)
            context["one_hot"] = True
        return context

    # -- forward ----------------------------------------------------------------------------
    def _backbone(self, images, masks, training, one_hot=False):
        images = self._check_images(images)
        context = self._context(self._check_masks(masks), one_hot=bool(one_hot))
        features, endpoints = images, {}
        for kind, op, _ in self._entries:
            if kind == "op":
                features = op(features, context=context, training=training)
            elif kind == "endpoint":
                endpoints[op] = features
            else:
                features = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        return features, endpoints

    def call(self, images, masks, training=None, one_hot=False):
        """Logits of `images` under `masks` (one per decision, one-hot or fractional).

        `one_hot=True` promises that every op decision's mask is one-hot (e.g. a sampled
        architecture without op warmup): each choice then builds only its branches, without
        the fractional path, which makes the traced graph much smaller (faster to trace).
        Fractional op masks are not allowed then; channel masks may still be fractional.
        """
        features, _ = self._backbone(images, masks, training, one_hot)
        features = tf.reshape(features, [-1, self._feature_width.max_value])
        if self.dropout is not None:
            features = self.dropout(features, training=training)
        return self.classifier(features)

    def features(self, images, masks, training=None, one_hot=False) -> dict:
        """Detection endpoints `{"stride_4": ..., "stride_32": ...}` (as `build_backbone`).

        Channels are at the supernet's largest width; masked channels are zero. `one_hot` as in `call`.
        """
        _, endpoints = self._backbone(images, masks, training, one_hot)
        return {f"stride_{stride}": endpoints[stride] for stride in ENDPOINT_STRIDES if stride in endpoints}

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
        context = self._context(self._check_masks(masks))
        return tf.add_n([op.active_l2(context) for op in self.ops])

    # -- child extraction -------------------------------------------------------------------
    def child_weights(self, architecture: Architecture) -> dict:
        """`{standalone layer name: [weights]}` of `architecture`, sliced to its widths."""
        indices = self._check_architecture(architecture).indices
        weights = {}
        for kind, op, prefix in self._entries:
            if kind == "op":
                weights.update(op.export(prefix, indices))
        channels = self._feature_width.value(indices)
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
        channels). Moving statistics are copied as they are (see the module docstring).
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
        return {
            "space": self.space.name,
            "num_classes": self.num_classes,
            "input_shape": self.image_shape,
            "weight_sharing": self.weight_sharing,
            "dropout_rate": self.dropout_rate,
        }


def build_supernet(
    space: Union[str, SearchSpace] = "proxyless",
    num_classes: int = 1001,
    input_shape=(224, 224, 3),
    weight_sharing: str = "aggressive",
    dropout_rate: float = 0.0,
    zero_init_residual: bool = False,
) -> Supernet:
    """Builds (all variables created) the weight-sharing supernet of a search space.

    Args:
      space: a search space or its name ("proxyless", "proxyless_enlarged", "mobilenet_v3_like").
      num_classes: classifier outputs.
      input_shape: (height, width, channels) of the images.
      weight_sharing: "aggressive" (TuNAS: shared expand / project convs, channel masking) or
        "none" (ProxylessNAS-style separate paths; space "proxyless" only).
      dropout_rate: dropout before the classifier, in [0, 1).
      zero_init_residual: start the γ of the batch norms that end each residual branch at 0, as
        `build_model(..., zero_init_residual=True)`: every residual block starts as the identity.

    Raises:
      ValueError: an invalid argument.
    """
    import search_spaces  # pylint: disable=import-outside-toplevel

    search_space = search_spaces.get_search_space(space)
    if weight_sharing not in WEIGHT_SHARING_MODES:
        raise ValueError(
            f"Invalid value for argument `weight_sharing`. Expected one of {WEIGHT_SHARING_MODES}. "
            f"Received: weight_sharing={weight_sharing!r}"
        )
    if weight_sharing == "none" and search_space.name not in UNSHARED_SPACES:
        raise ValueError(
            f"Invalid value for argument `weight_sharing`: 'none' is implemented for spaces {UNSHARED_SPACES} only "
            f"(the paper's Appendix-G comparison). Received: weight_sharing='none', space={search_space.name!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Invalid value for argument `num_classes`. Expected an int >= 1. Received: {num_classes!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"Invalid value for argument `dropout_rate`. Expected [0, 1). Received: {dropout_rate!r}")
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(size, int) or size <= 0 for size in shape):
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (height, width, channels) with positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    supernet = Supernet(search_space, num_classes, shape, weight_sharing, dropout_rate, zero_init_residual)
    supernet.build()
    return supernet
