"""REINFORCE: learning-rate schedule, debiased baseline, toy convergence, multi-replica update."""

import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_script_for_result
from tunas_keras.schema import OneOf, SearchSpace
from tunas_keras.search import Controller, CrossSampleAdam, Reinforce, rl_delay_steps, rl_learning_rate


def toy_space(num_choices=4):
    return SearchSpace("toy", (OneOf(tuple(range(num_choices)), "op"),), target_latency=1.0, reference_name="toy")


def nested_toy_space():
    """A skippable op whose kernel only matters when kept: decisions (kernel, op)."""
    return SearchSpace("nested", (OneOf((OneOf((3, 5, 7), "kernel_size"), 0), "op"),), 1.0, "nested")


def reference_rl_learning_rate(step, total, base, delay_fraction=0.25, exponential=True):
    """The reference formula, written out in plain Python."""
    delay = int(delay_fraction * total)
    rate = base * (1.0 if step >= delay else 0.0)
    if exponential:
        rate *= 10.0 ** max(0.0, (step - delay) / max(1, total - delay))
    return rate


@pytest.mark.parametrize("total", [100, 10, 27])
def test_rl_learning_rate_schedule_is_the_reference_one(total):
    delay = int(0.25 * total)
    steps = [0, delay - 1, delay, (delay + total) // 2, total - 1, total]
    values = [float(rl_learning_rate(step, total, 0.01)) for step in steps]
    np.testing.assert_allclose(values, [reference_rl_learning_rate(step, total, 0.01) for step in steps], rtol=1e-5)
    # x1 when the controller starts learning, x10 at the end, 0 before.
    assert (
        values[1] == 0.0 and values[2] == pytest.approx(0.01, rel=1e-6) and values[-1] == pytest.approx(0.1, rel=1e-5)
    )
    assert rl_delay_steps(total) == delay


def test_rl_learning_rate_options_and_errors():
    constant = [float(rl_learning_rate(step, 100, 0.01, exponential=False)) for step in (10, 25, 99)]
    np.testing.assert_allclose(constant, [0, 0.01, 0.01])
    assert float(rl_learning_rate(0, 10, 0.5, delay_fraction=0.0)) == 0.5
    assert float(rl_learning_rate(9, 10, 0.5, delay_fraction=0.0)) == pytest.approx(0.5 * 10**0.9, rel=1e-5)
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


def numpy_adam(steps, beta_1=0.0, beta_2=0.999, epsilon=1e-8):
    """Reference Adam over per-sample gradients: `steps` = [(gradients [S, n], lr, reg [S, n] or None)]."""
    x = m = v = 0.0
    for t, (gradients, rate, regularization) in enumerate(steps, start=1):
        m = beta_1 * m + (1 - beta_1) * gradients.mean(axis=0)
        v = beta_2 * v + (1 - beta_2) * (gradients**2).mean(axis=0)
        x = x - rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + epsilon)
        if regularization is not None:
            x = x - rate * regularization.mean(axis=0)
    return x


def nested_sample_gradients(advantages):
    """Per-sample gradients of -A·log π for the samples [[2, 0], [1, 1]] under the uniform policy."""
    kernel = np.stack([-advantages[0] * (np.eye(3)[2] - 1 / 3), np.zeros(3)])  # the skipped sample's kernel: 0
    op = np.stack([-advantages[0] * (np.eye(2)[0] - 0.5), -advantages[1] * (np.eye(2)[1] - 0.5)])
    return kernel, op


def test_cross_sample_adam_against_numpy():
    rng = np.random.default_rng(0)
    variable = tf.Variable(np.zeros(4, np.float32), aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    optimizer = CrossSampleAdam(beta_1=0.5, beta_2=0.9, epsilon=1e-3)
    optimizer.build([variable])
    steps = []
    for index in range(4):
        gradients = rng.normal(size=(3, 4)).astype(np.float32) * (1 + index)
        regularization = rng.normal(size=(3, 4)).astype(np.float32) if index % 2 else None
        steps.append((gradients, 0.1 * (index + 1), regularization))
        optimizer.apply(
            [tf.constant(gradients)],
            [variable],
            steps[-1][1],
            None if regularization is None else [tf.constant(regularization)],
        )
    np.testing.assert_allclose(variable.numpy(), numpy_adam(steps, 0.5, 0.9, 1e-3), rtol=1e-5, atol=1e-7)
    # The second moment is the mean of g² (not the square of the mean g), unlike averaging first.
    mean_first = numpy_adam(
        [(gradients.mean(axis=0, keepdims=True), rate, reg) for gradients, rate, reg in steps], 0.5, 0.9, 1e-3
    )
    assert np.max(np.abs(variable.numpy() - mean_first)) > 1e-2
    assert int(optimizer.iterations.numpy()) == 4
    optimizer.reset()
    assert int(optimizer.iterations.numpy()) == 0 and not np.any(optimizer.second_moments[0].numpy())


def test_cross_sample_adam_updates_each_variable_as_alone():
    """Variables of different shapes (updated side by side in one vector) each follow their own Adam."""
    rng = np.random.default_rng(1)
    shapes = [(3,), (2, 2), (1,)]
    variables = [tf.Variable(np.zeros(shape, np.float32)) for shape in shapes]
    optimizer = CrossSampleAdam(beta_1=0.5, beta_2=0.9, epsilon=1e-3)
    optimizer.build(variables)
    steps = [[] for _ in shapes]
    for index in range(3):
        gradients = [rng.normal(size=(2, *shape)).astype(np.float32) for shape in shapes]
        regularization = [rng.normal(size=(2, *shape)).astype(np.float32) for shape in shapes] if index else None
        for position, gradient in enumerate(gradients):
            steps[position].append((gradient, 0.2, None if regularization is None else regularization[position]))
        optimizer.apply(
            [tf.constant(g) for g in gradients],
            variables,
            0.2,
            None if regularization is None else [tf.constant(r) for r in regularization],
        )
    for variable, shape, variable_steps in zip(variables, shapes, steps):
        assert variable.shape == shape
        np.testing.assert_allclose(variable.numpy(), numpy_adam(variable_steps, 0.5, 0.9, 1e-3), rtol=1e-5, atol=1e-7)


def test_cross_sample_adam_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Received: beta_2=1.0"):
        CrossSampleAdam(beta_2=1.0)
    optimizer = CrossSampleAdam()
    optimizer.build([tf.Variable([0.0])])
    with pytest.raises(ValueError, match="expected one gradient per built variable"):
        optimizer.apply([tf.zeros([1, 1])] * 2, [tf.Variable([0.0])] * 2, 0.1)


def test_one_step_is_reinforce_with_cross_sample_adam():
    controller = Controller(nested_toy_space())
    reinforce = Reinforce(controller)
    reinforce.step(tf.constant([0, 0]), tf.constant(1.0), 1.0)  # advantage 0: gradient 0, no move
    np.testing.assert_array_equal(controller.logits[0].numpy(), np.zeros(3))
    stats = reinforce.step(tf.constant([[2, 0], [1, 1]]), tf.constant([1.0, 3.0]), 0.5)
    advantages = np.array([1.0, 3.0]) - float(stats["baseline"])
    kernel, op = nested_sample_gradients(advantages)
    zeros = [np.zeros((1, 3)), np.zeros((1, 2))]
    expected_kernel = numpy_adam([(zeros[0], 1.0, None), (kernel, 0.5, None)])
    expected_op = numpy_adam([(zeros[1], 1.0, None), (op, 0.5, None)])
    np.testing.assert_allclose(controller.logits[0].numpy(), expected_kernel, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(controller.logits[1].numpy(), expected_op, rtol=1e-4, atol=1e-7)


def test_entropy_bonus_is_a_separate_sgd_step():
    controller = Controller(nested_toy_space())
    reinforce = Reinforce(controller, entropy_weight=0.3)
    for logits, values in zip(controller.logits, ([0.5, -0.2, 0.1], [0.3, -0.4])):
        logits.assign(values)
    samples = np.array([[2, 0], [1, 1]])
    # A constant reward: advantage 0, so only the entropy step moves the logits.
    reinforce.step(tf.constant(samples), tf.constant([1.0, 1.0]), 0.2)

    def entropy(z):
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        return -(p * np.log(p)).sum()

    def gradient(z):  # numerical d entropy / d z
        return np.array([(entropy(z + 1e-3 * e) - entropy(z - 1e-3 * e)) / 2e-3 for e in np.eye(len(z))])

    kernel, op = np.array([0.5, -0.2, 0.1]), np.array([0.3, -0.4])
    # The kernel is active in the first sample only; the op in both.
    expected_kernel = kernel + 0.2 * 0.3 * gradient(kernel) * 0.5
    expected_op = op + 0.2 * 0.3 * gradient(op)
    np.testing.assert_allclose(controller.logits[0].numpy(), expected_kernel, rtol=1e-3)
    np.testing.assert_allclose(controller.logits[1].numpy(), expected_op, rtol=1e-3)


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
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tunas_keras.schema import OneOf, SearchSpace
    from tunas_keras.search import Controller, Reinforce

    space = SearchSpace("nested", (OneOf((OneOf((3, 5, 7), "kernel_size"), 0), "op"),), 1.0, "nested")
    per_replica = [([2, 0], 1.0), ([1, 1], 3.0)]
    results = {}
    for name in ("one_device", "mirrored"):
        if name == "one_device":
            strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        else:
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            controller = Controller(space)
            reinforce = Reinforce(controller)

        def value(context):
            if strategy.num_replicas_in_sync == 1:  # both samples on the one replica
                return tf.constant([p[0] for p in per_replica]), tf.constant([p[1] for p in per_replica])
            indices, reward = per_replica[context.replica_id_in_sync_group]
            return tf.constant([indices]), tf.constant([reward])

        inputs = strategy.experimental_distribute_values_from_function(value)

        @tf.function
        def train(inputs, rate):
            return strategy.run(lambda pair: reinforce.step(pair[0], pair[1], rate), args=(inputs,))

        first = train(inputs, 0.0)  # baseline = mean reward; advantages -1 and +1
        stats = train(inputs, 0.5)
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
    results = run_script_for_result(MULTI_REPLICA_SCRIPT, timeout=300)
    assert results["mirrored"]["replicas"] == 2 and results["one_device"]["replicas"] == 1
    # The baseline is the cross-replica mean reward (2.0) on every replica.
    assert results["mirrored"]["baseline"] == [2.0, 2.0]
    # Two samples on one replica = one sample on each of two replicas: the same Adam update,
    # whose second moment is the mean over samples of g² (numpy reference).
    kernel, op = nested_sample_gradients(np.array([-1.0, 1.0]))
    expected = [numpy_adam([(gradients, 0.0, None), (gradients, 0.5, None)]) for gradients in (kernel, op)]
    for name in ("one_device", "mirrored"):
        assert results[name]["iterations"] == 2
        for logits, reference in zip(results[name]["logits"], expected):
            np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-7)
