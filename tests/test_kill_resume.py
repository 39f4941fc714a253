"""kill -9 at any moment loses nothing: a killed run, restarted with the same command, ends as an
uninterrupted one.

Kill points: from outside at a random moment after the second checkpoint (SIGKILL sent by the
test), and exactly at the dangerous moments through the trainer's test hook
`TUNAS_KERAS_KILL_AT` (the process SIGKILLs itself): in the middle of a checkpoint save (its
files written, the checkpoint index not yet naming it) and between writing a final file
(architecture.json, report.png, a result file) and renaming it into place.

The toy trainer version runs by default (two short subprocesses); the real `tools/search.py`
version is `slow` (it traces the supernet's step several times).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.conftest import without_key
from tests.test_trainer import _LinearTask
from tunas_keras.training.trainer import KILL_AT_ENVIRONMENT, Trainer, create_strategy, write_atomic

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
TOY_STEPS = 12


class ResultWritingTask(_LinearTask):
    """The trainer tests' least-squares task; `finalize` also writes result.json (atomically)."""

    def finalize(self, model_dir, history):
        result = {**super().finalize(model_dir, history), "steps": len(history)}
        write_atomic(os.path.join(model_dir, "result.json"), json.dumps(result))
        return result


def run_toy(model_dir: str) -> dict:
    task = ResultWritingTask(total_steps=TOY_STEPS)
    strategy = create_strategy("one_device")
    trainer = Trainer(
        task, model_dir, {"task": "toy"}, strategy, checkpoint_every=2, summary_every=1, progress_bar=False
    )
    return trainer.run()


def _killed_toy_run(model_dir, point: str) -> int:
    script = f"from tests.test_kill_resume import run_toy; run_toy({str(model_dir)!r})"
    environment = dict(os.environ, **{KILL_AT_ENVIRONMENT: point})
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, timeout=300, cwd=REPOSITORY
    )
    return completed.returncode


def _latest_checkpoint(model_dir) -> str:
    return os.path.basename(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) or "")


def test_toy_run_killed_in_a_checkpoint_save_and_in_the_final_write_ends_as_uninterrupted(tmp_path):
    full = run_toy(str(tmp_path / "full"))
    killed = tmp_path / "killed"
    assert _killed_toy_run(killed, "checkpoint:6") == -signal.SIGKILL
    # Killed inside the save of checkpoint 6: its files are there, the index still names 4, and
    # history.json (written before the checkpoint) already holds step 6.
    assert _latest_checkpoint(killed) == "ckpt-4" and (killed / "checkpoints" / "ckpt-6.index").exists()
    assert [entry["step"] for entry in json.loads((killed / "history.json").read_text())] == list(range(1, 7))
    assert _killed_toy_run(killed, "write:result.json") == -signal.SIGKILL
    assert _latest_checkpoint(killed) == f"ckpt-{TOY_STEPS}" and not (killed / "result.json").exists()
    assert list(killed.glob(".tmp_*"))  # the half-written result.json
    resumed = run_toy(str(killed))
    assert resumed["resumed_from_step"] == TOY_STEPS
    assert resumed["weight"] == full["weight"]
    assert (killed / "history.json").read_bytes() == (tmp_path / "full" / "history.json").read_bytes()
    assert (killed / "result.json").read_text() == (tmp_path / "full" / "result.json").read_text()
    assert not list(killed.glob(".tmp_*"))


# ------------------------------------------------------------------------------ tools/search.py

SEARCH_ARGUMENTS = [
    "--image_size=32",
    "--batch_size=8",
    "--steps=6",
    "--checkpoint_every=2",
    "--summary_every=1",
    "--validation_batch_multiplier=1",
    "--noop_warmup",
    "--progress_bar=false",
]


def _search(model_dir, kill_at=None) -> subprocess.Popen:
    environment = dict(os.environ)
    if kill_at:
        environment[KILL_AT_ENVIRONMENT] = kill_at
    return subprocess.Popen(
        [sys.executable, str(REPOSITORY / "tools" / "search.py"), *SEARCH_ARGUMENTS, f"--model_dir={model_dir}"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # five search processes, three of which trace the supernet's step (~6-10 min on 2 cores)
def test_search_killed_at_any_moment_ends_as_an_uninterrupted_one(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = _search(full)  # runs beside the killed one
    process = _search(killed)
    deadline = time.time() + 1800
    while _latest_checkpoint(killed) != "ckpt-4":  # the second checkpoint
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # from outside, at whatever it is doing after checkpoint 4
    assert process.wait() == -signal.SIGKILL
    for point, died_with in (
        ("checkpoint:6", lambda: _latest_checkpoint(killed) == "ckpt-4"),  # mid-save: 6 not indexed
        ("write:architecture.json", lambda: not (killed / "architecture.json").exists()),
        ("write:report.png", lambda: (killed / "architecture.json").exists() and not (killed / "report.png").exists()),
    ):
        restarted = _search(killed, kill_at=point)
        _, err = restarted.communicate(timeout=1800)
        assert restarted.returncode == -signal.SIGKILL, (point, err[-3000:])
        assert died_with(), point
    finished = _search(killed)
    out, err = finished.communicate(timeout=1800)
    assert finished.returncode == 0, err[-3000:]
    assert "Final architecture" in out
    out, err = reference.communicate(timeout=1800)
    assert reference.returncode == 0, err[-3000:]
    # The same history from the checkpoint on (and before it), bit for bit; the same architecture.
    assert (killed / "history.json").read_bytes() == (full / "history.json").read_bytes()
    for name in ("architecture.json", "search_log.json"):  # they hold the config, whose model_dir differs
        assert without_key(json.loads((killed / name).read_text()), "model_dir") == without_key(
            json.loads((full / name).read_text()), "model_dir"
        ), name
    assert (killed / "report.png").stat().st_size > 10_000
    assert not list(killed.glob(".tmp_*"))
