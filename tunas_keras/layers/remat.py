"""Rematerialisation: keep a function's inputs, recompute its activations in the backward pass.

Under op warmup every branch of every choice runs (the weighted sum of paper §4.3), which would
keep the activations of all branches for the backward pass. `recompute(fn)` keeps only `fn`'s
inputs and the variables it reads and runs `fn` again when its gradient is needed: memory close
to one path's, for about one extra forward pass of the wrapped branches. It is
`tf.recompute_grad` (the supernet's graph has no control flow, where `tf.recompute_grad` would
fail to capture variables).

    >>> outputs = recompute(lambda x: branch(x, training=True))(inputs)

References: Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016; the reference
TuNAS implementation rematerialises its `Switch` layers the same way.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def recompute(function: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """`function` (one tensor in, one out) with its activations recomputed for the gradient."""
    return tf.recompute_grad(function)
