"""The programs in `tools/` on the command line: the user's mistakes, `--help`, a quiet console.

Every tool runs in-process through `tunas_keras.cli.run` (as `python tools/x.py` does), on bad
input after bad input: each must exit with status 2 and print ONE line on stderr that names the
argument, without a traceback, before any heavy work (building a supernet or model, reading
data, exporting, training, measuring: those are replaced by functions that fail the test), and
without touching a model dir that holds an earlier run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
from absl import app, flags, logging

from detection.data import DetectionDataset
from tunas_keras import cli, errors
from tunas_keras.datasets.base import ImageDataset
from tunas_keras.training import config as config_lib
from tunas_keras.training.random_search import RandomSearchConfig

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent
TOOLS = REPOSITORY / "tools"
# Library functions that start heavy work; none may run before a tool has validated its input.
HEAVY_FUNCTIONS = (
    "tunas_keras.training.search_task.build_supernet",
    "tunas_keras.training.standalone_task.build_model",
    "tunas_keras.training.train.run_training",
    "tunas_keras.training.child_ranking.rank_children",
    "tunas_keras.training.compare.compare",
    "tunas_keras.export.pipeline.export_standalone",
    "tunas_keras.export.latency.benchmark_tflite",
    "tunas_keras.cost_models.calibration.calibrate",
    "detection.tasks.build_detector",
    "detection.tasks.build_detection_supernet",
    "detection.cli.build_detector",
    "detection.cli.export_detector",
)
# The tools' own heavy functions.
HEAVY_TOOL_FUNCTIONS = {
    "simulate_controller": ("Simulator",),
    "benchmark_embedded_dataset": ("train_and_evaluate",),
    "benchmark_supernet": ("benchmark_speed", "benchmark_search", "benchmark_startup", "memory_probe", "_run_probe"),
}


app.define_help_flags()  # once per process (absl's app.run does it on its first call), kept by run_tool


def _heavy(*args, **kwargs):
    raise AssertionError("heavy work started before the input was validated")


def run_tool(name: str, arguments: list, capsys, monkeypatch) -> tuple:
    """Runs `tools/<name>.py` with `arguments` in this process; returns (exit status, stdout, stderr)."""
    for target in HEAVY_FUNCTIONS:
        monkeypatch.setattr(target, _heavy)
    monkeypatch.setattr(ImageDataset, "make", _heavy)
    monkeypatch.setattr(DetectionDataset, "make", _heavy)
    before = set(flags.FLAGS)
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # defines the tool's flags
        for attribute in HEAVY_TOOL_FUNCTIONS.get(name, ()):
            monkeypatch.setattr(module, attribute, _heavy)
        flags.FLAGS.unparse_flags()
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            cli.run(module.main, [str(TOOLS / f"{name}.py"), *arguments])
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err
    finally:
        for flag_name in set(flags.FLAGS) - before:
            if flag_name in flags.FLAGS:
                delattr(flags.FLAGS, flag_name)
        flags.FLAGS.unparse_flags()


def _config_text(config) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """`earlier`: a model dir with an earlier search's files (another config); `corrupt`: the default
    search config with a garbage checkpoint; `files`: input files of the cases."""
    root = tmp_path_factory.mktemp("cli")
    earlier = root / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "config.json").write_text(_config_text(config_lib.SearchConfig(model_dir=str(earlier), steps=999)))
    (earlier / "history.json").write_text(json.dumps([{"step": 30, "loss": 2.5}]))
    (earlier / "architecture.json").write_text(json.dumps({"format_version": 1, "space": "proxyless"}))
    (earlier / "report.png").write_bytes(b"\x89PNG earlier")
    (earlier / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-30"\n')
    (earlier / "checkpoints" / "ckpt-30.index").write_bytes(b"earlier index")
    corrupt = root / "corrupt"
    (corrupt / "checkpoints").mkdir(parents=True)
    config = config_lib.SearchConfig(model_dir=str(corrupt), deterministic=False)
    (corrupt / "config.json").write_text(_config_text(config))
    (corrupt / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    (corrupt / "checkpoints" / "ckpt-4.index").write_bytes(b"not a checkpoint index")
    (corrupt / "checkpoints" / "ckpt-4.data-00000-of-00001").write_bytes(b"garbage")
    files = root / "files"
    files.mkdir()
    (files / "future.json").write_text(json.dumps({"format_version": 2, "space": "proxyless", "indices": [0] * 73}))
    (files / "bad.yaml").write_text("steps: [1, 2\n")
    (files / "unknown.yaml").write_text("spce: proxyless\n")
    (files / "not_a_run").mkdir()
    return {"earlier": earlier, "corrupt": corrupt, "files": files}


def _snapshot(directory: pathlib.Path) -> dict:
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# (tool, arguments, text the error line must contain: the argument's name). {E}: the earlier
# run's model dir, {C}: the corrupt one, {F}: the input files.
BAD_INPUTS = [
    ("search", ["--space=proxyles", "--model_dir={E}"], "`space`"),
    ("search", ["--reward=abss", "--model_dir={E}"], "`reward`"),
    ("search", ["--dataset=no_such_dataset", "--model_dir={E}"], "`dataset`"),
    ("search", ["--dataset=folder:{F}/not_a_run", "--model_dir={E}"], "`dataset`"),
    ("search", ["--cost_model=pixel2", "--model_dir={E}"], "`cost_model`"),
    ("search", ["--beta=0.5", "--model_dir={E}"], "`beta`"),
    ("search", ["--steps=0", "--model_dir={E}"], "`steps`"),
    ("search", ["--steps=many", "--model_dir={E}"], "`steps`"),
    ("search", ["--image_size=-32", "--model_dir={E}"], "`image_size`"),
    ("search", ["--optimizer=sgdd", "--model_dir={E}"], "`optimizer`"),
    ("search", ["--strategy=tpu_pod", "--model_dir={E}"], "`strategy`"),
    ("search", ["--warmup_fraction=1.5", "--model_dir={E}"], "`warmup_fraction`"),
    ("search", ["--config={F}/missing.yaml", "--model_dir={E}"], "`config`"),
    ("search", ["--config={F}/bad.yaml", "--model_dir={E}"], "`config`"),
    ("search", ["--config={F}/unknown.yaml", "--model_dir={E}"], "`config`"),
    ("search", ["--model_dir={E}/report.png/run"], "`model_dir`"),
    ("search", ["--model_dir={E}", "--nodeterministic"], "`model_dir`"),  # holds another config
    ("search", ["--model_dir={C}", "--nodeterministic"], "`model_dir`"),  # a corrupt checkpoint
    ("search", ["--spce=proxyless", "--model_dir={E}"], "spce"),
    ("search", ["--noop_warmup=maybe", "--model_dir={E}"], "op_warmup"),
    ("search", ["--model_dir={E}", "proxyless"], "positional"),
    ("search", ["--target_latency=60,84,110", "--model_dir={E}"], "`architectures_per_step`"),  # 4 per step
    ("search", ["--target_latency=60,fast", "--model_dir={E}"], "`target_latency`"),
    ("search", ["--target_latency=60,60", "--architectures_per_step=2", "--model_dir={E}"], "`target_latency`"),
    ("train", ["--architecture={F}/missing.json", "--model_dir={E}"], "`architecture`"),
    ("train", ["--architecture={F}/future.json", "--model_dir={E}"], "`architecture`"),
    ("train", ["--indices=0:1", "--space=proxyless", "--model_dir={E}"], "`indices`"),
    ("train", ["--indices=0:1", "--model_dir={E}"], "`space`"),
    ("train", ["--reference=mobilenet_v2", "--architecture={F}/future.json", "--model_dir={E}"], "`architecture`"),
    ("train", ["--reference=resnet50", "--model_dir={E}"], "`reference`"),
    ("train", ["--reference=mobilenet_v2", "--protocol=final", "--model_dir={E}"], "`protocol`"),
    (
        "train",
        ["--reference=mobilenet_v2", "--init_from_supernet={F}/not_a_run", "--model_dir={E}"],
        "`init_from_supernet`",
    ),
    (
        "train",
        [
            "--indices=" + ":".join(["0"] * 73),
            "--space=proxyless",
            "--init_from_supernet={F}/not_a_run",
            "--model_dir={E}",
        ],
        "`init_from_supernet`",
    ),
    ("random_search", ["--tolerance=0", "--model_dir={E}"], "`tolerance`"),
    ("random_search", ["--space=nope", "--model_dir={E}"], "`space`"),
    ("export_tflite", ["--reference=mobilenet_v2", "--quantization=int4", "--output={E}/m.tflite"], "quantization"),
    ("export_tflite", ["--reference=resnet50", "--output={E}/m.tflite"], "`reference`"),
    ("export_tflite", ["--reference=mobilenet_v2", "--output={E}/m.onnx"], "`output`"),
    (
        "export_tflite",
        ["--reference=mobilenet_v2", "--weights={E}/none.weights.h5", "--output={E}/m.tflite"],
        "`weights`",
    ),
    ("export_tflite", ["--reference=mobilenet_v2", "--qat_steps=5", "--output={E}/m.tflite"], "`quantization`"),
    ("export_tflite", ["--reference=mobilenet_v2"], "--output"),
    ("benchmark_latency", ["--model={E}/none.tflite"], "`model`"),
    ("benchmark_latency", ["--indices=0:1", "--space=proxyless", "--json_output={E}/lat.json"], "`indices`"),
    ("estimate_cost", ["--indices=0:x", "--space=proxyless"], "`indices`"),
    ("estimate_cost", ["--reference=proxylessnas_mobile", "--cost_model=nope"], "`cost_model`"),
    ("estimate_cost", ["--architecture={F}/future.json"], "`architecture`"),
    ("sample_random_architectures", ["--min_cost=90", "--max_cost=80", "--output={E}/samples.json"], "min_cost"),
    ("sample_random_architectures", ["--space=nope", "--output={E}/samples.json"], "`space`"),
    ("calibrate_cost_model", ["--output_dir={E}", "--num_heldout=1"], "`num_heldout`"),
    ("calibrate_cost_model", ["--output_dir={E}", "--space=nope"], "`space`"),
    ("simulate_controller", ["--spaces=nope"], "`space`"),
    ("simulate_controller", ["--betas=0.1"], "`betas`"),
    ("simulate_controller", ["--rewards=absolute"], "`rewards`"),
    ("simulate_controller", ["--targets=60,84,110", "--batch_size=4"], "`batch_size`"),
    ("simulate_controller", ["--targets=60,-84"], "`targets`"),
    ("compare", ["--searched={F}/not_a_run", "--output={E}/comparison"], "`searched`"),
    ("compare", ["--num_random=2", "--search_config={F}/missing.yaml", "--output={E}/comparison"], "`search_config`"),
    ("compare", ["--num_searches=1", "--train_config={F}/unknown.yaml", "--output={E}/comparison"], "`train_config`"),
    ("rank_children", ["--search_dir={F}/not_a_run"], "`search_dir`"),
    ("rank_children", ["--search_dir={C}"], "`search_dir`"),  # its checkpoint is corrupt
    (
        "train",
        ["--task=detection", "--reference=mobilenet_v3_large", "--dataset=cifar10", "--model_dir={E}"],
        "`dataset`",
    ),
    (
        "train",
        ["--task=detection", "--reference=mobilenet_v3_large", "--eval_every=0", "--model_dir={E}"],
        "`eval_every`",
    ),
    ("search", ["--task=detection", "--score_threshold=2", "--model_dir={E}"], "`score_threshold`"),
    ("search", ["--task=detection", "--cost_model=macs", "--model_dir={E}"], "`target_latency`"),
    ("search", ["--task=detection", "--model_dir={E}"], "`model_dir`"),  # holds a classification search
    (
        "export_tflite",
        ["--task=detection", "--reference=mobilenet_v3_large", "--quantization=int8", "--output={E}/d.tflite"],
        "`quantization`",
    ),
    ("benchmark_latency", ["--task=detection", "--reference=mobilenet_v3_large", "--dataset=cifar10"], "`dataset`"),
    ("benchmark_embedded_dataset", ["--architectures=smallest,medium"], "`architectures`"),
    ("benchmark_supernet", ["--measure=speeed"], "`measure`"),
]


@pytest.mark.parametrize("tool, arguments, argument", BAD_INPUTS, ids=[f"{t}:{' '.join(a)}" for t, a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_status_2(tool, arguments, argument, dirs, capsys, monkeypatch):
    earlier = _snapshot(dirs["earlier"])
    corrupt = _snapshot(dirs["corrupt"])
    names = {"E": dirs["earlier"], "C": dirs["corrupt"], "F": dirs["files"]}
    status, _, err = run_tool(tool, [value.format(**names) for value in arguments], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    print(f"{tool} {' '.join(arguments)}\n    -> {err.strip()}")  # the list in the note (pytest -s)
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and "Traceback" not in err, err
    assert argument in lines[0], lines[0]
    assert _snapshot(dirs["earlier"]) == earlier and _snapshot(dirs["corrupt"]) == corrupt
    assert not list(dirs["earlier"].glob("*.tflite")) and not (dirs["earlier"] / "samples.json").exists()


def test_there_are_many_bad_inputs_over_every_tool():
    assert len(BAD_INPUTS) >= 15
    assert {tool for tool, _, _ in BAD_INPUTS} == {path.stem for path in TOOLS.glob("*.py")}


def test_programming_errors_still_raise(capsys, monkeypatch):
    def raises_value_error(argv):
        raise ValueError("a bug, not the user's input")

    def raises_in_validation(argv):
        with errors.user_input():
            raise ValueError("Invalid value for argument `x`. Expected 1. Received: 2")

    flags.FLAGS.unparse_flags()
    with pytest.raises(ValueError, match="a bug"):
        cli.run(raises_value_error, ["tool"])
    with pytest.raises(SystemExit) as exit_info:
        cli.run(raises_in_validation, ["tool"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "Error: Invalid value for argument `x`. Expected 1. Received: 2\n"
    # --verbosity=1 (debug) shows the traceback of a user error too.
    with pytest.raises(errors.UserInputError, match="argument `x`"):
        cli.run(raises_in_validation, ["tool", "--verbosity=1"])
    flags.FLAGS.unparse_flags()


def test_verbosity_is_warning_unless_asked(monkeypatch):
    seen = []

    def record(argv):
        seen.append(logging.get_verbosity())

    for arguments in (["tool"], ["tool", "--verbosity=0"]):
        flags.FLAGS.unparse_flags()
        with pytest.raises(SystemExit):
            cli.run(record, arguments)
    flags.FLAGS.unparse_flags()
    logging.set_verbosity(logging.WARNING)
    assert seen == [logging.WARNING, logging.INFO]


@pytest.mark.parametrize("config_class", [config_lib.SearchConfig, config_lib.TrainConfig, RandomSearchConfig])
def test_every_config_field_has_a_help_line_with_type_and_default(config_class):
    for field in dataclasses.fields(config_class):
        text = config_lib.field_help(config_class, field.name)
        assert len(text) > 40 and "\n" not in text, (field.name, text)
        assert text.endswith(f"default: {field.default!r}]"), text
    assert config_lib.field_help(config_lib.SearchConfig, "steps").endswith("[int or None; default: 800]")
    assert config_lib.field_help(config_lib.TrainConfig, "space").startswith("Search space of --indices")


def test_help_lists_every_flag_with_its_help(capsys, monkeypatch):
    status, out, _ = run_tool("search", ["--help"], capsys, monkeypatch)
    assert status == 1  # absl's --help
    text = "".join(out.split())  # absl wraps the lines (also at hyphens)
    for field in dataclasses.fields(config_lib.SearchConfig):
        assert f"--{field.name}:" in text or f"--[no]{field.name}:" in text, field.name
        assert "".join(config_lib.field_help(config_lib.SearchConfig, field.name).split()) in text, field.name


QUIET_CONSOLE_SCRIPT = """
import sys
import tensorflow as tf
from tunas_keras import cli

def save(argv):
    tf.train.Checkpoint(value=tf.Variable(1.0)).write(sys.argv[1] + "/ckpt")

for arguments in (["tool"], ["tool", "--verbosity=0"]):
    try:
        cli.run(save, arguments)
    except SystemExit:
        pass
    print("=== end of run", file=sys.stderr, flush=True)
"""


def test_console_is_quiet_by_default(tmp_path):
    """A fresh process (TF_CPP_MIN_LOG_LEVEL unset) through `cli.run`: no TensorFlow start-up lines, no CUDA
    probe errors on a CPU host, no INFO lines of the checkpoint saver ('Sharding callback duration' at every
    save) by default; `--verbosity=0` brings the INFO lines back."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TF_CPP")}
    completed = subprocess.run(
        [sys.executable, "-c", "import tunas_keras\n" + QUIET_CONSOLE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    default, verbose, _ = completed.stderr.split("=== end of run\n")
    assert default == "", default
    assert "Sharding callback" in verbose, verbose
