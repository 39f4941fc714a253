"""REINFORCE: learning-rate schedule, debiased baseline, toy convergence, multi-replica update."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tunas_keras.schema import OneOf, SearchSpace
from tunas_keras.search import Controller, Reinforce, rl_learning_rate

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def toy_space(num_choices=4):
    return SearchSpace("toy", (OneOf(tuple(range(num_choices)), "op"),), target_latency=1.0, reference_name="toy")


def nested_toy_space():
    """A skippable op whose kernel only matters when kept: decisions (kernel, op)."""
    return SearchSpace("nested", (OneOf((OneOf((3, 5, 7), "kernel_size"), 0), "op"),), 1.0, "nested")


def test_rl_learning_rate_schedule():
    values = [float(rl_learning_rate(step, 100, 0.01)) for step in (0, 24, 25, 50, 99, 100)]
    np.testing.assert_allclose(values, [0, 0, 0.01 * 10**0.25, 0.01 * 10**0.5, 0.01 * 10**0.99, 0.1], rtol=1e-5)
    constant = [float(rl_learning_rate(step, 100, 0.01, exponential=False)) for step in (10, 25, 99)]
    np.testing.assert_allclose(constant, [0, 0.01, 0.01])
    assert float(rl_learning_rate(0, 10, 0.5, delay_fraction=0.0)) == 0.5
    with pytest.raises(ValueError, match="Expected a value in \\[0, 1\\). Received: delay_fraction=1.5"):
        rl_learning_rate(0, 10, 0.5, delay_fraction=1.5)
    with pytest.raises(ValueError, match="Expected > 0. Received: total_steps=0"):
        rl_learning_rate(0, 0, 0.5)


def test_baseline_is_zero_debiased():
    reinforce = Reinforce(Controller(toy_space()), momentum=0.95)
    first = reinforce.step(tf.constant([1]), tf.constant(0.7), 0.0)
    assert float(first["baseline"]) == pytest.approx(0.7, rel=1e-6)
    assert float(first["advantage"]) == pytest.approx(0.0, abs=1e-6)
    second = reinforce.step(tf.constant([[1], [2]]), tf.constant([0.2, 0.4]), 0.0)
    expected = (0.95 * 0.05 * 0.7 + 0.05 * 0.3) / (1 - 0.95**2)
    assert float(second["baseline"]) == pytest.approx(expected, rel=1e-5)
    assert float(second["reward"]) == pytest.approx(0.3, rel=1e-6)
    assert float(second["advantage"]) == pytest.approx(0.3 - expected, rel=1e-5)


def test_one_step_gradient_is_reinforce():
    controller = Controller(nested_toy_space())
    reinforce = Reinforce(controller, optimizer_fn=lambda rate: keras.optimizers.SGD(rate))
    reinforce.step(tf.constant([0, 0]), tf.constant(1.0), 1.0)  # advantage 0: no change
    np.testing.assert_array_equal(controller.logits[0].numpy(), np.zeros(3))
    stats = reinforce.step(tf.constant([[2, 0], [1, 1]]), tf.constant([1.0, 3.0]), 0.5)
    baseline = float(stats["baseline"])
    advantages = np.array([1.0, 3.0]) - baseline
    # d(-A log p_i)/dz = -A (onehot_i - p); averaged over the batch; the skipped sample's kernel does not count.
    kernel_gradient = 0.5 * (-advantages[0]) * (np.eye(3)[2] - 1 / 3)
    op_gradient = 0.5 * ((-advantages[0]) * (np.eye(2)[0] - 0.5) + (-advantages[1]) * (np.eye(2)[1] - 0.5))
    np.testing.assert_allclose(controller.logits[0].numpy(), -0.5 * kernel_gradient, rtol=1e-5)
    np.testing.assert_allclose(controller.logits[1].numpy(), -0.5 * op_gradient, rtol=1e-5)


def test_converges_on_a_toy_problem():
    controller = Controller(toy_space(4))
    reinforce = Reinforce(controller)
    values = tf.constant([0.1, 0.5, 0.9, 0.3])

    @tf.function(autograph=False)
    def step(seed):
        indices = controller.sample(seed, batch_size=8)
        noise = 0.05 * tf.random.stateless_normal([8], seed=seed)
        return reinforce.step(indices, tf.gather(values, indices[:, 0]) + noise, 0.05)

    for iteration in range(150):
        step(tf.constant([iteration, 0]))
    assert int(controller.most_likely()[0]) == 2
    assert float(controller.probabilities()[0][2]) > 0.9


def test_entropy_regularisation_keeps_the_policy_wider():
    def final_entropy(weight):
        controller = Controller(toy_space(4))
        reinforce = Reinforce(controller, entropy_weight=weight)

        @tf.function(autograph=False)
        def step(seed):
            indices = controller.sample(seed, batch_size=8)
            return reinforce.step(indices, tf.cast(indices[:, 0], tf.float32), 0.05)

        for iteration in range(60):
            step(tf.constant([iteration, 1]))
        return float(controller.entropy())

    assert final_entropy(1.0) > final_entropy(0.0) + 0.1


def test_rejects_bad_arguments():
    controller = Controller(toy_space())
    with pytest.raises(ValueError, match="Received: momentum=1.0"):
        Reinforce(controller, momentum=1.0)
    with pytest.raises(ValueError, match="Received: entropy_weight=-1"):
        Reinforce(controller, entropy_weight=-1)
    with pytest.raises(ValueError, match=r"Expected an int tensor of shape \[\.\.\., 1\]"):
        Reinforce(controller).step(tf.constant([[1, 2]]), tf.constant([1.0]), 0.1)


MULTI_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tunas_keras.schema import OneOf, SearchSpace
    from tunas_keras.search import Controller, Reinforce

    space = SearchSpace("nested", (OneOf((OneOf((3, 5, 7), "kernel_size"), 0), "op"),), 1.0, "nested")
    per_replica = [([2, 0], 1.0), ([1, 1], 3.0)]
    results = {}
    for name in ("one_device", "mirrored", "mirrored_adam"):
        if name == "one_device":
            strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        else:
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        adam = name.endswith("adam")
        with strategy.scope():
            controller = Controller(space)
            optimizer_fn = None if adam else (lambda rate: keras.optimizers.SGD(rate))
            reinforce = Reinforce(controller, optimizer_fn=optimizer_fn)

        def value(context):
            if strategy.num_replicas_in_sync == 1:  # both samples on the one replica
                return tf.constant([p[0] for p in per_replica]), tf.constant([p[1] for p in per_replica])
            indices, reward = per_replica[context.replica_id_in_sync_group]
            return tf.constant(indices), tf.constant(reward)

        inputs = strategy.experimental_distribute_values_from_function(value)

        @tf.function
        def train(inputs):
            return strategy.run(lambda pair: reinforce.step(pair[0], pair[1], 0.5), args=(inputs,))

        stats = train(inputs)
        stats = train(inputs) if adam else stats
        baseline = strategy.experimental_local_results(stats["baseline"])
        results[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "baseline": [float(b) for b in baseline],
            "logits": [v.numpy().tolist() for v in controller.logits],
            "iterations": int(reinforce.optimizer.iterations.numpy()),
        }
    print("RESULT" + json.dumps(results))
    """
)


def test_update_inside_strategy_run_one_device_and_mirrored():
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [sys.executable, "-c", MULTI_REPLICA_SCRIPT], capture_output=True, text=True, env=environment, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    results = json.loads(line[len("RESULT") :])
    assert results["mirrored"]["replicas"] == 2 and results["one_device"]["replicas"] == 1
    # The baseline is the cross-replica mean reward (2.0) on every replica.
    assert results["mirrored"]["baseline"] == [2.0, 2.0]
    # Applied gradient = mean over replicas = the one-device gradient of both samples.
    advantages = np.array([-1.0, 1.0])
    kernel_gradient = 0.5 * (-advantages[0]) * (np.eye(3)[2] - 1 / 3)
    op_gradient = 0.5 * ((-advantages[0]) * (np.eye(2)[0] - 0.5) + (-advantages[1]) * (np.eye(2)[1] - 0.5))
    for name in ("one_device", "mirrored"):
        np.testing.assert_allclose(results[name]["logits"][0], -0.5 * kernel_gradient, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(results[name]["logits"][1], -0.5 * op_gradient, rtol=1e-5, atol=1e-7)
    adam = results["mirrored_adam"]
    # Adam with beta_1 = 0 moves each logit by ~ the learning rate per step (0.5, two steps).
    assert adam["iterations"] == 2
    np.testing.assert_allclose(adam["logits"][1], [-1.0, 1.0], atol=1e-3)
