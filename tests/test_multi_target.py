"""Several latency targets in one search: parsing, per-target sampling / rewards / updates, outputs.

The searches run on the tiny test space (seconds each); one target must stay the single-target
search bit for bit.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import search_spaces
import tunas_keras
from tests.conftest import tiny_search_space
from tests.test_search_step import tiny_config
from tunas_keras.search.multi_target import TargetPolicies, parse_targets, target_label
from tunas_keras.search.rewards import Reward
from tunas_keras.training import pareto
from tunas_keras.training.config import SearchConfig, config_from_dict, validate_config
from tunas_keras.training.search_task import SearchTask
from tunas_keras.training.trainer import run_task

TARGETS = [5.0, 8.0, 11.0]  # M MACs of the tiny space (its children cost 4.4 .. 12.9)
LABELS = ["5M_MACs", "8M_MACs", "11M_MACs"]


def test_targets_from_flags_files_and_python():
    coerce = lambda value: config_from_dict(SearchConfig, {"target_latency": value}).target_latency  # noqa: E731
    assert coerce("60,84,110") == [60.0, 84.0, 110.0]
    assert coerce([60, 84.5]) == [60.0, 84.5]
    # One value stays a float, as before (same config.json, same search).
    assert coerce("84") == 84.0 and isinstance(coerce("84"), float) and coerce([84]) == 84.0
    assert coerce(None) is None
    for bad in ("60,,84", "60,fast", ""):
        with pytest.raises(ValueError, match=r"`target_latency`. Expected a number or a comma-separated list"):
            coerce(bad)
    with pytest.raises(ValueError, match=r"`target_latency`. Expected a number > 0"):
        validate_config(SearchConfig(target_latency=[60.0, -1.0]))
    assert parse_targets(None, 84.0) == [84.0] and parse_targets(60, 84.0) == [60.0]
    assert parse_targets([60.0, 84.0], 57.0) == [60.0, 84.0]
    with pytest.raises(ValueError, match=r"`target_latency`. Expected distinct targets"):
        parse_targets([60.0, 60.0], 84.0)
    with pytest.raises(ValueError, match=r"`target_latency`. Expected a positive number"):
        parse_targets([60.0, 0.0], 84.0)
    assert [target_label(60), target_label(84.5), target_label(300, "M MACs")] == ["60ms", "84.5ms", "300M_MACs"]


def test_samples_of_a_step_must_divide_among_the_targets():
    config = SearchConfig(target_latency=TARGETS, architectures_per_step=4, cost_model="macs")
    with pytest.raises(ValueError, match=r"`architectures_per_step`: 4 architectures per step do not divide among 3"):
        SearchTask(config, space=tiny_search_space())
    with pytest.raises(ValueError, match=r"distinct"):
        SearchTask(SearchConfig(target_latency=[5.0, 5.0], cost_model="macs"), space=tiny_search_space())


def _state(reinforce):
    """Every variable of one target's policy: logits, baseline, learning rate, Adam moments and step."""
    variables = [*reinforce.controller.logits, reinforce.average, reinforce.average_weight, reinforce.learning_rate]
    optimizer = reinforce.optimizer
    variables += [*optimizer.first_moments, *optimizer.second_moments, optimizer.iterations]
    return [variable.numpy().copy() for variable in variables]


def _policies(targets, samples_per_step):
    policies = TargetPolicies(tiny_search_space(), targets, samples_per_step, beta=-0.5)
    for index, controller in enumerate(policies.controllers):  # distinct, non-uniform policies
        rng = np.random.default_rng(index)
        for logits in controller.logits:
            logits.assign(rng.normal(size=logits.shape).astype(np.float32))
    return policies


def _assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_each_policy_learns_only_from_its_own_samples():
    policies = _policies(TARGETS[:2], 4)
    samples = policies.sample(tf.constant([3, 4]))
    rewards = tf.constant([0.3, 0.9, 0.1, 0.7])
    # Two steps with another policy's rewards changed: policy 0 ends in the same state, bit for bit,
    # as one trained alone on its own block.
    alone = _policies(TARGETS[:1], 2)  # the same initial logits as policy 0
    _assert_same(_state(alone.reinforces[0]), _state(policies.reinforces[0]))
    for changed in (rewards, tf.constant([0.3, 0.9, -5.0, 2.0])):
        policies.step(samples, changed, 0.5)
        alone.step(samples[:2], changed[:2], 0.5)
    _assert_same(_state(policies.reinforces[0]), _state(alone.reinforces[0]))
    # A policy that gets no samples in a step does not change at all (its baseline and Adam state neither).
    before = [_state(reinforce) for reinforce in policies.reinforces]
    stats = policies.step(samples, rewards, 0.5, counts=[4, 0])
    assert stats[1] is None
    _assert_same(_state(policies.reinforces[1]), before[1])
    moved = [logits.numpy() for logits in policies.controllers[0].logits]
    assert not all(np.array_equal(a, b) for a, b in zip(moved, before[0]))
    with pytest.raises(ValueError, match=r"`counts`. Expected 2 non-negative sample counts summing to 4"):
        policies.step(samples, rewards, 0.5, counts=[3, 0])


def test_samples_come_from_their_owners_policy_and_rewards_from_their_owners_target():
    policies = _policies(TARGETS, 6)
    assert [policies.owner(index) for index in range(6)] == [0, 0, 1, 1, 2, 2]
    seeds = [tf.constant([7, index]) for index in range(6)]
    function = tf.function(lambda index, seed: policies.sample_with_warmup(index, seed, 0.0, 0.0).indices)
    for index, seed in enumerate(seeds):  # the gathered logits inside a traced function (as the search's loop)
        own = policies.controllers[index // 2].sample_with_warmup(seed, 0.0, 0.0).indices
        np.testing.assert_array_equal(function(tf.constant(index), seed), own)
    quality, cost = tf.constant([0.5, 0.6, 0.7, 0.5, 0.4, 0.9]), tf.constant([5.0, 6.0, 8.0, 9.0, 11.0, 5.5])
    expected = [Reward("abs", target=TARGETS[index // 2], beta=-0.5)(quality[index], cost[index]) for index in range(6)]
    np.testing.assert_allclose(policies.reward(quality, cost), expected, rtol=1e-6)
    blocks = np.asarray(policies.sample(tf.constant([1, 2])))
    for index, controller in enumerate(policies.controllers):
        seed = tf.random.experimental.stateless_fold_in(tf.constant([1, 2]), index)
        np.testing.assert_array_equal(blocks[2 * index : 2 * index + 2], controller.sample(seed, 2))


def test_the_pareto_front_keeps_exactly_the_non_dominated_points(tmp_path):
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    accuracies = [0.2, 0.5, 0.4, 0.5, 0.7, 0.7]  # 2 and 3 are dominated by 1; 4 and 5 tie
    np.testing.assert_array_equal(pareto.pareto_optimal(costs, accuracies), [1, 1, 0, 0, 1, 1])
    entry = lambda cost, accuracy: {"cost": cost, "accuracy": accuracy, "indices": [0]}  # noqa: E731
    ranking = {
        "found": [{**entry(2.5, 0.6), "target_latency": 2.5}],
        "children": [entry(c, a) for c, a in zip(costs[1:5], accuracies[1:5])],
        "smallest": entry(1.0, 0.2),
        "largest": entry(5.0, 0.65),
        "num_images": 16,
        "space": "tiny",
        "cost_model": "macs",
    }
    front = pareto.front_of(ranking)
    assert [(e["cost"], e["accuracy"]) for e in front] == [(1.0, 0.2), (2.0, 0.5), (2.5, 0.6), (4.0, 0.7)]
    pareto.write_pareto_plot(str(tmp_path / "pareto.png"), ranking, "M MACs")
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


def _config(tmp_path, name, **overrides):
    """A 16-step search of the tiny space (the step tests' config) with the three targets."""
    values = dict(steps=16, batch_size=12, target_latency=TARGETS, architectures_per_step=6, summary_every=1)
    values.update(checkpoint_every=4, rl_learning_rate=2.0, model_dir=str(tmp_path / name))
    return tiny_config(**{**values, **overrides})


def _search(config, stop_after=None):
    task = SearchTask(config, space=tiny_search_space())
    return task, run_task(task, config, stop_after=stop_after)


def test_a_multi_target_search_writes_one_architecture_per_target(tmp_path, monkeypatch):
    task, result = _search(_config(tmp_path, "full"))
    monkeypatch.setitem(search_spaces.SEARCH_SPACES, task.space.name, task.space)  # for Architecture.from_dict
    directory = tmp_path / "full"
    index = json.load(open(directory / "architectures.json"))
    assert index["targets"] == TARGETS and [entry["file"] for entry in index["architectures"]] == [
        "architecture_5M_MACs.json",
        "architecture_8M_MACs.json",
        "architecture_11M_MACs.json",
    ]
    assert result["architectures"] == index["architectures"] and not (directory / "architecture.json").exists()
    cost_model = tunas_keras.cost_models.get_cost_model("macs", task.space)
    for target, entry, controller in zip(TARGETS, index["architectures"], task.policies.controllers):
        stored = json.load(open(directory / entry["file"]))
        architecture = tunas_keras.Architecture.from_dict(stored)
        assert architecture.space == "tiny" and len(architecture.indices) == task.space.num_decisions
        assert architecture.indices == tuple(controller.most_likely().numpy()) == tuple(entry["indices"])
        assert stored["target_latency"] == entry["target_latency"] == target
        assert stored["cost"] == pytest.approx(cost_model.cost(architecture), rel=1e-9) == entry["cost"]
    history = json.load(open(directory / "history.json"))
    delay = int(0.25 * 16)
    for label in LABELS:
        entropies = [entry[f"target_{label}/entropy"] for entry in history]
        np.testing.assert_allclose(entropies[: delay + 1], entropies[0], rtol=1e-6)  # frozen during the delay
        # Then the policy moves. (Its entropy may also rise: nested decisions count where their parent
        # is active, and a parent's choice can become likelier, e.g. an unskipped layer's.)
        assert abs(entropies[-1] - entropies[0]) > 1e-3
    costs = [[entry[f"target_{label}/cost"] for label in LABELS] for entry in history]
    np.testing.assert_allclose([entry["cost"] for entry in history], np.mean(costs, axis=1), rtol=1e-5)
    logits = [np.concatenate([v.numpy() for v in controller.logits]) for controller in task.policies.controllers]
    assert not np.allclose(logits[0], logits[1]) and not np.allclose(logits[1], logits[2])
    pareto = json.load(open(directory / "pareto.json"))
    assert [entry["indices"] for entry in pareto["found"]] == [entry["indices"] for entry in index["architectures"]]
    assert len(pareto["children"]) == 24 and pareto["front"]
    assert all(0.0 <= entry["accuracy"] <= 1.0 for entry in pareto["found"] + pareto["children"])
    for name in ("report.png", "pareto.png"):
        assert (directory / name).stat().st_size > 10_000
    page = (directory / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 + len(TARGETS)  # Pareto, over steps, one per target
    for label, entry, found in zip(LABELS, index["architectures"], pareto["found"]):
        assert f"Target {label}: found architecture" in page
        assert ":".join(map(str, entry["indices"])) in page and f"{found['accuracy']:.3f}" in page
    log = json.load(open(directory / "search_log.json"))
    assert [entry["target_latency"] for entry in log["targets"]] == TARGETS


def test_checkpoints_hold_every_policy(tmp_path):
    task = SearchTask(_config(tmp_path, "unused"), space=tiny_search_space())
    task.build(tf.distribute.get_strategy())
    items = task.checkpoint_items()
    kinds = [f"{kind}_{index}" for kind in ("controller", "reinforce") for index in range(3)]
    assert sorted(items) == sorted(["supernet", "optimizer", *kinds])
    checkpoint = tf.train.Checkpoint(**items)
    path = checkpoint.write(str(tmp_path / "checkpoint"))
    saved = [_state(reinforce) for reinforce in task.policies.reinforces]
    for reinforce in task.policies.reinforces:
        for variable in [*reinforce.controller.logits, reinforce.average, *reinforce.optimizer.second_moments]:
            variable.assign(variable + tf.ones_like(variable))
    checkpoint.read(path).assert_existing_objects_matched()
    for reinforce, state in zip(task.policies.reinforces, saved):
        _assert_same(_state(reinforce), state)


@pytest.mark.slow  # three searches (each traces the multi-target step)
def test_a_multi_target_search_stopped_and_resumed_ends_as_the_uninterrupted_one(tmp_path):
    task, result = _search(_config(tmp_path, "full"))
    _, stopped = _search(_config(tmp_path, "split"), stop_after=6)
    assert stopped == {"stopped_at": 6}
    resumed_task, resumed = _search(_config(tmp_path, "split"))
    assert resumed["resumed_from_step"] == 6 and resumed["architectures"] == result["architectures"]
    for controller, other in zip(task.policies.controllers, resumed_task.policies.controllers):
        for logits, resumed_logits in zip(controller.logits, other.logits):
            np.testing.assert_array_equal(logits.numpy(), resumed_logits.numpy())


def test_one_target_as_a_list_is_the_single_target_search_bit_for_bit(tmp_path):
    common = dict(target_latency=8.0, architectures_per_step=2, batch_size=8, steps=10, entropy_weight=0.05)
    histories, logits = [], []
    for name, target in (("scalar", 8.0), ("list", [8.0])):
        task, result = _search(_config(tmp_path, name, **{**common, "target_latency": target}))
        assert result["architectures"][0]["file"] == "architecture.json" and "indices" in result
        assert sorted(task.checkpoint_items()) == ["controller", "optimizer", "reinforce", "supernet"]
        histories.append(json.load(open(tmp_path / name / "history.json")))
        logits.append([v.numpy() for v in task.controller.logits])
    assert histories[0] == histories[1]  # every metric of every step, exactly
    _assert_same(logits[0], logits[1])
    assert not any(key.startswith("target_") for key in histories[0][0])
