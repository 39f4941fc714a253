"""The one-command comparison (tools/compare.py --num_searches / --num_random): resampled best-of-N,
the report, and the resumable plumbing (searches and trainings replaced by recording fakes)."""

import json
import math
import os

import numpy as np
import pytest

import tunas_keras
from tunas_keras.training import compare as compare_lib
from tunas_keras.training import random_search, search
from tunas_keras.training.config import SearchConfig, TrainConfig


def _exact_expected_best(values, size):
    """E[max of `size` of `values` drawn without replacement]: the k-th smallest is the maximum of
    C(k - 1, size - 1) of the C(n, size) subsets."""
    ordered = sorted(values)
    total = math.comb(len(ordered), size)
    return sum(value * math.comb(k, size - 1) for k, value in enumerate(ordered)) / total


def test_expected_best_of_n_matches_the_exact_expectation():
    valid = [0.31, 0.52, 0.47, 0.60, 0.38, 0.55]
    curve = compare_lib.expected_best_of_n(valid, valid, resamples=4000, seed=1)
    assert [size for size, _, _ in curve] == list(range(1, 7))
    for size, mean, _ in curve:
        assert mean == pytest.approx(_exact_expected_best(valid, size), abs=0.006), size
    assert curve[-1][1] == pytest.approx(max(valid)) and curve[-1][2] == pytest.approx(0.0)
    # Selection is on valid, the reported number is test: best on valid, worse on test.
    test = [0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert compare_lib.expected_best_of_n(valid, test, resamples=500)[-1][1] == pytest.approx(0.1)


def _fake_runs(monkeypatch, calls):
    space = tunas_keras.get_search_space("proxyless")

    def fake_search(config):
        calls.append(("search", config.seed))
        indices = [int(i) for i in np.random.default_rng(config.seed).integers(0, space.num_choices)]
        os.makedirs(config.model_dir, exist_ok=True)
        found = {
            **space.architecture(indices).to_dict(),
            "cost": float(tunas_keras.estimate_cost(space.architecture(indices))),
        }
        with open(os.path.join(config.model_dir, "architecture.json"), "w") as handle:
            json.dump(found, handle)
        return found

    def fake_training(config):
        calls.append(("train", config.model_dir))
        assert (config.protocol, config.image_size, config.steps) == ("valid", 48, 7)
        os.makedirs(config.model_dir, exist_ok=True)
        result = {"top1": 0.5 + 0.01 * len(calls)}
        with open(os.path.join(config.model_dir, "train_result.json"), "w") as handle:
            json.dump(result, handle)
        return result

    monkeypatch.setattr(search, "run_search", fake_search)
    monkeypatch.setattr(random_search.train_lib, "run_training", fake_training)
    monkeypatch.setattr("tunas_keras.training.train.run_training", fake_training)
    monkeypatch.setattr(compare_lib, "_test_accuracy", lambda train_dir, config: 0.4 + len(train_dir) % 7 / 100)


def test_run_comparison_runs_every_stage_once_and_resumes(tmp_path, monkeypatch):
    calls = []
    _fake_runs(monkeypatch, calls)
    plan = compare_lib.ComparisonPlan(
        search=SearchConfig(image_size=48, seed=3, progress_bar=False),
        train=TrainConfig(steps=7, image_size=32, progress_bar=False),  # image size follows the search
        num_searches=2,
        num_random=3,
        output_dir=str(tmp_path / "cmp"),
        resamples=50,
    )
    result = compare_lib.run_comparison(plan)
    assert [call for call in calls if call[0] == "search"] == [("search", 3), ("search", 4)]
    assert len([call for call in calls if call[0] == "train"]) == 5
    assert len(result["searched"]) == 2 and len(result["random"]) == 3
    for row in result["random"]:
        assert abs(row["cost"] / 84.0 - 1) <= 0.01  # T0 ± 1 %
    assert [size for size, _, _ in result["best_of_n"]] == [1, 2, 3]
    assert "| TuNAS search | 2 |" in result["report"] and "| random architecture (N = 1) | 3 |" in result["report"]
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    calls.clear()
    again = compare_lib.run_comparison(plan)  # everything finished: read back, nothing rerun
    assert calls == []
    assert again["searched"] == result["searched"] and again["random"] == result["random"]
