"""Multi-worker search: two local processes (TF_CONFIG on 127.0.0.1) run one search together."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent

TINY_WORKER = textwrap.dedent(
    """
    import json, sys
    from tunas_keras.training.trainer import create_strategy, run_task
    strategy = create_strategy("multi_worker")  # first: before TensorFlow initialises
    from tests.conftest import tiny_search_space
    from tests.test_search_step import tiny_config
    from tunas_keras.training.search_task import SearchTask
    config = tiny_config(model_dir=sys.argv[1], steps=6, checkpoint_every=3, summary_every=1, rl_learning_rate=2.0,
                         op_warmup=False)  # the one-hot graph traces faster
    result = run_task(SearchTask(config, space=tiny_search_space()), config, strategy=strategy)
    print("RESULT" + json.dumps({"indices": result["indices"], "replicas": strategy.num_replicas_in_sync}))
    """
)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def run_workers(command, tmp_path, timeout):
    """Starts one process per worker with its TF_CONFIG; returns (stdouts, scratch dirs)."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, scratch = [], []
    for index in range(2):
        temporary = tmp_path / f"tmp{index}"
        temporary.mkdir()
        scratch.append(temporary)
        environment = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=str(REPOSITORY),
            TMPDIR=str(temporary),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        )
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs, scratch


def assert_only_the_chief_wrote(model_dir, scratch):
    names = set(os.listdir(model_dir))
    assert {"architecture.json", "search_log.json", "report.png", "history.json", "config.json"} <= names
    assert {"checkpoints", "summaries"} <= names
    assert not [name for name in names if name.startswith((".tmp_", "tunas_worker_", "worker"))]
    # The worker's checkpoints, summaries and results went to a temporary directory, now removed.
    assert os.listdir(scratch[1]) == []


def test_two_local_workers_run_one_search(tmp_path):
    model_dir = tmp_path / "search"
    outputs, scratch = run_workers([sys.executable, "-c", TINY_WORKER, str(model_dir)], tmp_path, timeout=900)
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[6:]) for out in outputs]
    assert [result["replicas"] for result in results] == [2, 2]
    assert results[0]["indices"] == results[1]["indices"]
    assert json.load(open(model_dir / "architecture.json"))["indices"] == results[0]["indices"]
    assert len(json.load(open(model_dir / "history.json"))) == 6
    assert_only_the_chief_wrote(model_dir, scratch)


@pytest.mark.slow
def test_two_local_workers_run_tools_search(tmp_path):
    model_dir = tmp_path / "search"
    command = [
        sys.executable,
        str(REPOSITORY / "tools" / "search.py"),
        "--strategy=multi_worker",
        f"--model_dir={model_dir}",
        "--steps=4",
        "--image_size=32",
        "--batch_size=8",
        "--validation_batch_multiplier=2",
        "--architectures_per_step=2",
        "--noop_warmup",
        "--progress_bar=false",
        "--checkpoint_every=2",
    ]
    outputs, scratch = run_workers(command, tmp_path, timeout=3000)
    chief = next(line for line in outputs[0].splitlines() if line.startswith("Final architecture"))
    worker = next(line for line in outputs[1].splitlines() if line.startswith("Worker done"))
    assert chief.split()[-1] == worker.split()[-1]
    stored = json.load(open(model_dir / "architecture.json"))
    assert ":".join(map(str, stored["indices"])) == chief.split()[-1]
    assert_only_the_chief_wrote(model_dir, scratch)
