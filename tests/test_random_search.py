"""Random-search baseline and the comparison report."""

import json

import pytest

import tunas_keras
from tunas_keras.training import random_search
from tunas_keras.training.compare import compare
from tunas_keras.training.random_search import RandomSearchConfig, run_random_search


def _fake_training(calls):
    """Stands in for run_training: validation accuracy decreasing with the model number."""

    def train(config):
        calls.append(config.model_dir)
        result = {"top1": 0.5 - 0.1 * len(calls), "protocol": config.protocol}
        return result

    return train


def test_respects_window_picks_best_and_resumes(tmp_path):
    config = RandomSearchConfig(num_samples=3, model_dir=str(tmp_path / "rs"), seed=3)
    calls = []
    summary = run_random_search(config, train_fn=_fake_training(calls))
    assert len(calls) == 3
    space = tunas_keras.get_search_space("proxyless")
    for row in summary["models"]:
        cost = tunas_keras.estimate_cost(space.architecture(row["indices"]))
        assert 83.0 <= cost <= 85.0
        assert cost == pytest.approx(row["cost"], abs=1e-3)
    assert summary["best"]["model"] == 0  # highest validation accuracy
    best = json.load(open(tmp_path / "rs" / "best_architecture.json"))
    assert best["indices"] == summary["models"][0]["indices"]
    assert (tmp_path / "rs" / "summary.csv").read_text().count("\n") == 4

    # Model 1 finished (a train_result.json exists), the others not: only those are trained again.
    (tmp_path / "rs" / "model_001").mkdir(parents=True)
    (tmp_path / "rs" / "model_001" / "train_result.json").write_text(json.dumps({"top1": 0.9}))
    resumed_calls = []
    resumed = run_random_search(config, train_fn=_fake_training(resumed_calls))
    assert [path.rsplit("_", 1)[-1] for path in resumed_calls] == ["000", "002"]
    assert [row["indices"] for row in resumed["models"]] == [row["indices"] for row in summary["models"]]
    assert resumed["best"]["model"] == 1


def test_real_training_tiny_budget(tmp_path):
    config = RandomSearchConfig(
        num_samples=2, model_dir=str(tmp_path / "rs"), steps=2, batch_size=16, eval_batches=2, seed=1
    )
    summary = run_random_search(config)
    assert len(summary["models"]) == 2
    assert all(0.0 <= row["valid_top1"] <= 1.0 for row in summary["models"])
    table = compare([str(tmp_path / "rs" / "model_000")], [str(tmp_path / "rs")], str(tmp_path / "cmp"))
    assert "TuNAS search | 1 |" in table and "Random search" in table
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000


def test_tolerance_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match=r"`tolerance`. Expected > 0 ms. Received: 0"):
        run_random_search(RandomSearchConfig(tolerance=0, model_dir=str(tmp_path)), train_fn=lambda c: {})


def test_uses_the_sampler_once(tmp_path, monkeypatch):
    counted = []
    original = random_search.sample_architectures

    def counting(*args, **kwargs):
        counted.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(random_search, "sample_architectures", counting)
    config = RandomSearchConfig(num_samples=1, model_dir=str(tmp_path / "rs"))
    run_random_search(config, train_fn=_fake_training([]))
    run_random_search(config, train_fn=_fake_training([]))
    assert counted == [1]
