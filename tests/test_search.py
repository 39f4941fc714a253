"""The search end to end on the embedded data: every space, RL delay, resume, multi-replica, errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tunas_keras
from tests.conftest import SPACE_NAMES, tiny_search_space
from tunas_keras.training.config import SearchConfig
from tunas_keras.training.search import run_search
from tunas_keras.training.search_task import SearchTask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **overrides):
    values = dict(
        steps=12,
        batch_size=8,
        validation_batch_multiplier=2,
        image_size=32,
        model_dir=str(tmp_path / "search"),
        progress_bar=False,
        summary_every=1,
        checkpoint_every=4,
        rl_learning_rate=2.0,
    )
    values.update(overrides)
    return SearchConfig(**values)


def _check_search_outputs(model_dir, result, space_name):
    stored = json.load(open(model_dir / "architecture.json"))
    space = tunas_keras.get_search_space(space_name)
    architecture = tunas_keras.Architecture.from_dict(stored)
    assert architecture.space == space.name and len(architecture.indices) == space.num_decisions
    assert stored["cost"] == pytest.approx(tunas_keras.estimate_cost(architecture), abs=1e-3)
    assert stored["target_latency"] == space.target_latency
    assert result["indices"] == stored["indices"]
    history = json.load(open(model_dir / "history.json"))
    entropies = [entry["entropy"] for entry in history]
    delay = int(0.25 * 12)
    # Uniform policy while the RL learning rate is 0.
    assert all(entry["rl_learning_rate"] == 0.0 for entry in history[:delay])
    np.testing.assert_allclose(entropies[: delay + 1], entropies[0], rtol=1e-6)
    # Then the policy moves. (Its entropy may also rise: nested decisions count where their parent
    # is active, and a parent's choice can become likelier, e.g. an unskipped layer's.)
    assert abs(entropies[-1] - entropies[0]) > 1e-3
    assert all(
        entry["warmup_probability"] >= history[i + 1]["warmup_probability"] for i, entry in enumerate(history[:-1])
    )
    log = json.load(open(model_dir / "search_log.json"))
    assert len(log["final_probabilities"]) == space.num_decisions
    assert (model_dir / "report.png").stat().st_size > 10_000
    report_html = (model_dir / "report.html").read_text()
    assert report_html.count("data:image/png;base64,") == 3 and report_html.rstrip().endswith("</html>")
    assert report_html.count("background:rgba(33,113,181,") == sum(space.num_choices)  # shaded probabilities
    assert os.listdir(model_dir / "summaries")


@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_short_search_writes_architecture_and_moves_only_after_rl_delay(tmp_path, space_name):
    result = run_search(_config(tmp_path, space=space_name))
    _check_search_outputs(tmp_path / "search", result, space_name)


def _assert_resume_equals_uninterrupted(tmp_path, space=None, **overrides):
    """A search stopped after step 5 and resumed ends as the uninterrupted one (`space`: a space object)."""

    def run(name, **kwargs):
        config = _config(tmp_path, model_dir=str(tmp_path / name), **overrides)
        task = SearchTask(config, space=space) if space is not None else None
        return run_search(config, task=task, **kwargs)

    full = run("full")
    assert run("split", stop_after=5) == {"stopped_at": 5}
    resumed = run("split")
    assert resumed["resumed_from_step"] == 5
    assert resumed["indices"] == full["indices"]
    full_log = json.load(open(tmp_path / "full" / "search_log.json"))
    resumed_log = json.load(open(tmp_path / "split" / "search_log.json"))
    np.testing.assert_allclose(
        np.concatenate(resumed_log["final_probabilities"]), np.concatenate(full_log["final_probabilities"]), atol=1e-5
    )
    # Both keep the weights of the RL start (step 3 of 12), written once, beside the rolling checkpoints.
    kept = [tf.train.load_checkpoint(str(tmp_path / name / "checkpoints" / "rl_start")) for name in ("full", "split")]
    final = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "full" / "checkpoints")))
    assert [reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") for reader in kept + [final]] == [3, 3, 12]
    names = [
        name for name in final.get_variable_to_shape_map() if name.startswith("supernet/") and "OPTIMIZER" not in name
    ]
    assert names and all(np.array_equal(kept[0].get_tensor(name), kept[1].get_tensor(name)) for name in names)
    assert any(not np.array_equal(kept[0].get_tensor(name), final.get_tensor(name)) for name in names)


def test_interrupted_search_ends_with_the_same_architecture(tmp_path):
    # The tiny test space (the same search code, a supernet that traces in seconds): resuming does
    # not depend on the space, and three whole-space searches would cost ~1.5 CI minutes.
    _assert_resume_equals_uninterrupted(tmp_path, tiny_search_space(), cost_model="macs", target_latency=6.0)


@pytest.mark.slow  # three searches of the whole proxyless space
def test_interrupted_proxyless_search_ends_with_the_same_architecture(tmp_path):
    _assert_resume_equals_uninterrupted(tmp_path)


@pytest.mark.slow  # two replicas, each its own copy of the step graph
def test_multi_replica_search_on_logical_cpus(tmp_path):
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {REPO!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tunas_keras.training.config import SearchConfig
        from tunas_keras.training.search import run_search
from tunas_keras.training.search_task import SearchTask
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        config = SearchConfig(steps=6, batch_size=8, validation_batch_multiplier=2, image_size=32,
                              model_dir={str(tmp_path / "mirrored")!r}, progress_bar=False, summary_every=1)
        result = run_search(config, strategy=strategy)
        print("RESULT", json.dumps({{"replicas": strategy.num_replicas_in_sync, "indices": result["indices"]}}))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=2400)
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = [line for line in completed.stdout.splitlines() if line.startswith("RESULT")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert result["replicas"] == 2
    assert len(result["indices"]) == 73
    history = json.load(open(tmp_path / "mirrored" / "history.json"))
    assert len(history) == 6 and all(np.isfinite(entry["loss"]) for entry in history)


def test_search_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Received: .*'no_such_dataset'"):
        run_search(_config(tmp_path, dataset="no_such_dataset"))
    empty = tmp_path / "folder"
    (empty / "only_class").mkdir(parents=True)
    with pytest.raises(ValueError, match="2"):
        run_search(_config(tmp_path, dataset=f"folder:{empty}"))
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"`model_dir`. Expected a writable directory"):
        run_search(_config(tmp_path, model_dir=str(blocker / "sub")))
    with pytest.raises(ValueError, match=r"beta"):
        run_search(_config(tmp_path, beta=0.5))


def test_printed_next_steps_chain_through_their_files():

    from tunas_keras.training.config import TrainConfig, config_from_dict
    from tunas_keras.training.search import next_step_commands

    config = SearchConfig(image_size=48, zero_init_residual=True, model_dir="runs/s")
    train, export, latency = next_step_commands(config, num_classes=10)
    flags_of = lambda command: dict(part[2:].split("=", 1) for part in command.split()[2:] if "=" in part)  # noqa: E731
    train_flags, export_flags, latency_flags = flags_of(train), flags_of(export), flags_of(latency)
    assert train.startswith("python tools/train.py ") and "--zero_init_residual" in train.split()
    recipe = config_from_dict(TrainConfig, {k: v for k, v in train_flags.items() if k not in ("architecture",)})
    assert (recipe.dataset, recipe.image_size, recipe.optimizer, recipe.model_dir) == (
        "embedded",
        48,
        "adam",
        "runs/s/standalone",
    )
    assert train_flags["architecture"] == export_flags["architecture"] == "runs/s/architecture.json"
    assert export_flags["weights"] == os.path.join(recipe.model_dir, "model.weights.h5")  # the trained weights
    assert (export_flags["num_classes"], export_flags["image_size"], export_flags["quantization"]) == (
        "10",
        "48",
        "int8",
    )
    assert latency_flags["model"] == export_flags["output"]
    other = next_step_commands(SearchConfig(dataset="cifar10", model_dir="runs/c"), num_classes=10)
    assert "--optimizer" not in other[0]  # another dataset: the reference recipe (TrainConfig's defaults)
