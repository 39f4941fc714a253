"""Simulated TuNAS controller search: the real controller, rewards and REINFORCE, no training.

The controller (`tunas_keras.search.Controller`), the REINFORCE update (`Reinforce`, with its
zero-debiased baseline and Adam) and the rewards (`Reward`) are the ones the search uses; the
cost is the real simulated Pixel-1 latency (`batch_cost` of the `pixel1` cost model). Only the
quality Q(α) — the validation accuracy of the shared weights in a real search — is synthetic:

    Q(α) = 0.75 + slope · ln(MACs(α) / 300 M) + N(0, noise²)

MACs(α) is the exact MAC count at 224×224 (the tabulated `macs` cost model, equal to
`tunas_keras.count_network`). So bigger networks are better with diminishing returns (concave
in MACs), and the noise stands in for the variance of a validation batch. Each step draws
`--batch_size` architectures (K samples per step, as one per replica in the reference search, or
`--architectures_per_step` in ours), scores them, and makes one REINFORCE step (cross-sample
Adam) with the RL learning rate `rl_learning_rate` (0 for the first int(0.25 · steps) steps, then
base × 10^progress, ×1 at the delay to ×10 at the end; `--schedule constant` keeps base after
the delay). Several `--batch_size` values run one after the other.

Printed per run: mean Pixel-1 cost of the samples of the last 10 % of steps, cost of the most
likely architecture (argmax of every decision), |cost / T0 − 1| of the latter and the gap
mean sampled − most likely.

Several targets (`--targets=60,84,110`): one controller per target, as a multi-target search
(`tunas_keras.search.multi_target.TargetPolicies`): each step's K samples are divided among the
controllers (K / N each, so K must be a multiple of N), each rewarded against its own target
with the same β and updated only from its own samples; one row per target.

    python tools/simulate_controller.py                       # default sweep, a few minutes
    python tools/simulate_controller.py --spaces proxyless --rewards abs --betas=-0.1 --steps 500
    python tools/simulate_controller.py --rewards abs --schedules exponential --batch_size 1,8,32
    python tools/simulate_controller.py --spaces proxyless --rewards abs --schedules exponential \
        --targets 60,84,110 --batch_size 3,24,96 --seeds 0,1,2,3 --base_learning_rate 0.2

References: Bender et al., CVPR 2020, §4.2 (absolute reward, RL learning-rate schedule),
Finding 5 (the MnasNet reward needs a β sweep).
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np
import tensorflow as tf
from absl import flags

import tunas_keras
from tunas_keras import cli, errors
from tunas_keras.cost_models import get_cost_model
from tunas_keras.search import REWARDS, Reward, rl_learning_rate
from tunas_keras.search.multi_target import TargetPolicies, parse_targets

FLAGS = flags.FLAGS
SCHEDULES = ("exponential", "constant")
flags.DEFINE_list("spaces", ["proxyless", "proxyless_enlarged", "mobilenet_v3_like"], "Search spaces.")
flags.DEFINE_list("rewards", ["abs", "mnas", "mnas_hard"], "Rewards to simulate.")
flags.DEFINE_list("betas", ["-0.1"], "β values for the `abs` and `mnas_hard` rewards.")
flags.DEFINE_list("mnas_betas", ["-0.03", "-0.05", "-0.07", "-0.1", "-0.15"], "β sweep for the `mnas` reward.")
flags.DEFINE_list("schedules", list(SCHEDULES), "RL learning-rate schedules ('constant' runs abs only).")
flags.DEFINE_integer("steps", 500, "Controller steps per run.", lower_bound=1)
flags.DEFINE_list("batch_size", ["64"], "Architectures sampled per step (K); several values run each.")
flags.DEFINE_float("base_learning_rate", 0.05, "Base RL learning rate.", lower_bound=0.0)
flags.DEFINE_float("quality_slope", 0.05, "Slope of Q(α) in ln(MACs).")
flags.DEFINE_float("noise", 0.01, "Standard deviation of the quality noise.", lower_bound=0.0)
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_list("seeds", [], "Several seeds: each run is repeated and the means are printed (overrides --seed).")
flags.DEFINE_list(
    "targets",
    [],
    "Cost targets (ms) of a multi-target simulation, e.g. 60,84,110: one controller per target, each step's K samples "
    "divided among them (K must be a multiple of their number). Default: the space's T0 (one controller).",
)

QUALITY_OFFSET = 0.75
REFERENCE_MACS_MILLIONS = 300.0
CHUNKS = 20
REWARD_NAMES = tuple(REWARDS)  # the run is split in chunks; the last 2 are the last 10 % of the steps


class Simulator:
    """Runs simulated searches in one space; the step graph is traced once and reused per run.

    Args:
      space: the search space.
      steps: controller steps per run.
      batch_size: architectures sampled per step (K, divided among the targets).
      quality_slope: slope of Q(α) in ln(MACs).
      noise: standard deviation of the quality noise.
      targets: the cost targets, one controller each (default: the space's T0).
    """

    def __init__(self, space, steps: int, batch_size: int, quality_slope: float, noise: float, targets=None):
        self.space = space
        self.steps = steps
        self.latency = get_cost_model("pixel1", space)
        self.macs = get_cost_model("macs", space)
        self.targets = list(targets) if targets else [space.target_latency]
        self.policies = TargetPolicies(space, self.targets, batch_size)
        self.controller, self.reinforce = self.policies.controllers[0], self.policies.reinforces[0]
        self.chunk = max(1, steps // CHUNKS)
        self.batch_size = batch_size
        self.quality_slope = quality_slope
        self.noise = noise
        # autograph=False: nothing here needs it, and converting the optimizer's code is slow.
        self._run_chunk = tf.function(self._chunk, autograph=False)

    def _step(self, step, total_cost, settings):
        seed, reward_index, beta, base_learning_rate, exponential = settings
        step_seed = tf.random.experimental.stateless_fold_in(tf.stack([seed, 0]), step)
        sample_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
        indices = self.policies.sample(sample_seed, self.batch_size)  # one controller: Controller.sample
        cost = self.latency.batch_cost(indices)
        macs = self.macs.batch_cost(indices)
        quality = QUALITY_OFFSET + self.quality_slope * tf.math.log(macs / REFERENCE_MACS_MILLIONS)
        quality += self.noise * tf.random.stateless_normal([self.batch_size], seed=noise_seed)
        if len(self.targets) == 1:
            target = tf.constant(self.targets[0])
        else:  # each sample against its own controller's target
            target = tf.repeat(tf.constant(self.targets), self.policies.per_target)
        # All rewards are computed and one is picked, so that one traced graph serves every run.
        rewards = tf.stack([REWARDS[name](quality, cost, target, beta) for name in REWARD_NAMES])
        learning_rate = tf.where(
            exponential,
            rl_learning_rate(step, self.steps, base_learning_rate, exponential=True),
            rl_learning_rate(step, self.steps, base_learning_rate, exponential=False),
        )
        self.policies.step(indices, tf.gather(rewards, reward_index), learning_rate)
        if len(self.targets) == 1:
            return step + 1, total_cost + tf.reduce_mean(cost)[None]
        return step + 1, total_cost + tf.reduce_mean(tf.reshape(cost, [len(self.targets), -1]), axis=1)

    def _chunk(self, start, settings):
        _, total_cost = tf.while_loop(
            lambda step, _: step < start + self.chunk,
            lambda step, total: self._step(step, total, settings),
            (start, tf.zeros([len(self.targets)])),
            parallel_iterations=1,
        )
        return total_cost / float(self.chunk)

    def reset(self):
        """Back to the initial state: uniform policies, empty baselines, fresh optimizers."""
        self.policies.reset()

    def run(self, reward: Reward, base_learning_rate: float, exponential: bool, seed: int) -> list:
        """One simulated search; returns the numbers of the table, one dict per target."""
        self.reset()
        settings = (
            tf.constant(seed),
            tf.constant(REWARD_NAMES.index(reward.name)),
            tf.constant(reward.beta),
            tf.constant(base_learning_rate, tf.float32),
            tf.constant(exponential),
        )
        chunk_costs = np.asarray(
            [
                self._run_chunk(tf.constant(start), settings).numpy()
                for start in range(0, self.chunk * CHUNKS, self.chunk)
            ]
        )  # [chunks, targets]
        results = []
        for index, (target, controller) in enumerate(zip(self.targets, self.policies.controllers)):
            most_likely = controller.most_likely_architecture()
            most_likely_cost = self.latency.cost(most_likely)
            results.append(
                {
                    "mean_sampled_cost": float(np.mean(chunk_costs[-CHUNKS // 10 :, index])),
                    "most_likely_cost": most_likely_cost,
                    "most_likely_macs": self.macs.cost(most_likely),
                    "relative_error": abs(most_likely_cost / target - 1.0),
                    "entropy": float(controller.entropy()),
                }
            )
        return results


def run_configurations():
    """(space, K, reward name, β, schedule) of the requested sweep."""
    sizes = [int(size) for size in FLAGS.batch_size]
    combinations = itertools.product(FLAGS.spaces, sizes, FLAGS.schedules, FLAGS.rewards)
    for space_name, size, schedule, reward_name in combinations:
        if schedule == "constant" and reward_name != "abs":
            continue
        betas = FLAGS.mnas_betas if reward_name == "mnas" else FLAGS.betas
        for beta in betas:
            yield space_name, size, reward_name, float(beta), schedule


def _validate() -> list:
    """Every space, reward, β, schedule and target of the sweep, before anything is traced; the targets."""
    for name in FLAGS.spaces:
        tunas_keras.get_search_space(name)
    for argument, allowed in (("rewards", REWARD_NAMES), ("schedules", SCHEDULES)):
        unknown = [value for value in FLAGS[argument].value if value not in allowed]
        if unknown or not FLAGS[argument].value:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected a list of {list(allowed)}. Received: {unknown}"
            )
    sizes = cli.numbers(FLAGS.batch_size, "batch_size", minimum=1)
    for argument in ("betas", "mnas_betas"):
        for beta in cli.numbers(FLAGS[argument].value, argument, kind=float):
            if not beta < 0:
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected negative numbers. Received: {beta}"
                )
    if not FLAGS.targets:
        return []
    targets = parse_targets(cli.numbers(FLAGS.targets, "targets", kind=float), None, argument="targets")
    uneven = [size for size in sizes if size % len(targets)]
    if uneven:
        raise ValueError(
            f"Invalid value for argument `batch_size`: {uneven} samples per step do not divide among "
            f"{len(targets)} targets. Expected multiples of {len(targets)}. Received: {','.join(FLAGS.batch_size)}"
        )
    return targets


def main(argv):
    del argv
    with errors.user_input():
        targets = _validate()
    several = len(targets) > 1
    header = (
        f"{'space':20s} {'K':>3s} "
        + (f"{'K/N':>3s} {'T0':>6s} " if several else "")
        + f"{'reward':10s} {'beta':>6s} {'schedule':12s} {'mean sampled':>12s} "
        f"{'most likely':>11s} {'|c/T0-1|':>8s} {'gap':>6s} {'MACs(M)':>8s} {'entropy':>7s} {'time(s)':>7s}"
    )
    seeds = [int(seed) for seed in FLAGS.seeds] if FLAGS.seeds else [FLAGS.seed]
    print(
        f"steps={FLAGS.steps} K={','.join(FLAGS.batch_size)} base_lr={FLAGS.base_learning_rate} "
        f"Q = {QUALITY_OFFSET} + {FLAGS.quality_slope}*ln(MACs/{REFERENCE_MACS_MILLIONS:.0f}M) "
        f"+ N(0, {FLAGS.noise}^2); seeds {seeds}"
        + (" (means; |c/T0-1| as mean ± std)" if len(seeds) > 1 else "")
        + (f"; targets {','.join(f'{t:g}' for t in targets)}, one controller each" if several else "")
    )
    print(header)
    print("-" * len(header))
    simulators = {}
    for space_name, size, reward_name, beta, schedule in run_configurations():
        space = tunas_keras.get_search_space(space_name)
        if (space_name, size) not in simulators:
            simulators[space_name, size] = Simulator(
                space, FLAGS.steps, size, FLAGS.quality_slope, FLAGS.noise, targets if several else None
            )
        reward = Reward(reward_name, target=space.target_latency, beta=beta)
        start = time.time()
        runs = [
            simulators[space_name, size].run(reward, FLAGS.base_learning_rate, schedule == "exponential", seed)
            for seed in seeds
        ]  # [seed][target]
        elapsed = time.time() - start
        for index, target in enumerate(simulators[space_name, size].targets):
            columns = f"{size // len(targets):3d} {target:6.1f} " if several else ""
            row = _row([run[index] for run in runs])
            print(
                f"{space_name:20s} {size:3d} {columns}{reward_name:10s} {beta:6.2f} {schedule:12s} {row} {elapsed:7.1f}"
            )
        sys.stdout.flush()


def _row(runs: list) -> str:
    """The numbers of one table row: means over the seeds' runs (|c/T0-1| as mean ± std with several)."""
    mean = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    gap = float(np.mean([run["mean_sampled_cost"] - run["most_likely_cost"] for run in runs]))
    error = f"{mean['relative_error']:8.2%}"
    if len(runs) > 1:
        error += f" ± {float(np.std([run['relative_error'] for run in runs])):6.2%}"
    return (
        f"{mean['mean_sampled_cost']:12.2f} {mean['most_likely_cost']:11.2f} {error} {gap:6.2f} "
        f"{mean['most_likely_macs']:8.1f} {mean['entropy']:7.2f}"
    )


if __name__ == "__main__":
    cli.run(main)
