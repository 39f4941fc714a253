"""Typed configs: files, overrides and errors; schedules."""

import functools
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tunas_keras.training import schedules
from tunas_keras.training.config import (
    FIELD_CHECKS,
    SearchConfig,
    TrainConfig,
    config_from_dict,
    config_from_flags,
    define_flags_for,
    load_config_file,
)


def test_json_and_yaml_files_with_overrides(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"space": "mobilenet_v3_like", "beta": -0.05, "steps": 20}))
    (tmp_path / "run.yaml").write_text("space: proxyless_enlarged\nimage_size: 48\nop_warmup: false\n")
    from_json = load_config_file(SearchConfig, str(tmp_path / "run.json"))
    assert (from_json.space, from_json.beta, from_json.steps) == ("mobilenet_v3_like", -0.05, 20)
    from_yaml = load_config_file(SearchConfig, str(tmp_path / "run.yaml"))
    assert (from_yaml.space, from_yaml.image_size, from_yaml.op_warmup) == ("proxyless_enlarged", 48, False)
    overridden = config_from_dict(SearchConfig, {"beta": "-0.2", "target_latency": "60"}, base=from_json)
    assert (overridden.space, overridden.beta, overridden.target_latency) == ("mobilenet_v3_like", -0.2, 60.0)


def test_command_line_flags_override_only_what_was_passed(tmp_path):
    (tmp_path / "run.yaml").write_text("steps: 20\nop_warmup: false\nprogress_bar: false\n")
    flag_values = flags.FlagValues()
    on_flag_values = lambda define: functools.partial(define, flag_values=flag_values)  # noqa: E731
    module = types.SimpleNamespace(
        DEFINE_string=on_flag_values(flags.DEFINE_string), DEFINE_boolean=on_flag_values(flags.DEFINE_boolean)
    )
    define_flags_for(SearchConfig, module)  # as the tools do with `absl.flags`
    argv = ["search", f"--config={tmp_path / 'run.yaml'}", "--zero_init_residual", "--op_warmup", "--beta=-0.05"]
    flag_values(argv + ["--noprogress_bar", "--target_latency=none"])
    config = config_from_flags(SearchConfig, flag_values)
    assert (config.steps, config.zero_init_residual, config.op_warmup, config.progress_bar) == (20, True, True, False)
    assert (config.beta, config.target_latency, config.image_size) == (-0.05, None, SearchConfig.image_size)
    flag_values.unparse_flags()
    flag_values(["search", "--zero_init_residual=false"])
    assert config_from_flags(SearchConfig, flag_values).zero_init_residual is False


def test_detection_search_keeps_the_reference_beta_under_the_classification_flags():
    from detection.config import DetectionSearchConfig, define_detection_flags  # pylint: disable=import-outside-toplevel

    flag_values = flags.FlagValues()
    on_flag_values = lambda define: functools.partial(define, flag_values=flag_values)  # noqa: E731
    module = types.SimpleNamespace(
        **{name: on_flag_values(getattr(flags, name)) for name in ("DEFINE_string", "DEFINE_boolean", "DEFINE_enum")}
    )
    define_flags_for(SearchConfig, module)  # as tools/search.py: the flags carry the classification defaults
    define_detection_flags(module, SearchConfig, DetectionSearchConfig)
    flag_values(["search"])
    assert config_from_flags(SearchConfig, flag_values).beta == -0.3
    assert config_from_flags(DetectionSearchConfig, flag_values).beta == -0.1  # the flag was not passed
    flag_values.unparse_flags()
    flag_values(["search", "--beta=-0.2"])
    assert config_from_flags(DetectionSearchConfig, flag_values).beta == -0.2


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['betta'\]"):
        config_from_dict(SearchConfig, {"betta": -0.1})
    with pytest.raises(ValueError, match=r"`steps`. Expected int. Received: 'many'"):
        config_from_dict(SearchConfig, {"steps": "many"})
    with pytest.raises(ValueError, match=r"`config`. Expected an existing JSON/YAML file"):
        load_config_file(SearchConfig, str(tmp_path / "missing.yaml"))


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@pytest.mark.parametrize(
    "space_name, target, weight_decay",
    [("proxyless", 84, 4e-5), ("proxyless_enlarged", 84, 4e-5), ("mobilenet_v3_like", 57, 3e-5)],
)
def test_paper_search_configs_hold_the_imagenet_recipe(space_name, target, weight_decay):
    config = load_config_file(SearchConfig, os.path.join(CONFIGS, f"imagenet_{space_name}.yaml"))
    assert (config.space, config.dataset, config.image_size, config.target_latency) == (
        space_name,
        "imagenet2012",
        224,
        target,
    )
    assert (config.batch_size, config.epochs, config.steps, config.architectures_per_step) == (4096, 90, None, 32)
    assert (config.optimizer, config.learning_rate, config.rl_learning_rate) == ("rmsprop", 0.165, 3e-4)
    assert (config.weight_decay, config.reward, config.beta, config.zero_init_residual) == (
        weight_decay,
        "abs",
        -0.1,
        False,
    )
    for name, (check, expected) in FIELD_CHECKS.items():
        value = getattr(config, name, None)
        assert value is None or check(value), (name, value, expected)
    standalone = load_config_file(TrainConfig, os.path.join(CONFIGS, "imagenet_standalone_90_epochs.yaml"))
    assert (standalone.epochs, standalone.optimizer, standalone.protocol) == (90, "rmsprop", "valid")


def test_learning_rate_schedule_warmup_then_cosine():
    schedule = schedules.WarmupCosine(peak_learning_rate=1.0, total_steps=100, warmup_steps=10)
    values = np.array([float(schedule(step)) for step in (0, 5, 10, 55, 100)])
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    assert schedules.scaled_learning_rate(0.165, 4096) == pytest.approx(2.64)


def test_reference_rmsprop_starts_its_mean_square_at_ones():
    """TF1 RMSPropOptimizer: ms <- rho·ms + (1 - rho)·g², ms starting at 1; mom <- m·mom + lr·g / sqrt(ms + eps)."""
    variable = tf.Variable([0.5, -1.0, 2.0])
    optimizer = schedules.make_optimizer("rmsprop", 0.165 * 256 / 8, 8, total_steps=10, warmup_fraction=0.0)
    schedules.create_optimizer_slots(optimizer, [variable])
    np.testing.assert_array_equal(optimizer.get_slot(variable, "rms").numpy(), np.ones(3))
    x, ms, mom = variable.numpy().astype(np.float64), np.ones(3), np.zeros(3)
    rng = np.random.default_rng(0)
    for step in range(3):
        gradient = rng.normal(size=3).astype(np.float32)
        rate = float(optimizer.learning_rate(step))
        optimizer.apply_gradients([(tf.constant(gradient), variable)])
        ms = 0.9 * ms + 0.1 * gradient**2
        mom = 0.9 * mom + rate * gradient / np.sqrt(ms + 1.0)
        x = x - mom
    np.testing.assert_allclose(variable.numpy(), x, rtol=1e-5)


def test_warmup_probability_decays_over_first_quarter():
    values = [float(schedules.warmup_probability(step, 100)) for step in (0, 10, 25, 60)]
    np.testing.assert_allclose(values, [1.0, 0.6, 0.0, 0.0], atol=1e-6)
    # int(fraction · total) steps, as the reference: int(0.25 · 10) = 2; none below 4 steps.
    assert [float(schedules.warmup_probability(step, 10)) for step in (0, 1, 2)] == [1.0, 0.5, 0.0]
    assert schedules.warmup_steps(3, 0.25) == 0 and float(schedules.warmup_probability(0, 3)) == 0.0
