"""Standalone builder: a resolved spec → a plain functional tf_keras model (no masks, no choices).

This is the model that is trained, exported to TFLite and benchmarked. Each layer spec type
has one builder function, found through `LAYER_BUILDERS` (spec type → function).

    >>> model = build_model("mobilenet_v2", num_classes=10, input_shape=(32, 32, 3))
    >>> backbone = build_backbone("proxylessnas_mobile", input_shape=(64, 64, 3))
    >>> sorted(backbone.output)      # endpoints by stride, and SSDLite's C4 / C5, for detection
    ['c4', 'c5', 'stride_16', 'stride_32', 'stride_4', 'stride_8']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Union

import tensorflow as tf
import tf_keras as keras

from tunas_keras import registry, specs
from tunas_keras.layers.common import (
    DepthwiseHeNormal,
    activation_layer,
    batch_norm,
    classifier_initializer,
    conv_initializer,
)
from tunas_keras.models.arguments import check_dropout_rate, check_input_shape, check_num_classes
from tunas_keras.schema import Architecture, contains_one_of

ENDPOINT_STRIDES = (4, 8, 16, 32)
# The SSDLite head's inputs (MobileNetV3 recipe, Howard et al. 2019, §6.2): C4 is the expansion
# output of the first bottleneck that goes from stride 16 to 32 (taken before its stride-2
# depthwise conv), C5 the output of the last 1×1 conv before the global pool.
DETECTION_ENDPOINTS = ("c4", "c5")
C4_INPUT_STRIDE = 16


@dataclasses.dataclass
class BuildContext:
    """Where the builder is: the block's output width, the name prefix and the current stride."""

    filters: int
    prefix: str
    stride: int = 1
    endpoints: dict = dataclasses.field(default_factory=dict)
    zero_init_residual: bool = False


def _channels(tensor: tf.Tensor) -> int:
    return int(tensor.shape[-1])


def _conv(filters: int, kernel_size: int, strides: int, name: str, use_bias: bool = False) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=name,
    )


def _depthwise(kernel_size: int, strides: int, name: str) -> keras.layers.DepthwiseConv2D:
    return keras.layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=DepthwiseHeNormal(),
        name=name,
    )


def _build_conv(spec: specs.Conv, inputs, context: BuildContext):
    use_bn = spec.use_batch_norm
    outputs = _conv(context.filters, spec.kernel_size, spec.strides, context.prefix + "conv", use_bias=not use_bn)(
        inputs
    )
    context.stride *= spec.strides
    return batch_norm(context.prefix + "bn")(outputs) if use_bn else outputs


def _build_separable_conv(spec: specs.SeparableConv, inputs, context: BuildContext):
    outputs = _depthwise(spec.kernel_size, spec.strides, context.prefix + "depthwise")(inputs)
    outputs = batch_norm(context.prefix + "depthwise_bn")(outputs)
    outputs = activation_layer(spec.activation, context.prefix + "depthwise_act")(outputs)
    outputs = _conv(context.filters, 1, 1, context.prefix + "project")(outputs)
    context.stride *= spec.strides
    return batch_norm(context.prefix + "project_bn")(outputs)


def _build_squeeze_excite(inputs, prefix: str):
    inner_filters = _channels(inputs)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "se_pool")(inputs)
    gate = _conv(specs.squeeze_excite_filters(inner_filters), 1, 1, prefix + "se_reduce", use_bias=True)(gate)
    gate = keras.layers.ReLU(name=prefix + "se_relu")(gate)
    gate = _conv(inner_filters, 1, 1, prefix + "se_expand", use_bias=True)(gate)
    gate = keras.layers.Activation("sigmoid", name=prefix + "se_gate")(gate)
    return keras.layers.Multiply(name=prefix + "se_multiply")([inputs, gate])


def _build_bottleneck(spec: specs.Bottleneck, inputs, context: BuildContext):
    prefix = context.prefix
    inner_filters = spec.inner_filters(_channels(inputs))
    outputs = _conv(inner_filters, 1, 1, prefix + "expand")(inputs)
    outputs = batch_norm(prefix + "expand_bn")(outputs)
    outputs = activation_layer(spec.activation, prefix + "expand_act")(outputs)
    if spec.strides == 2 and context.stride == C4_INPUT_STRIDE:
        context.endpoints.setdefault("c4", outputs)
    outputs = _depthwise(spec.kernel_size, spec.strides, prefix + "depthwise")(outputs)
    outputs = batch_norm(prefix + "depthwise_bn")(outputs)
    outputs = activation_layer(spec.activation, prefix + "depthwise_act")(outputs)
    if spec.squeeze_excite:
        outputs = _build_squeeze_excite(outputs, prefix)
    outputs = _conv(context.filters, 1, 1, prefix + "project")(outputs)
    context.stride *= spec.strides
    return batch_norm(prefix + "project_bn")(outputs)


def _build_residual(spec: specs.Residual, inputs, context: BuildContext):
    if isinstance(spec.layer, specs.Zero):
        return inputs
    outputs = build_layer(spec.layer, inputs, context)
    if outputs.shape[1:] != inputs.shape[1:]:
        raise ValueError(
            f"Invalid residual at {context.prefix!r}: expected the layer to keep the shape {inputs.shape[1:]}. "
            f"Received: {outputs.shape[1:]}"
        )
    if context.zero_init_residual:
        _zero_gamma(outputs, context.prefix)
    return keras.layers.Add(name=context.prefix + "add")([inputs, outputs])


def _zero_gamma(branch_outputs, prefix: str) -> None:
    """Sets the γ of the batch norm that ends a residual branch to 0: the block starts as identity."""
    layer = branch_outputs._keras_history.layer  # pylint: disable=protected-access
    if not isinstance(layer, keras.layers.BatchNormalization):
        raise ValueError(
            f"zero_init_residual needs the residual branch at {prefix!r} to end in batch norm. "
            f"Received a branch ending in {type(layer).__name__}"
        )
    layer.gamma.assign(tf.zeros_like(layer.gamma))


def _build_activation(spec: specs.Activation, inputs, context: BuildContext):
    return activation_layer(spec.activation, context.prefix + spec.activation)(inputs)


def _build_endpoint(spec: specs.Endpoint, inputs, context: BuildContext):
    del spec
    context.endpoints[context.stride] = inputs  # The last endpoint at each stride wins.
    return inputs


def _build_global_pool(spec: specs.GlobalPool, inputs, context: BuildContext):
    del spec
    context.endpoints["c5"] = inputs
    return keras.layers.GlobalAveragePooling2D(keepdims=True, name=context.prefix + "pool")(inputs)


LAYER_BUILDERS: dict[type, Callable] = {
    specs.Conv: _build_conv,
    specs.SeparableConv: _build_separable_conv,
    specs.Bottleneck: _build_bottleneck,
    specs.Residual: _build_residual,
    specs.Activation: _build_activation,
    specs.Endpoint: _build_endpoint,
    specs.GlobalPool: _build_global_pool,
}


def build_layer(spec: Any, inputs, context: BuildContext):
    """Builds one resolved layer spec through `LAYER_BUILDERS`."""
    builder = LAYER_BUILDERS.get(type(spec))
    if builder is None:
        raise ValueError(
            f"Invalid layer spec. Expected one of {[kind.__name__ for kind in LAYER_BUILDERS]}. "
            f"Received: {type(spec).__name__}"
        )
    return builder(spec, inputs, context)


def resolve_network(architecture: Union[Architecture, str, specs.Network]) -> specs.Network:
    """An `Architecture`, a reference name or a resolved `Network` → the resolved `Network`."""
    if isinstance(architecture, specs.Network):
        network = architecture
    elif isinstance(architecture, Architecture):
        network = registry.get_search_space(architecture.space).resolve(architecture)
    elif isinstance(architecture, str):
        network = registry.reference_spec(architecture)
    else:
        raise ValueError(
            "Invalid value for argument `architecture`. Expected an Architecture, a reference name "
            f"({list(registry.reference_names())}) or a resolved Network. Received: {architecture!r}"
        )
    if contains_one_of(network):
        raise ValueError("Invalid value for argument `architecture`: the Network still contains OneOf decisions.")
    return network


def _build_features(network: specs.Network, images, zero_init_residual: bool = False) -> tuple[tf.Tensor, BuildContext]:
    context = BuildContext(filters=0, prefix="", zero_init_residual=zero_init_residual)
    features = images
    for block_index, block in enumerate(network.blocks):
        context.filters = block.filters
        for layer_index, layer in enumerate(block.layers):
            context.prefix = f"block{block_index}_layer{layer_index}_"
            features = build_layer(layer, features, context)
    return features, context


def kernel_weights(model: keras.Model) -> list:
    """The trainable convolution, depthwise and dense kernels of `model` (no batch norm, no biases).

    Selected by variable name: Keras names them `kernel` and `depthwise_kernel`. The one place
    that knows it, for the weight-decay penalties of training and benchmarks.
    """
    return [variable for variable in model.trainable_variables if "kernel" in variable.name]


def build_backbone(architecture, input_shape=(224, 224, 3), zero_init_residual: bool = False) -> keras.Model:
    """The feature extractor with its detection endpoints as outputs.

    Args:
      architecture: as in `build_model`.
      input_shape: (height, width, channels).
      zero_init_residual: as in `build_model`.

    Returns:
      A functional model mapping images to `{"stride_4": ..., "stride_8": ..., "stride_16": ...,
      "stride_32": ...}` (the last marked endpoint at each stride) plus `"c4"` and `"c5"` (see
      `DETECTION_ENDPOINTS`) where the network has them. Its layers are named as in `build_model`.
    """
    network = resolve_network(architecture)
    images = keras.Input(check_input_shape(input_shape), name="images")
    _, context = _build_features(network, images, zero_init_residual)
    endpoints = context.endpoints
    outputs = {f"stride_{stride}": endpoints[stride] for stride in ENDPOINT_STRIDES if stride in endpoints}
    outputs.update({name: endpoints[name] for name in DETECTION_ENDPOINTS if name in endpoints})
    return keras.Model(images, outputs, name="backbone")


def build_model(
    architecture,
    num_classes: int = 1001,
    input_shape=(224, 224, 3),
    dropout_rate: float = 0.0,
    zero_init_residual: bool = False,
) -> keras.Model:
    """Builds the standalone classifier of `architecture`.

    Args:
      architecture: an `Architecture`, a reference name (`"mobilenet_v2"`, ...) or a resolved
        `tunas_keras.specs.Network`.
      num_classes: classifier outputs (1001 = ImageNet with background, as the reference).
      input_shape: (height, width, channels).
      dropout_rate: dropout before the classifier, in [0, 1).
      zero_init_residual: start every residual branch's last batch-norm γ at 0, so each residual
        block starts as the identity (Goyal et al. 2017). Not the reference recipe; it lets deep
        networks train in a short budget (docs/benchmarks.md, "Embedded dataset").

    Returns:
      A functional `tf_keras.Model` from images to logits `(batch, num_classes)`. The same
      network's detection feature maps come from `build_backbone`.
    """
    num_classes = check_num_classes(num_classes)
    dropout_rate = check_dropout_rate(dropout_rate)
    network = resolve_network(architecture)
    images = keras.Input(check_input_shape(input_shape), name="images")
    features, _ = _build_features(network, images, zero_init_residual)
    if features.shape[1] != 1 or features.shape[2] != 1:
        raise ValueError(f"The network must end in a global pool. Received features of shape {features.shape}")
    features = keras.layers.Flatten(name="flatten")(features)
    if dropout_rate:
        features = keras.layers.Dropout(dropout_rate, name="dropout")(features)
    logits = keras.layers.Dense(num_classes, kernel_initializer=classifier_initializer(), name="classifier")(features)
    return keras.Model(images, logits, name="standalone")
