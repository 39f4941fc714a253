"""The REINFORCE update of the controller, with TuNAS' baseline and learning-rate schedule.

One step, per replica (it runs inside `strategy.run`, or with no strategy at all):

1. all-reduce the mean reward across replicas;
2. update the exponential moving average (momentum 0.95) of that mean and zero-debias it, so the
   first baseline equals the first mean reward;
3. `advantage = reward − baseline`;
4. `loss = −stop_gradient(advantage)·log π(α) − entropy_weight·H(π)`, divided by the number of
   replicas because tf_keras optimizers *sum* gradients across replicas (so the applied
   gradient is the mean over replicas);
5. Adam(β1 = 0, β2 = 0.999, ε = 1e-8) with the step's learning rate (`rl_learning_rate`).

References: Bender et al., CVPR 2020, §3 and §4.2 (RL learning-rate schedule); Williams, 1992.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf
import tf_keras as keras

from tunas_keras.search.controller import Controller

DEFAULT_MOMENTUM = 0.95
DEFAULT_DELAY_FRACTION = 0.25
ONLY_FIRST_REPLICA = tf.VariableAggregation.ONLY_FIRST_REPLICA


def rl_learning_rate(step, total_steps, base_learning_rate, delay_fraction=DEFAULT_DELAY_FRACTION, exponential=True):
    """The RL learning rate of the reference search.

    `0` while `step < delay_fraction · total_steps` (the controller is frozen during op and
    filter warmup), then `base · 10^(step / total_steps)`: it jumps to `base · 10^delay_fraction`
    (×1.78 for 0.25) and grows exponentially to `×10` at the last step. With
    `exponential=False`, `base` after the delay (the ablation of paper §4.2).

    Args:
      step: current step (int or scalar tensor, counted from 0).
      total_steps: number of steps of the search (> 0).
      base_learning_rate: the base rate (the reference uses 3e-4 × batch / 256).
      delay_fraction: fraction of the steps with learning rate 0, in [0, 1).
      exponential: whether to apply the `10^progress` factor.

    Returns:
      A float32 scalar tensor.
    """
    if not float(total_steps) > 0:
        raise ValueError(
            f"Invalid value for argument `total_steps`. Expected > 0. Received: total_steps={total_steps!r}"
        )
    if not 0.0 <= float(delay_fraction) < 1.0:
        raise ValueError(
            "Invalid value for argument `delay_fraction`. Expected a value in [0, 1). "
            f"Received: delay_fraction={delay_fraction!r}"
        )
    progress = tf.cast(step, tf.float32) / float(total_steps)
    rate = tf.cast(base_learning_rate, tf.float32)
    if exponential:
        rate = rate * tf.pow(10.0, progress)
    return tf.where(progress < float(delay_fraction), 0.0, rate)


class VariableLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate "schedule" that reads a variable (set by `Reinforce.step` each step)."""

    def __init__(self, variable: tf.Variable):
        self.variable = variable

    def __call__(self, step):
        del step
        return tf.identity(self.variable)

    def get_config(self) -> dict:
        return {}


def default_optimizer(learning_rate) -> keras.optimizers.Optimizer:
    """Adam with β1 = 0 (no momentum), β2 = 0.999, ε = 1e-8, as the reference controller."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.0, beta_2=0.999, epsilon=1e-8)


class Reinforce(tf.Module):
    """REINFORCE with a zero-debiased moving-average baseline for a `Controller`.

    Create it (like the controller) under the strategy's scope; call `step` inside
    `strategy.run` (or directly without a strategy).

    Args:
      controller: the policy to train.
      momentum: momentum of the baseline's moving average, in [0, 1).
      entropy_weight: weight of the entropy bonus (>= 0; the reference uses 0).
      optimizer_fn: builds the optimizer from a learning-rate schedule (default: `default_optimizer`).

    References: Bender et al., CVPR 2020, §3.
    """

    def __init__(
        self,
        controller: Controller,
        momentum: float = DEFAULT_MOMENTUM,
        entropy_weight: float = 0.0,
        optimizer_fn: Optional[Callable] = None,
        name: str = "reinforce",
    ):
        super().__init__(name=name)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(
                f"Invalid value for argument `momentum`. Expected a value in [0, 1). Received: momentum={momentum!r}"
            )
        if not float(entropy_weight) >= 0.0:
            raise ValueError(
                "Invalid value for argument `entropy_weight`. Expected >= 0. "
                f"Received: entropy_weight={entropy_weight!r}"
            )
        self.controller = controller
        self.momentum = float(momentum)
        self.entropy_weight = float(entropy_weight)
        with self.name_scope:
            # ONLY_FIRST_REPLICA: every replica assigns the same (all-reduced) value, and the
            # aggregation makes a replica-context assign legal under MirroredStrategy.
            def scalar(name):
                return tf.Variable(0.0, trainable=False, aggregation=ONLY_FIRST_REPLICA, name=name)

            self.learning_rate = scalar("learning_rate")
            self.average = scalar("baseline_average")  # biased EMA of the mean reward
            self.average_weight = scalar("baseline_weight")  # 1 − momentum^t, the debiasing divisor
        self.optimizer = (optimizer_fn or default_optimizer)(VariableLearningRate(self.learning_rate))
        self.optimizer.build(controller.trainable_variables)

    @property
    def baseline(self) -> tf.Tensor:
        """The current debiased baseline (0 before the first step)."""
        return tf.math.divide_no_nan(self.average.read_value(), self.average_weight.read_value())

    def step(self, indices, reward, learning_rate) -> dict:
        """One controller update from this replica's sample(s) and reward(s).

        Args:
          indices: int32 `[num_decisions]` (one architecture) or `[batch, num_decisions]`.
          reward: float32 `[]` or `[batch]`, the rewards of `indices`.
          learning_rate: scalar, e.g. `rl_learning_rate(step, total_steps, base)`.

        Returns:
          Scalars: `reward` (cross-replica mean), `baseline`, `advantage` (mean of this
          replica), `log_prob` (mean), `entropy` and `loss` (this replica's, unscaled).
        """
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError("Invalid call of `Reinforce.step`: call it inside `strategy.run` (replica context).")
        reward = tf.cast(reward, tf.float32)
        mean_reward = context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.reduce_mean(reward))
        self.learning_rate.assign(tf.cast(learning_rate, tf.float32))
        self.average.assign(self.momentum * self.average + (1.0 - self.momentum) * mean_reward)
        self.average_weight.assign(self.momentum * self.average_weight + (1.0 - self.momentum))
        baseline = self.baseline
        advantage = tf.stop_gradient(reward - baseline)
        variables = self.controller.trainable_variables
        with tf.GradientTape() as tape:
            log_prob = self.controller.log_prob(indices)
            entropy = self.controller.entropy()
            loss = -tf.reduce_mean(advantage * log_prob) - self.entropy_weight * entropy
            scaled_loss = loss / context.num_replicas_in_sync
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return {
            "reward": mean_reward,
            "baseline": baseline,
            "advantage": tf.reduce_mean(advantage),
            "log_prob": tf.reduce_mean(log_prob),
            "entropy": entropy,
            "loss": loss,
        }
