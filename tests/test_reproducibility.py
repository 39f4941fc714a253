"""The same command with the same seed gives the same search, bit for bit, in two processes.

The configuration exercises the path whose results depended on how TensorFlow's inter-op
threads interleaved independent ops (docs/reproducibility.md): op warmup (fractional op masks)
in half of the steps, then the controller learning. Before the supernet rewrite, two such runs
with `--nodeterministic` side by side differed from the first step's loss on; after it they
happened to agree, and `--deterministic` is what guarantees it. The runs use one thread per kernel
(`--single_threaded_kernels=true`, the default on a CPU host with at most 4 cores): that mode keeps
the inter-op pool, so its determinism is measured here rather than built in.
`slow`: each process traces the supernet's op-warmup step (minutes on 2 cores).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import without_key

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
# Op warmup over the first half (at most the RL delay, as the reference requires), the controller
# learning in the second half.
ARGUMENTS = [
    "--steps=8",
    "--warmup_fraction=0.5",
    "--rl_delay_fraction=0.5",
    "--batch_size=16",
    "--validation_batch_multiplier=1",
    "--image_size=32",
    "--checkpoint_every=100",
    "--summary_every=1",
    "--progress_bar=false",
    "--seed=3",
    "--single_threaded_kernels=true",
]


@pytest.mark.slow
def test_two_processes_same_seed_identical_history(tmp_path):
    processes = [
        subprocess.Popen(
            [sys.executable, str(REPOSITORY / "tools" / "search.py"), *ARGUMENTS, f"--model_dir={tmp_path / name}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    for process in processes:  # side by side: the most contention for the thread pools
        _, err = process.communicate(timeout=2400)
        assert process.returncode == 0, err[-3000:]
    first, second = tmp_path / "first", tmp_path / "second"
    assert (first / "history.json").read_bytes() == (second / "history.json").read_bytes()
    history = json.loads((first / "history.json").read_text())
    assert len(history) == 8 and all(entry["warmup_probability"] > 0 for entry in history[:4])
    assert history[-1]["rl_learning_rate"] > 0
    assert without_key(json.loads((first / "architecture.json").read_text()), "model_dir") == without_key(
        json.loads((second / "architecture.json").read_text()), "model_dir"
    )
