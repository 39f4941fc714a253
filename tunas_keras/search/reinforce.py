"""The REINFORCE update of the controller, with TuNAS' baseline and learning-rate schedule.

One step, per replica (it runs inside `strategy.run`, or with no strategy at all), over this
replica's samples (K architectures per step: each sample counts as one replica of the reference):

1. all-reduce the mean reward over all samples of all replicas;
2. update the exponential moving average (momentum 0.95) of that mean and zero-debias it, so the
   first baseline equals the first mean reward;
3. `advantage_s = reward_s − baseline`;
4. per sample, `loss_s = −stop_gradient(advantage_s)·log π(α_s)` (on the warmup masks during the
   RL delay, as the reference) and, with an entropy weight, `−entropy_weight·H_s` (the entropies of
   the decisions active in α_s);
5. `CrossSampleAdam` (β1 = 0, β2 = 0.999, ε = 1e-8) on the per-sample REINFORCE gradients, the
   entropy gradients as a separate SGD step, at the step's learning rate (`rl_learning_rate`).

References: Bender et al., CVPR 2020, §3 and §4.2 (RL learning-rate schedule); Williams, 1992;
google-research `tunas/mobile_architecture_search.py`, `tunas/tpu_optimizer_ops.py`.
"""

from __future__ import annotations

from typing import Union

import tensorflow as tf

from tunas_keras.search.controller import Controller, Sample
from tunas_keras.search.cross_sample_adam import CrossSampleAdam

DEFAULT_MOMENTUM = 0.95
DEFAULT_DELAY_FRACTION = 0.25
ONLY_FIRST_REPLICA = tf.VariableAggregation.ONLY_FIRST_REPLICA


def rl_delay_steps(total_steps: int, delay_fraction: float = DEFAULT_DELAY_FRACTION) -> int:
    """`int(delay_fraction · total_steps)`: the steps during which the RL learning rate is 0 (ref)."""
    if not float(total_steps) > 0:
        raise ValueError(
            f"Invalid value for argument `total_steps`. Expected > 0. Received: total_steps={total_steps!r}"
        )
    if not 0.0 <= float(delay_fraction) < 1.0:
        raise ValueError(
            "Invalid value for argument `delay_fraction`. Expected a value in [0, 1). "
            f"Received: delay_fraction={delay_fraction!r}"
        )
    return int(float(delay_fraction) * int(total_steps))


def rl_learning_rate(step, total_steps, base_learning_rate, delay_fraction=DEFAULT_DELAY_FRACTION, exponential=True):
    """The RL learning rate of the reference search (`mobile_architecture_search.py`).

    With `delay = int(delay_fraction · total_steps)`: `0` while `step < delay` (the controller is
    frozen during op and filter warmup), then `base · 10^progress` with
    `progress = relu((step − delay) / max(1, total_steps − delay))`: ×1 when the controller
    starts learning, growing exponentially to ×10 at `step = total_steps`. With
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
    delay = rl_delay_steps(total_steps, delay_fraction)
    step = tf.cast(step, tf.float32)
    rate = tf.cast(base_learning_rate, tf.float32) * tf.cast(step >= float(delay), tf.float32)
    if exponential:
        progress = tf.nn.relu((step - float(delay)) / float(max(1, int(total_steps) - delay)))
        rate = rate * tf.pow(10.0, progress)
    return rate


class Reinforce(tf.Module):
    """REINFORCE with a zero-debiased moving-average baseline for a `Controller`.

    Create it (like the controller) under the strategy's scope; call `step` inside
    `strategy.run` (or directly without a strategy).

    Args:
      controller: the policy to train.
      momentum: momentum of the baseline's moving average, in [0, 1).
      entropy_weight: weight of the entropy bonus (>= 0; the reference uses 0). As the
        reference, the bonus takes a separate plain SGD step (same learning rate) on
        `−entropy_weight · Σ` of the active decisions' entropies, bypassing Adam's moments.
      beta_1, beta_2, epsilon: of the controller's `CrossSampleAdam` (reference: 0, 0.999, 1e-8).

    References: Bender et al., CVPR 2020, §3; google-research `tunas/mobile_architecture_search.py`.
    """

    def __init__(
        self,
        controller: Controller,
        momentum: float = DEFAULT_MOMENTUM,
        entropy_weight: float = 0.0,
        beta_1: float = 0.0,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
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
        self.optimizer = CrossSampleAdam(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
        self.optimizer.build(controller.logits)  # in decision order, as `step` splits its gradients

    @property
    def baseline(self) -> tf.Tensor:
        """The current debiased baseline (0 before the first step)."""
        return tf.math.divide_no_nan(self.average.read_value(), self.average_weight.read_value())

    def reset(self) -> None:
        """Back to the initial state: uniform policy, no baseline, fresh optimizer."""
        for variable in [*self.controller.trainable_variables, self.average, self.average_weight, self.learning_rate]:
            variable.assign(tf.zeros_like(variable))
        self.optimizer.reset()

    def step(self, sample: Union[tf.Tensor, Sample], reward, learning_rate) -> dict:
        """One controller update from this replica's samples and rewards.

        Every sample counts as one replica of the reference: the baseline averages the rewards
        of all samples of all replicas, and Adam's moments aggregate the per-sample gradients
        (`CrossSampleAdam`).

        Args:
          sample: int32 indices `[num_decisions]` (one architecture) or `[num_samples,
            num_decisions]`, or a `Sample` with the same leading dimensions (scored with its
            warmup masks, as the reference).
          reward: float32 `[]` or `[num_samples]`, the rewards of the samples.
          learning_rate: scalar, e.g. `rl_learning_rate(step, total_steps, base)`.

        Returns:
          Scalars: `reward` (mean over all samples and replicas), `baseline`, `advantage`,
          `log_prob` and `sample_entropy` (means over this replica's samples), `entropy` (of
          the policy) and `loss` (this replica's, REINFORCE + entropy terms).
        """
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError("Invalid call of `Reinforce.step`: call it inside `strategy.run` (replica context).")
        sample = _batched(sample)
        reward = tf.reshape(tf.cast(reward, tf.float32), [-1])
        mean_reward = context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.reduce_mean(reward))
        self.learning_rate.assign(tf.cast(learning_rate, tf.float32))
        self.average.assign(self.momentum * self.average + (1.0 - self.momentum) * mean_reward)
        self.average_weight.assign(self.momentum * self.average_weight + (1.0 - self.momentum))
        baseline = self.baseline
        advantage = tf.stop_gradient(reward - baseline)
        variables = self.controller.logits
        # Differentiated with respect to the one concatenated logits vector and split per
        # variable: one small Jacobian instead of one per decision (thousands of traced ops fewer).
        flat = self.controller.flat_logits()
        with tf.GradientTape(persistent=self.entropy_weight > 0, watch_accessed_variables=False) as tape:
            tape.watch(flat)
            padded = self.controller.padded_logits(flat)
            log_prob = self.controller.log_prob(sample, padded_logits=padded)  # [S]
            sample_entropy = self.controller.entropy(sample, padded_logits=padded)  # [S]
            losses = -advantage * log_prob
            regularization = -self.entropy_weight * sample_entropy
        policy_entropy = self.controller.entropy(padded_logits=padded)  # of the policy that drew the samples
        zero = tf.UnconnectedGradients.ZERO
        sizes = self.controller.num_choices
        gradients = tf.split(tape.jacobian(losses, flat, unconnected_gradients=zero), sizes, axis=-1)  # [S, n] each
        regularization_gradients = None
        if self.entropy_weight > 0:
            regularization_gradients = tf.split(
                tape.jacobian(regularization, flat, unconnected_gradients=zero), sizes, axis=-1
            )
        self.optimizer.apply(gradients, variables, self.learning_rate.read_value(), regularization_gradients)
        return {
            "reward": mean_reward,
            "baseline": baseline,
            "advantage": tf.reduce_mean(advantage),
            "log_prob": tf.reduce_mean(log_prob),
            "sample_entropy": tf.reduce_mean(sample_entropy),
            "entropy": policy_entropy,
            "loss": tf.reduce_mean(losses + regularization),
        }


def _batched(sample):
    """Adds a leading sample dimension to a single architecture (indices or `Sample`)."""
    if isinstance(sample, Sample):
        if sample.indices.shape.rank == 1:
            return Sample(*(tf.expand_dims(field, 0) for field in sample))
        return sample
    sample = tf.convert_to_tensor(sample)
    return sample[tf.newaxis] if sample.shape.rank == 1 else sample
