"""The generic Trainer with a toy task: resume, checkpoint errors, NaN guard, model_dir errors."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tunas_keras.errors import UserInputError
from tunas_keras.training.trainer import Task, Trainer, check_config_compatible, create_strategy, write_atomic


class _LinearTask(Task):
    """Least squares y = 3x on a deterministic stream; learning rate configurable (to force NaNs)."""

    def __init__(self, total_steps=12, learning_rate=0.05, random_init=False):
        self.total_steps = total_steps
        self.learning_rate = learning_rate
        self.random_init = random_init

    def build(self, strategy):
        # An unseeded initializer, as Keras layers use: only the Trainer's seed makes it repeatable.
        initial = keras.initializers.RandomNormal(stddev=1.0)(shape=()) if self.random_init else 0.0
        self.weight = tf.Variable(initial, name="weight")
        self.optimizer = keras.optimizers.legacy.SGD(self.learning_rate)

    def checkpoint_items(self):
        return {"weight": self.weight, "optimizer": self.optimizer}

    def dataset_fn(self, start_step):
        def make(input_context):
            x = tf.data.Dataset.range(10_000).map(lambda i: tf.cast(i % 7, tf.float32) / 7.0 + 0.1)
            return x.map(lambda v: (v, 3.0 * v)).batch(4, drop_remainder=True).skip(start_step)

        return make

    def replica_step(self, inputs, step, phase=None):
        x, y = inputs
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.weight * x - y))
        self.optimizer.apply_gradients([(tape.gradient(loss, self.weight), self.weight)])
        return {"loss": loss, "weight": tf.identity(self.weight)}

    def finalize(self, model_dir, history):
        return {"weight": float(self.weight.numpy())}


def _run(
    model_dir,
    total_steps=12,
    learning_rate=0.05,
    checkpoint_every=4,
    config=None,
    stop_after=None,
    seed=None,
    random_init=False,
):
    task = _LinearTask(total_steps, learning_rate, random_init)
    trainer = Trainer(
        task,
        str(model_dir),
        config or {"lr": learning_rate},
        strategy=create_strategy("one_device"),
        checkpoint_every=checkpoint_every,
        summary_every=2,
        progress_bar=False,
        stop_after=stop_after,
        seed=seed,
    )
    return trainer.run()


def test_runs_and_learns(tmp_path):
    result = _run(tmp_path, total_steps=40, learning_rate=0.5)
    assert abs(result["weight"] - 3.0) < 0.2
    history = json.load(open(tmp_path / "history.json"))
    assert [entry["step"] for entry in history] == list(range(2, 41, 2))
    assert history[-1]["loss"] < history[0]["loss"]
    assert os.listdir(tmp_path / "summaries")


def test_resume_equals_uninterrupted(tmp_path):
    full = _run(tmp_path / "full", total_steps=12)
    assert _run(tmp_path / "split", total_steps=12, stop_after=7) == {"stopped_at": 7}  # checkpointed at 7
    resumed = _run(tmp_path / "split", total_steps=12)
    assert resumed["resumed_from_step"] == 7
    assert resumed["weight"] == pytest.approx(full["weight"], abs=1e-7)


def test_seed_fixes_the_initial_weights_so_resume_equals_uninterrupted(tmp_path):
    first = _run(tmp_path / "first", total_steps=3, learning_rate=0.0, seed=3, random_init=True)
    second = _run(tmp_path / "second", total_steps=3, learning_rate=0.0, seed=3, random_init=True)
    other = _run(tmp_path / "other", total_steps=3, learning_rate=0.0, seed=4, random_init=True)
    assert first["weight"] == second["weight"] != other["weight"]
    full = _run(tmp_path / "full", seed=5, random_init=True)
    assert _run(tmp_path / "split", seed=5, random_init=True, stop_after=5) == {"stopped_at": 5}
    _run(tmp_path / "other_split", seed=6, random_init=True)  # Moves the global RNG on in between.
    resumed = _run(tmp_path / "split", seed=5, random_init=True)
    assert resumed["weight"] == full["weight"]


def test_nan_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match=r"Non-finite values at step \d+"):
        _run(tmp_path, total_steps=200, learning_rate=1e4, checkpoint_every=1, config={"lr": 1})
    checkpoints = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints"))
    reader = tf.train.load_checkpoint(checkpoints.model_checkpoint_path)
    assert np.isfinite(reader.get_tensor("weight/.ATTRIBUTES/VARIABLE_VALUE"))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    _run(tmp_path, total_steps=4)
    for name in os.listdir(tmp_path / "checkpoints"):
        if ".data-" in name:
            with open(tmp_path / "checkpoints" / name, "wb") as handle:
                handle.write(b"garbage")
    # Found before the task builds anything (every tensor is read with its checksum), as a user error.
    with pytest.raises(
        UserInputError, match=r"`model_dir`: checkpoint .* could not be read: it is corrupt or incomplete"
    ):
        _run(tmp_path, total_steps=8)


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
    _run(tmp_path, total_steps=4)
    checkpoint = tf.train.Checkpoint(other=tf.Variable([1.0, 2.0]))  # readable, but not this task's
    checkpoint.write(str(tmp_path / "checkpoints" / "ckpt-4"))
    with pytest.raises(
        UserInputError, match="could not be restored: it is corrupt or was written by an incompatible run"
    ):
        _run(tmp_path, total_steps=8)


def test_changed_config_is_refused(tmp_path):
    _run(tmp_path, total_steps=4, config={"lr": 0.05, "space": "proxyless"})
    with pytest.raises(ValueError, match=r"different config \(space: 'proxyless' -> 'mobilenet_v3_like'\)"):
        check_config_compatible(str(tmp_path), {"lr": 0.05, "space": "mobilenet_v3_like"})


def test_non_writable_model_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"`model_dir`. Expected a writable directory. Received: .*file/run"):
        _run(blocker / "run")


def test_unknown_strategy():
    with pytest.raises(ValueError, match=r"`strategy`. Expected one of .*Received: 'tpu_pod'"):
        create_strategy("tpu_pod")


def test_write_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "out.json"
    write_atomic(str(path), "first")
    with pytest.raises(TypeError):
        write_atomic(str(path), object())  # fails mid-write
    assert path.read_text() == "first"
    assert [name for name in os.listdir(tmp_path) if name.startswith(".tmp_")] == []


def test_write_atomic_gives_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "out.json"), "x")
    finally:
        os.umask(previous)
    assert (os.stat(tmp_path / "out.json").st_mode & 0o777) == 0o644  # not mkstemp's 0600


def test_resume_leaves_an_identical_config_json_alone(tmp_path):
    _run(tmp_path, total_steps=4)
    before = os.stat(tmp_path / "config.json").st_mtime_ns
    check_config_compatible(str(tmp_path), {"lr": 0.05})
    assert os.stat(tmp_path / "config.json").st_mtime_ns == before
    with pytest.raises(UserInputError, match="different config"):
        check_config_compatible(str(tmp_path), {"lr": 0.5})
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 0.05}


def test_a_deterministic_run_leaves_op_determinism_as_it_found_it(tmp_path):
    """Op determinism is process-wide (unseeded random ops raise under it): a run must not leave it on,
    or unrelated code after an in-process run breaks (it did: test order-dependent failures)."""
    from tensorflow.python.framework import config as tf_config

    task = _LinearTask(total_steps=2)
    Trainer(task, str(tmp_path), {}, create_strategy("one_device"), progress_bar=False, deterministic=True).run()
    assert not tf_config.is_op_determinism_enabled()
    tf.random.uniform([2])  # an unseeded random op still runs


def test_graph_optimizations_are_off_only_within_the_block():
    from tunas_keras.training.trainer import graph_optimizations

    def disabled():
        return tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)

    assert not disabled()
    with graph_optimizations(True):
        assert not disabled()
    with graph_optimizations(False):
        assert disabled()
        value = tf.function(lambda x: tf.reduce_sum(x * 2.0))(tf.ones([3]))  # instantiated without Grappler
    assert not disabled() and float(value) == 6.0


def test_single_threaded_kernels_by_default_on_a_cpu_host_with_few_cores(monkeypatch):
    from tunas_keras.training import config as config_lib  # pylint: disable=import-outside-toplevel
    from tunas_keras.training import trainer  # pylint: disable=import-outside-toplevel

    resolve = trainer.resolve_single_threaded_kernels
    monkeypatch.setattr(trainer, "_cpu_only_host", lambda: True)
    by_cores = {}
    for cores in (1, 2, 4, 5, 16):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)))
        by_cores[cores] = resolve(config_lib.SearchConfig())
    assert by_cores == {1: True, 2: True, 4: True, 5: False, 16: False}
    assert resolve(config_lib.SearchConfig(single_threaded_kernels=True)) is True  # 16 cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert resolve(config_lib.SearchConfig(single_threaded_kernels=False)) is False
    assert resolve(config_lib.TrainConfig()) is False  # one chain of large ops: threads within each kernel
    monkeypatch.setattr(trainer, "_cpu_only_host", lambda: False)
    assert resolve(config_lib.SearchConfig()) is False


_THREADS_PROBE = """
import sys
from tunas_keras.training import config as config_lib, search
single = sys.argv[1] == "True"
search.prepare_search(config_lib.SearchConfig(single_threaded_kernels=single, model_dir=sys.argv[2]))
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
"""


@pytest.mark.parametrize("single, expected", [(True, "1 0"), (False, "0 1")])
def test_a_deterministic_search_serialises_ops_or_runs_each_kernel_on_one_thread(tmp_path, single, expected):
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    # Thread pools are set once per process, before TensorFlow's first op: a fresh process each.
    result = subprocess.run(
        [sys.executable, "-c", _THREADS_PROBE, str(single), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == expected  # (intra-op, inter-op); 0: TensorFlow's default
    assert not (tmp_path / "run").exists()  # preparing writes nothing
