"""Random sampling in a cost range, and the command-line tools (estimate, sample, simulate)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tunas_keras
from tunas_keras.cost_models import get_cost_model, sample_architectures
from tunas_keras.export.sources import resolve_architecture
from tunas_keras.schema import Architecture

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def run_tool(name, *arguments):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [sys.executable, str(REPOSITORY / "tools" / name), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_sample_architectures_in_a_cost_range():
    space = tunas_keras.get_search_space("proxyless")
    samples = sample_architectures(space, "pixel1", 10, min_cost=83.0, max_cost=85.0, seed=3)
    assert len(samples) == 10
    model = get_cost_model("pixel1", space)
    for sample in samples:
        architecture = Architecture.from_dict(sample)
        assert 83.0 <= sample["cost"] <= 85.0
        assert model.cost(architecture) == sample["cost"]
    assert samples == sample_architectures(space, "pixel1", 10, min_cost=83.0, max_cost=85.0, seed=3)
    assert len({tuple(sample["indices"]) for sample in samples}) == 10


def test_uniform_samples_match_the_reference_distribution():
    # cost-model.md §5: uniform sampling of `proxyless` has mean 92.64 ms, std 16.91 ms.
    space = tunas_keras.get_search_space("proxyless")
    costs = [sample["cost"] for sample in sample_architectures(space, "pixel1", 3000, seed=0)]
    assert np.mean(costs) == pytest.approx(92.64, abs=1.0)
    assert np.std(costs) == pytest.approx(16.91, abs=1.0)


def test_sampling_errors():
    space = tunas_keras.get_search_space("proxyless")
    with pytest.raises(ValueError, match="Expected min_cost <= max_cost"):
        sample_architectures(space, "pixel1", 1, min_cost=90, max_cost=80)
    with pytest.raises(ValueError, match="Only 0 of 1 architectures"):
        sample_architectures(space, "pixel1", 1, min_cost=1, max_cost=2, max_draws=4096)
    with pytest.raises(ValueError, match="Invalid value for argument `cost_model`"):
        sample_architectures(space, "latency", 1)


def test_the_one_architecture_resolver_of_estimate_cost(tmp_path):
    """tools/estimate_cost.py resolves with the same function as train / export (points and lists)."""
    reference = resolve_architecture(reference="proxylessnas_mobile", as_point=True)
    assert isinstance(reference, Architecture) and reference.space == "proxyless"
    assert get_cost_model("pixel1", reference.space).cost(reference) == pytest.approx(84.4162, abs=1e-3)
    assert resolve_architecture(reference="proxylessnas_mobile") == "proxylessnas_mobile"  # a name for build_model
    assert resolve_architecture(space="proxyless", indices=str(reference)) == reference
    path = tmp_path / "arch.json"
    path.write_text(reference.to_json())
    assert resolve_architecture(str(path)) == reference
    path.write_text(json.dumps([reference.to_dict()] * 2))
    assert resolve_architecture(str(path), allow_list=True) == [reference, reference]
    with pytest.raises(ValueError, match="`architecture`.*not an architecture file"):
        resolve_architecture(str(path))  # a list where one architecture is expected
    with pytest.raises(ValueError, match="Expected exactly one of `architecture`, `indices`"):
        resolve_architecture()


def test_tools_end_to_end(tmp_path):
    output = tmp_path / "random.json"
    run_tool(
        "sample_random_architectures.py",
        "--space=proxyless",
        "--min_cost=83",
        "--max_cost=85",
        "--num_samples=3",
        f"--output={output}",
    )
    samples = json.loads(output.read_text())
    assert len(samples) == 3 and all(83 <= sample["cost"] <= 85 for sample in samples)
    lines = run_tool("estimate_cost.py", f"--architecture={output}", "--cost_model=pixel1,macs").strip().splitlines()
    assert len(lines) == 3
    for line, sample in zip(lines, samples):
        assert f"pixel1={sample['cost']:.4f} ms" in line and "macs=" in line


@pytest.mark.slow
def test_simulate_controller_smoke():
    stdout = run_tool(
        "simulate_controller.py",
        "--spaces=proxyless",
        "--rewards=abs",
        "--schedules=exponential",
        "--steps=40",
        "--batch_size=8",
    )
    row = next(line for line in stdout.splitlines() if line.startswith("proxyless"))
    fields = row.split()
    assert fields[1:4] == ["abs", "-0.10", "exponential"]
    assert 30 < float(fields[4]) < 220 and 30 < float(fields[5]) < 220
