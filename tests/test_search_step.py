"""One search step on a tiny space: weight decay, warmup scoring, K architectures per step, tracing."""

import itertools
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import search_spaces
from tests.conftest import assert_close_to_scale, run_script_for_result, tiny_search_space
from tunas_keras.masks import unpad_masks
from tunas_keras.training.config import SearchConfig
from tunas_keras.training.search_task import SearchTask, classification_loss, default_search_weight_decay


def tiny_config(**overrides):
    values = dict(
        steps=8,
        batch_size=8,
        validation_batch_multiplier=2,
        image_size=32,
        cost_model="macs",
        target_latency=6.0,
        model_dir="unused",
        progress_bar=False,
        weight_decay=0.02,
    )
    values.update(overrides)
    return SearchConfig(**values)


def built_task(**overrides):
    task = SearchTask(tiny_config(**overrides), space=tiny_search_space())
    keras.utils.set_random_seed(0)
    task.build(tf.distribute.get_strategy())
    return task


def step_function(task):
    strategy = tf.distribute.get_strategy()
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    function = tf.function(lambda inputs: strategy.run(task.search_step, args=(inputs, step)))
    return function, step


def first_batch(task):
    return next(iter(task.dataset_fn(0)(tf.distribute.InputContext())))


def child_kernel_l2(model):
    """Σw² over the conv and depthwise kernels of a plain Keras model (the classifier excluded)."""
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += float(np.sum(layer.depthwise_kernel.numpy().astype(np.float64) ** 2))
        elif isinstance(layer, keras.layers.Conv2D):
            total += float(np.sum(layer.kernel.numpy().astype(np.float64) ** 2))
    return total


def expected_l2(supernet, space, masks):
    """E[child L2] over the architectures weighted by the masks (independent choices): the
    reference's mask-weighted regulariser, computed from extracted children."""
    options = [[(choice, float(weight)) for choice, weight in enumerate(mask.numpy()) if weight > 0] for mask in masks]
    total = 0.0
    for combination in itertools.product(*options):
        weight = float(np.prod([w for _, w in combination]))
        architecture = space.architecture([choice for choice, _ in combination])
        child = supernet.extract_child(architecture, input_shape=(32, 32, 3))
        total += weight * child_kernel_l2(child)
    return total


def test_search_step_regularisation_is_half_weight_decay_over_active_kernels(monkeypatch):
    task = built_task(architectures_per_step=2)
    monkeypatch.setitem(search_spaces.SEARCH_SPACES, task.space.name, task.space)  # for extract_child
    function, step = step_function(task)
    inputs = first_batch(task)
    for current in (0, 1, 5):  # full warmup, partial warmup, one-hot masks
        step.assign(current)
        before = task.supernet.get_weights()
        result = function(inputs)
        after = task.supernet.get_weights()
        task.supernet.set_weights(before)  # the penalty was computed on the weights before the update
        samples = [unpad_masks(task.space, masks) for masks in result["samples"].masks]
        penalties = {}  # identical masks (e.g. under full warmup) need one enumeration
        for masks in samples:
            key = tuple(tuple(mask.numpy().tolist()) for mask in masks)
            if key not in penalties:
                penalties[key] = 0.02 / 2 * expected_l2(task.supernet, task.space, masks)
        expected = np.mean([penalties[tuple(tuple(m.numpy().tolist()) for m in masks)] for masks in samples])
        assert float(result["regularization_loss"]) == pytest.approx(expected, rel=1e-4)
        task.supernet.set_weights(after)
        if current == 0:  # every op averaged: nested and skipped branches count with their weights
            assert all(
                float(np.min(mask.numpy())) > 0
                for mask, decision in zip(samples[0], task.space.decisions)
                if decision.tag in ("op", "kernel_size")
            )


def _assert_trained_on(task, images, labels, initial, trained_masks, min_active=0.5):
    """The SGD step moved the weights by the mean gradient of the micro-batches under `trained_masks`
    (reference computation: direct supernet calls on each micro-batch)."""
    variables = task.supernet.trainable_variables
    count, size = len(trained_masks), images.shape[0] // len(trained_masks)
    with tf.GradientTape() as tape:
        losses = []
        for index in range(count):
            sample_masks = unpad_masks(task.space, trained_masks[index])
            part = slice(index * size, (index + 1) * size)
            logits = task.supernet(images[part], sample_masks, training=True)
            cross_entropy = classification_loss(labels[part], logits, task.config.label_smoothing)
            regularization = task.weight_decay / 2 * task.supernet.regularization_loss(sample_masks)
            losses.append(cross_entropy + regularization)
        loss = tf.add_n(losses) / count
    expected = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    moves = np.concatenate([(v.numpy() - before).ravel() for v, before in zip(variables, initial)])
    gradient = np.concatenate([np.asarray(g).ravel() for g in expected])
    assert np.count_nonzero(gradient) > min_active * gradient.size  # (warmup: most weights are on the two paths)
    # SGD's first step is -lr · gradient: one factor for every weight.
    factor = -float(np.dot(moves, gradient) / np.dot(gradient, gradient))
    assert factor > 0, factor
    scale = float(np.max(np.abs(gradient)))
    assert_close_to_scale(-moves / factor / scale, gradient / scale, 1e-3)


def test_the_step_trains_on_the_mean_gradient_of_its_k_micro_batches():
    task = built_task(architectures_per_step=2, optimizer="sgd")
    initial = [v.numpy() for v in task.supernet.trainable_variables]
    (images, labels), valid = first_batch(task)
    function, _ = step_function(task)
    result = function(((images, labels), valid))
    _assert_trained_on(task, images, labels, initial, [result["samples"].masks[index] for index in range(2)])


def test_uniform_slots_train_the_weights_on_uniform_architectures_and_reward_the_policys():
    """With a policy certain of choice 0 everywhere, slot 0 of K = 2 trains on a uniform draw while
    both rewarded samples are the policy's; slot 1 trains on its policy sample."""
    task = built_task(
        architectures_per_step=2,
        uniform_architectures_per_step=1,
        optimizer="sgd",
        op_warmup=False,
        filter_warmup=False,
    )
    for logits in task.policies.controllers[0].logits:
        logits.assign(tf.one_hot(0, logits.shape[0]) * 30.0)
    initial = [v.numpy() for v in task.supernet.trainable_variables]
    (images, labels), valid = first_batch(task)
    function, _ = step_function(task)
    result = function(((images, labels), valid))
    assert np.all(result["samples"].indices.numpy() == 0)
    uniform = task._uniform_sample(tf.constant(0, tf.int64), tf.constant(0), 0.0, 0.0)
    assert np.count_nonzero(uniform.indices.numpy()) >= 2  # unlike the policy, not choice 0 everywhere
    _assert_trained_on(task, images, labels, initial, [uniform.masks, result["samples"].masks[1]], min_active=0.25)


def test_rewards_during_the_delay_score_the_warmup_masks():
    task = built_task(architectures_per_step=2)
    function, step = step_function(task)
    result = function(first_batch(task))  # step 0: warmup probability 1, every decision replaced
    samples = result["samples"]
    assert np.all(samples.replaced.numpy())
    np.testing.assert_allclose(result["cost"], task.cost_model.mask_cost(samples.masks), rtol=1e-6)
    # The cost of the warmed-up network, not of the sampled architecture.
    assert not np.allclose(result["cost"], task.cost_model.batch_cost(samples.indices))
    # Each replaced decision scores log q = log 1 = 0: the log-probability carries no gradient.
    assert float(result["rl"]["log_prob"]) == pytest.approx(0.0, abs=1e-6)


def _traced_calls(task) -> tuple:
    """`training` of every supernet trace of the step, and the step graph's (outer, library) node counts."""
    calls = []
    original = task.supernet.call

    def counting(*args, **kwargs):
        calls.append(kwargs.get("training"))
        return original(*args, **kwargs)

    task.supernet.call = counting
    function, _ = step_function(task)
    graph = function.get_concrete_function(first_batch(task)).graph.as_graph_def()
    return calls, (len(graph.node), sum(len(function.node_def) for function in graph.library.function))


def test_the_supernet_is_traced_once_whatever_the_number_of_architectures():
    sizes = {}
    for count in (1, 4):
        # Without dropout the training micro-batches and the validation groups share one trace.
        calls, sizes[count] = _traced_calls(built_task(architectures_per_step=count))
        assert calls == [False], count
    assert sizes[1][1] == sizes[4][1]  # the loop bodies do not grow with K
    assert abs(sizes[1][0] - sizes[4][0]) <= 0.01 * sizes[1][0]
    # With dropout (a supernet built with `dropout_rate`) the two differ: one trace each.
    task = built_task(architectures_per_step=2)
    task.supernet.dropout = keras.layers.Dropout(0.2)
    calls, _ = _traced_calls(task)
    assert calls == [True, False]


def test_configuration_errors_and_defaults():
    longer = r"op / filter warmup \(3 steps\) cannot be longer than the RL delay \(2 steps\)"
    with pytest.raises(ValueError, match=longer):
        SearchTask(tiny_config(warmup_fraction=0.4), space=tiny_search_space())
    SearchTask(tiny_config(warmup_fraction=0.4, op_warmup=False, filter_warmup=False), space=tiny_search_space())
    with pytest.raises(ValueError, match=r"`architectures_per_step`. Expected an int >= 1. Received: .*=0"):
        SearchTask(tiny_config(architectures_per_step=0), space=tiny_search_space())
    with pytest.raises(ValueError, match=r"`uniform_architectures_per_step`. Expected an int in \[0, .*=2\]. .*=3"):
        SearchTask(tiny_config(architectures_per_step=2, uniform_architectures_per_step=3), space=tiny_search_space())
    task = SearchTask(tiny_config(architectures_per_step=3), space=tiny_search_space())
    with pytest.raises(ValueError, match=r"`batch_size`: 8 images do not split into 1 replica\(s\) x 3 architectures"):
        task.build(tf.distribute.get_strategy())
    assert default_search_weight_decay("mobilenet_v3_like") == 3e-5
    assert default_search_weight_decay("proxyless") == default_search_weight_decay("proxyless_enlarged") == 4e-5
    assert SearchTask(tiny_config(weight_decay=None), space=tiny_search_space()).weight_decay == 4e-5


EQUIVALENCE_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    import tf_keras as keras
    from tests.conftest import assert_close_to_scale, run_script_for_result, tiny_search_space
    from tests.test_search_step import tiny_config
    from tunas_keras.training.search_task import SearchTask

    rng = np.random.default_rng(0)
    train = (rng.normal(size=(8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32))
    valid = (rng.normal(size=(16, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 16).astype(np.int32))

    def run(strategy, count):
        task = SearchTask(tiny_config(architectures_per_step=count, optimizer="sgd", rl_learning_rate=2.0,
                                      entropy_weight=0.1), space=tiny_search_space())
        keras.utils.set_random_seed(0)
        with strategy.scope():
            task.build(strategy)
            step = tf.Variable(0, dtype=tf.int64, trainable=False)
        initial = [v.numpy().tolist() for v in task.supernet.trainable_variables]

        def value(context):
            replicas, index = context.num_replicas_in_sync, context.replica_id_in_sync_group
            part = lambda array: tf.constant(np.split(array, replicas)[index])
            return (part(train[0]), part(train[1])), (part(valid[0]), part(valid[1]))

        inputs = strategy.experimental_distribute_values_from_function(value)
        function = tf.function(lambda inputs: strategy.run(task.search_step, args=(inputs, step)))
        steps = []
        for current in (0, 1, 5, 6):  # warmup (RL lr 0, moments accumulate), then RL steps
            step.assign(current)
            result = function(inputs)
            local = lambda value: [np.atleast_1d(v.numpy()) for v in strategy.experimental_local_results(value)]
            steps.append({
                "reward": np.concatenate(local(result["reward"])).tolist(),
                "quality": np.concatenate(local(result["quality"])).tolist(),
                "cost": np.concatenate(local(result["cost"])).tolist(),
                "indices": np.concatenate(local(result["samples"].indices)).tolist(),
                "baseline": [float(v[0]) for v in local(result["rl"]["baseline"])],
            })
        return {
            "replicas": strategy.num_replicas_in_sync,
            "initial": initial,
            "steps": steps,
            "logits": [v.numpy().tolist() for v in task.controller.logits],
            "weights": [v.numpy().tolist() for v in task.supernet.trainable_variables],
        }

    results = {
        "one_device": run(tf.distribute.OneDeviceStrategy("/cpu:0"), 4),
        "replicas": run(tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)]), 1),
    }
    print("RESULT" + json.dumps(results))
    """
)


def test_k_architectures_on_one_device_equal_k_replicas():
    results = run_script_for_result(EQUIVALENCE_SCRIPT, timeout=900)
    one, many = results["one_device"], results["replicas"]
    assert (one["replicas"], many["replicas"]) == (1, 4)
    for before, other in zip(one["initial"], many["initial"]):
        np.testing.assert_array_equal(before, other)
    for first, second in zip(one["steps"], many["steps"]):
        assert first["indices"] == second["indices"]  # sample r·K + k draws with the same seed
        assert len(set(map(tuple, first["indices"]))) > 1  # and they are different architectures
        for key in ("quality", "cost", "reward"):
            np.testing.assert_allclose(first[key], second[key], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(second["baseline"], first["baseline"] * 4, rtol=1e-5, atol=1e-6)
    for name in ("logits", "weights"):
        for first, second in zip(one[name], many[name]):
            first, second = np.asarray(first), np.asarray(second)
            scale = max(float(np.max(np.abs(first))), 1e-3)
            np.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-5 * scale)
    moved = [np.max(np.abs(np.asarray(a) - np.asarray(b))) for a, b in zip(one["weights"], one["initial"])]
    assert max(moved) > 1e-3  # the shared weights did train
    assert max(np.max(np.abs(logits)) for logits in one["logits"]) > 1e-3  # and the controller moved


def test_one_step_graph_unless_a_long_one_hot_phase_pays_for_a_second():
    short = SearchTask(tiny_config(steps=120), space=tiny_search_space())
    assert {short.phase(step) for step in range(120)} == {"op_warmup"}
    long = SearchTask(tiny_config(steps=2000), space=tiny_search_space())
    assert [long.phase(step) for step in (0, 499, 500, 1999)] == ["op_warmup", "op_warmup", "one_hot", "one_hot"]
    no_warmup = SearchTask(tiny_config(steps=120, op_warmup=False), space=tiny_search_space())
    assert {no_warmup.phase(step) for step in range(120)} == {"one_hot"}
