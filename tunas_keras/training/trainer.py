"""The Trainer: strategy, input distribution, checkpoints, summaries, progress and NaN guard.

A *task* owns the per-replica maths (models, optimizers, `replica_step`); the trainer runs it
under any `tf.distribute` strategy. The same trainer runs the search (`SearchTask`) and
standalone training (`StandaloneTask`).

Checkpoints (`tf.train.CheckpointManager`) hold the step counter and everything the task lists;
randomness is derived from the step (stateless), and the input pipeline is re-created and
advanced to the restored step, so a resumed run continues the interrupted one exactly.

kill -9 safety (docs/reproducibility.md): the model dir is validated before anything is built
or written; every file goes through `write_atomic`; history.json is written before the
checkpoint of the same step; a checkpoint is only referenced once fully written (the manager
updates its index file last), so a run killed while saving resumes from the previous one; the
final writes are redone by a restart (it restores the last checkpoint and runs no step).
`configure_determinism` makes the same command and seed give the same run on one machine.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import tempfile
import time
from typing import Any, Callable, Hashable, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from tunas_keras.errors import UserInputError, user_input

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# Config fields that may change between an interrupted run and its resumption.
TEMPORARY_PREFIX = ".tmp_"  # write_atomic's temporary files
RESUMABLE_FIELDS = (
    "progress_bar",
    "checkpoint_every",
    "summary_every",
    "model_dir",
    "strategy",
    "deterministic",
    "single_threaded_kernels",
)


def create_strategy(name: str) -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy over all GPUs if there are several, else OneDeviceStrategy.

    `multi_worker` (MultiWorkerMirroredStrategy, cluster from TF_CONFIG) and `tpu`
    (TPUStrategy, TPUClusterResolver) must be created at program start, before TensorFlow
    initialises its context (any op, device query or dataset): tools create them first.
    `tpu` is thin and untested here (no TPU in CI): it connects to the cluster named by the
    environment (e.g. a Cloud TPU VM) and initialises the TPU system.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Invalid value for argument `strategy`. Expected one of {STRATEGIES}. Received: {name!r}")
    if name == "multi_worker":  # before any device query: that initialises the context
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def _cpu_only_host() -> bool:
    """No GPU or TPU visible (physical devices: asking initialises no runtime, so threads can still be set)."""
    return not (tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


# `single_threaded_kernels=None` picks one thread per kernel on CPU-only hosts with at most this
# many cores: the concurrency it relies on (independent ops within one network's forward and
# backward pass, e.g. a convolution's input and filter gradients) is a few ops wide. Measured on 2.
SINGLE_THREADED_KERNELS_MAX_CORES = 4


def resolve_single_threaded_kernels(config) -> bool:
    """`config.single_threaded_kernels`, or for None: a host without an accelerator and with at most
    `SINGLE_THREADED_KERNELS_MAX_CORES` cores. False for configs without the field (standalone
    training, whose kernels are large enough to use every core)."""
    value = getattr(config, "single_threaded_kernels", False)
    if value is not None:
        return bool(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return _cpu_only_host() and cores <= SINGLE_THREADED_KERNELS_MAX_CORES


def configure_determinism(deterministic: bool = True, single_threaded_kernels: bool = False) -> bool:
    """Makes a run bit-reproducible across processes on one machine (same command, same seed).

    The non-determinism it removes (docs/reproducibility.md): with several inter-op threads,
    TensorFlow runs independent ops of the search step concurrently, and how they interleave
    changes the float results of the supernet's forward and backward pass in their last bits
    under op warmup (fractional op masks). Measured on one step repeated on the same inputs
    (before the supernet rewrite, which no longer shows it in the same probe): 21 of 100
    repetitions differed by default, 22 of 100 with one intra-op thread, none with one inter-op
    thread; one-hot or filter-warmup masks never differed. Tiny differences flip a discrete
    architecture sample and the runs diverge. So, when `deterministic`:

    - one inter-op thread: independent ops run one after another (each kernel still uses all
      cores through the intra-op pool);
    - or, with `single_threaded_kernels`, one thread per kernel instead, independent ops running
      concurrently. That is a measurement, not a construction: on today's supernet the default
      search's 800-step history is byte-identical with one or two inter-op threads, and 1.5x
      faster on 2 cores (docs/reproducibility.md); the slow two-process test runs in this mode;
    - and, on a host with GPUs, the Trainer adds op determinism while the run lasts
      (`gpu_op_determinism`).

    Thread counts can only change before TensorFlow runs its first op (the tools call this right
    after validating); later, a warning says that the run may not be reproducible. What may
    still differ across machines: other CPUs (AVX2 vs AVX-512, oneDNN vs plain kernels), core
    counts (the intra-op split of reductions), GPUs and TensorFlow versions give other floats.

    Returns:
      Whether the run is deterministic.
    """
    threading = tf.config.threading
    if single_threaded_kernels:
        pool, get, put = (
            "intra_op",
            threading.get_intra_op_parallelism_threads,
            threading.set_intra_op_parallelism_threads,
        )
    elif deterministic:
        pool, get, put = (
            "inter_op",
            threading.get_inter_op_parallelism_threads,
            threading.set_inter_op_parallelism_threads,
        )
    else:
        return False
    if get() != 1:
        try:
            put(1)
        except RuntimeError:
            logging.warning(
                "%s_threads=1 not set: TensorFlow was initialised before configure_determinism; this run may run "
                "slower or not be bit-reproducible.",
                pool,
            )
            return False
    return deterministic


@contextlib.contextmanager
def gpu_op_determinism(enabled: bool):
    """Within the block, on a host with GPUs: `enable_op_determinism()` (deterministic cuDNN / cuBLAS
    algorithms, no atomics in reductions); the previous setting comes back afterwards.

    Not on CPU-only hosts: the CPU kernels gave identical results call after call (measured, see
    docs/reproducibility.md), our tf.data pipelines are deterministic by construction, and op
    determinism is process-wide: it makes every unseeded random op raise, also code outside the run.
    """
    if not enabled or not tf.config.list_physical_devices("GPU"):
        yield
        return
    from tensorflow.python.framework import config as tf_config  # pylint: disable=import-outside-toplevel

    enabled_before = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not enabled_before:
            tf_config.disable_op_determinism()


@contextlib.contextmanager
def graph_optimizations(enabled: bool):
    """Within the block, with `enabled=False`: no Grappler pass on the graphs instantiated (the
    meta optimizer is off); TensorFlow's setting comes back afterwards. With `enabled`, nothing changes.

    Process-wide, like every `tf.config.optimizer` option. The search turns it off on CPU-only
    hosts: there Grappler spent ~4.5 s of the first step of the search graph and the step itself
    ran no faster with it (docs/benchmarks.md, "Supernet execution modes").
    """
    if enabled:
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs: always, except on non-chief multi-worker tasks.

    As TF's convention: the `chief` task, or worker 0 of a cluster without a chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def write_atomic(path: str, data) -> None:
    """Writes `data` (str or bytes) to `path` through a temporary file, an fsync and a rename.

    A process killed at any moment leaves either the old file or the new one (and possibly a
    `.tmp_*` file beside it), never a partial `path`. The file gets the usual permissions
    (0666 minus the umask), not the 0600 of a temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(data, bytes) else "w"
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX)
    try:
        with os.fdopen(handle, mode) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        kill_point(f"write:{os.path.basename(path)}")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Test hook: `TUNAS_KERAS_KILL_AT=<point>` makes the process SIGKILL itself at that point, so that
# a test can kill a run exactly during a checkpoint save or between writing a file and renaming it
# (tests/test_kill_resume.py). Points: "checkpoint:<step>" (while checkpoint <step> is being
# written), "write:<file name>" (a write_atomic of that file, after the data, before the rename).
KILL_AT_ENVIRONMENT = "TUNAS_KERAS_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILLs this process if `TUNAS_KERAS_KILL_AT` names `name` (a no-op otherwise)."""
    if os.environ.get(KILL_AT_ENVIRONMENT) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temporary_files(model_dir: str) -> None:
    """Removes the `.tmp_*` files `write_atomic` leaves when a process is killed mid-write."""
    for name in os.listdir(model_dir):
        if name.startswith(TEMPORARY_PREFIX):
            os.remove(os.path.join(model_dir, name))


def prepare_model_dir(model_dir: str, argument: str = "model_dir") -> None:
    """Creates `model_dir` and checks that it is writable (clear error naming `argument` otherwise)."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=model_dir, prefix=".write_probe_")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise UserInputError(
            f"Invalid value for argument `{argument}`. Expected a writable directory. Received: {model_dir!r} ({error})"
        ) from error


def check_writable_file(path: str, argument: str) -> str:
    """Checks that `path` can be written (its directory exists and is writable, it is not a directory).

    Raises:
      ValueError: naming `argument`, before any work whose result would be lost.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a file path in an existing, writable directory. "
            f"Received: {path!r}"
        )
    return path


def check_config_compatible(model_dir: str, config: dict, write: bool = True) -> None:
    """Refuses to resume a run whose stored config differs (except in `RESUMABLE_FIELDS`).

    With `write`, stores `config` as `model_dir/config.json` (only when its content changes).
    """
    path = os.path.join(model_dir, "config.json")
    text = json.dumps(config, indent=2, sort_keys=True)
    if os.path.exists(path):
        try:
            with open(path) as handle:
                stored_text = handle.read()
            stored = json.loads(stored_text)
        except (OSError, ValueError) as error:
            raise UserInputError(
                f"Invalid value for argument `model_dir`: {path!r} is not readable JSON ({error}). Expected the "
                "config.json of an earlier run, or a new --model_dir."
            ) from error
        differing = sorted(
            key
            for key in set(stored) | set(config)
            if key not in RESUMABLE_FIELDS and stored.get(key) != config.get(key)
        )
        if differing:
            details = ", ".join(f"{key}: {stored.get(key)!r} -> {config.get(key)!r}" for key in differing)
            raise UserInputError(
                f"Invalid value for argument `model_dir`: {model_dir!r} holds a run with a different config "
                f"({details}). Expected the same config to resume, or a new --model_dir."
            )
        if stored_text == text:
            return
    if write:
        write_atomic(path, text)


def check_checkpoint_readable(path: str, argument: str = "model_dir") -> None:
    """Reads every tensor of the checkpoint `path` (index and data, with their checksums).

    Raises:
      UserInputError: the checkpoint is truncated, corrupt or missing files (a problem of the
        directory named by `argument`: remove the checkpoint or choose another directory).
    """
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - OpError, IndexError ("Read less bytes"), ...: all mean unreadable
        raise UserInputError(
            f"Invalid value for argument `{argument}`: checkpoint {path!r} could not be read: it is corrupt or "
            f"incomplete ({type(error).__name__}: {' '.join(str(error).split())[:300]}). Remove it or choose "
            f"another --{argument}."
        ) from error


class Task(abc.ABC):
    """Per-replica maths of a run. Subclasses create their variables in `build`."""

    total_steps: int

    @abc.abstractmethod
    def build(self, strategy: tf.distribute.Strategy) -> None:
        """Creates models, optimizers and other variables (called inside `strategy.scope()`)."""

    @abc.abstractmethod
    def checkpoint_items(self) -> dict:
        """Trackables to checkpoint besides the step counter."""

    @abc.abstractmethod
    def dataset_fn(self, start_step: int) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        """Per-replica input pipeline, advanced to `start_step`."""

    @abc.abstractmethod
    def replica_step(self, inputs: Any, step: tf.Variable, phase: Hashable = None) -> dict:
        """One training step on one replica; returns scalar metrics (averaged across replicas).

        `phase` is `self.phase(step)`, a Python value: the trainer traces one step function per
        phase (e.g. the search's op-warmup and one-hot phases), each a smaller graph.
        """

    def phase(self, step: int) -> Hashable:
        """The Python-level phase of the step that starts after `step` completed steps."""
        del step
        return None

    # Compile `replica_step` with XLA (`tf.function(jit_compile=True)`).
    jit_compile: bool = False
    # Grappler's graph optimisations while the run lasts (set in `build`; see `graph_optimizations`).
    graph_optimizations: bool = True

    def kept_checkpoints(self) -> dict:
        """`{step: name}`: steps whose checkpoint is also kept as `checkpoints/<name>` (never pruned).

        The rolling checkpoints keep only the last few steps; a task names the steps worth
        keeping (the search: its RL start, when the shared weights have seen only the warmup).
        """
        return {}

    def write_summaries(self, step: int) -> None:
        """Extra summaries (host side), called inside the trainer's summary writer context; none by default."""
        del step

    progress_names: tuple = ("loss",)

    def progress_values(self, metrics: dict) -> list:
        return [(key, metrics[key]) for key in self.progress_names if key in metrics]

    def finalize(self, model_dir: str, history: list) -> dict:
        return {}


class Trainer:
    """Runs a `Task` to `task.total_steps` under a strategy with checkpoints and summaries.

    Args:
      task: the task.
      model_dir: where checkpoints, summaries, config and results go.
      config: the run's config as a dict (stored; a resume with another config is refused).
      strategy: a `tf.distribute.Strategy` (default: `create_strategy("auto")`).
      checkpoint_every / summary_every: intervals in steps.
      progress_bar: show a Keras progress bar with ETA.
      stop_after: stop (checkpointed, as if interrupted) after this step instead of the last one;
        for time-limited slots. `run` then returns `{"stopped_at": step}` without finalising.
      seed: seeds Python, NumPy and TF (`keras.utils.set_random_seed`) before the task builds
        its variables, so that runs with the same seed start from the same weights.
      deterministic: op determinism on GPUs while the run lasts (`gpu_op_determinism`); the
        thread settings are `configure_determinism`'s, made before TensorFlow runs any op.
    """

    def __init__(
        self,
        task: Task,
        model_dir: str,
        config: dict,
        strategy: Optional[tf.distribute.Strategy] = None,
        checkpoint_every: int = 100,
        summary_every: int = 10,
        progress_bar: bool = True,
        stop_after: Optional[int] = None,
        seed: Optional[int] = None,
        deterministic: bool = False,
    ):
        self.task = task
        self.seed = seed
        self.deterministic = deterministic
        self.model_dir = model_dir
        self.config = config
        self.strategy = strategy or create_strategy("auto")
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.summary_every = max(1, int(summary_every))
        self.progress_bar = progress_bar
        self.stop_after = stop_after

    def _restore(self, checkpoint: tf.train.Checkpoint, path: Optional[str]) -> int:
        if path is None:
            return 0
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as error:  # noqa: BLE001 - the reader raises OpError, IndexError, AssertionError, ...: all mean "unusable"
            raise UserInputError(
                f"Checkpoint {path!r} could not be restored: it is corrupt or was written by an incompatible run "
                f"({type(error).__name__}: {' '.join(str(error).split())[:300]}). Remove it or choose another "
                "--model_dir."
            ) from error
        return int(checkpoint.step.numpy())

    def _make_step_function(self, step: tf.Variable):
        strategy, task = self.strategy, self.task
        # autograph=False: the steps are straight-line graphs; converting every layer's `call`
        # would only slow down tracing.
        replica_step = (
            tf.function(task.replica_step, jit_compile=True, autograph=False) if task.jit_compile else task.replica_step
        )

        @functools.partial(tf.function, autograph=False)
        def train_step(inputs, phase):
            per_replica = strategy.run(replica_step, args=(inputs, step, phase))
            reduced = {
                key: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for key, value in per_replica.items()
            }
            step.assign_add(1)
            return reduced

        return train_step

    def validate(self, output_dir: Optional[str] = None) -> Optional[str]:
        """Checks the output dir before anything is built: writable, the same config as a run it
        holds, a readable latest checkpoint. Writes nothing. Returns that checkpoint's path.

        `output_dir`: where this process writes (default `model_dir`; a scratch directory on the
        non-chief tasks of a multi-worker run, which restore the chief's checkpoints).
        """
        with user_input():
            prepare_model_dir(output_dir or self.model_dir)
            check_config_compatible(output_dir or self.model_dir, self.config, write=False)
            # Every task of a multi-worker run restores the chief's checkpoints (a shared filesystem).
            latest = tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints"))
            if latest is not None:
                check_checkpoint_readable(latest)
        return latest

    def run(self) -> dict:
        """Trains to the end (resuming if a checkpoint exists); returns the task's results.

        Under a multi-worker strategy only the chief writes into `model_dir`; the other tasks
        take part in every step and every checkpoint save (saving reads replica-local variables
        through collectives), but write into a temporary directory that is removed at the end.
        """
        if is_chief(self.strategy):
            return self._run(self.model_dir)
        scratch = tempfile.mkdtemp(prefix="tunas_worker_")
        try:
            return self._run(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(self, output_dir: str) -> dict:
        latest = self.validate(output_dir)
        check_config_compatible(output_dir, self.config)
        remove_stale_temporary_files(output_dir)
        with gpu_op_determinism(self.deterministic):
            if self.seed is not None:
                # The same initial weights in every process: a resumed run then continues exactly
                # the run an uninterrupted one would have made (they differed from step 1 before).
                keras.utils.set_random_seed(self.seed)
            with self.strategy.scope():
                self.task.build(self.strategy)
                step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
                checkpoint = tf.train.Checkpoint(step=step, **self.task.checkpoint_items())
            manager = tf.train.CheckpointManager(checkpoint, os.path.join(output_dir, "checkpoints"), max_to_keep=3)
            start = self._restore(checkpoint, latest)
            started = time.time()
            last = min(self.task.total_steps, self.stop_after or self.task.total_steps)
            with graph_optimizations(self.task.graph_optimizations):
                self._train(output_dir, step, manager, start, last)
                if last < self.task.total_steps:
                    return {"stopped_at": last}
                results = self.task.finalize(output_dir, self._load_history(output_dir, self.task.total_steps))
        results["wall_time_s"] = time.time() - started
        results["resumed_from_step"] = start
        return results

    def _train(self, output_dir: str, step: tf.Variable, manager, start: int, last: int) -> None:
        """Steps `start + 1 .. last` with summaries, progress and checkpoints.

        Kill -9 safety: history.json (entries up to step N) is written before checkpoint N, and a
        resumed run keeps only the entries up to its checkpoint, so the history never has a gap.
        """
        history = self._load_history(output_dir, start)
        dataset = self.strategy.distribute_datasets_from_function(self.task.dataset_fn(start))
        iterator = iter(dataset)
        train_step = self._make_step_function(step)
        kept = self.task.kept_checkpoints()
        writer = tf.summary.create_file_writer(os.path.join(output_dir, "summaries"))
        # Stateful: show each value as of the current step (Keras would average them over steps).
        progress = None
        if self.progress_bar and output_dir == self.model_dir:
            progress = keras.utils.Progbar(self.task.total_steps, stateful_metrics=self.task.progress_names)
        if progress is not None and start:
            progress.update(start)
        for current in range(start + 1, last + 1):
            outputs = train_step(next(iterator), self.task.phase(current - 1))
            metrics = {key: float(value) for key, value in outputs.items()}
            self._check_finite(metrics, current)
            if current % self.summary_every == 0 or current == self.task.total_steps:
                history.append({"step": current, **metrics})
                with writer.as_default(step=current):
                    for key, value in metrics.items():
                        tf.summary.scalar(key, value)
                    self.task.write_summaries(current)
            if progress is not None:
                progress.update(current, values=self.task.progress_values(metrics), finalize=current == last)
            if current in kept:
                # Before the rolling save: a kill between the two re-reaches this step on resume.
                manager.checkpoint.write(os.path.join(output_dir, "checkpoints", kept[current]))
            if current % self.checkpoint_every == 0 or current == last:
                writer.flush()
                self._save_history(output_dir, history)
                self._save_checkpoint(manager, current)
        writer.flush()

    @staticmethod
    def _save_checkpoint(manager: tf.train.CheckpointManager, current: int) -> None:
        options = None
        point = f"checkpoint:{current}"
        if os.environ.get(KILL_AT_ENVIRONMENT) == point:
            # Test hook: die after the checkpoint's files are written, before the manager's index
            # file names it (the callbacks run first), i.e. in the middle of a checkpoint save.
            options = tf.train.CheckpointOptions(experimental_write_callbacks=[lambda _: kill_point(point)])
        manager.save(checkpoint_number=current, options=options)

    @staticmethod
    def _check_finite(metrics: dict, current: int) -> None:
        bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
        if bad:
            raise FloatingPointError(
                f"Non-finite values at step {current}: {bad}. Stopped; nothing was saved for this step "
                "(the last checkpoint is intact)."
            )

    @staticmethod
    def _load_history(output_dir: str, up_to: int) -> list:
        """The entries of history.json up to step `up_to` (a run resumed at `up_to` continues it)."""
        path = os.path.join(output_dir, "history.json")
        if up_to == 0 or not os.path.exists(path):
            return []
        with open(path) as handle:
            return [entry for entry in json.load(handle) if entry["step"] <= up_to]

    @staticmethod
    def _save_history(output_dir: str, history: list) -> None:
        write_atomic(os.path.join(output_dir, "history.json"), json.dumps(history, default=_to_json_number))


def prepare_task(task_class: Callable[[Any], Task], config) -> Task:
    """Validates the whole run config and creates the task; builds nothing and reads no data.

    Then configures determinism (`config.deterministic`) before TensorFlow runs any op.

    Raises:
      UserInputError: a field is out of range or names something unknown (space, reward, cost
        model, dataset, optimizer, strategy, architecture, ...).
    """
    from tunas_keras.training.config import validate_config  # pylint: disable=import-outside-toplevel

    with user_input():
        validate_config(config)
        task = task_class(config)
    # Creating the task ran no op, so the thread pools can still be set.
    configure_determinism(config.deterministic, resolve_single_threaded_kernels(config))
    return task


def run_task(task: Task, config, strategy=None, stop_after: Optional[int] = None) -> dict:
    """Runs `task` with the trainer settings of `config` (a run config dataclass)."""
    trainer = Trainer(
        task,
        model_dir=config.model_dir,
        config=dataclasses.asdict(config),
        strategy=strategy or create_strategy(config.strategy),
        checkpoint_every=config.checkpoint_every,
        summary_every=config.summary_every,
        progress_bar=config.progress_bar,
        stop_after=stop_after,
        seed=config.seed,
        deterministic=getattr(config, "deterministic", False),
    )
    return trainer.run()


def _to_json_number(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"Not JSON serialisable: {value!r}")
