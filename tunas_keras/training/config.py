"""Typed run configurations, loaded from JSON / YAML and overridden field by field.

A config is a dataclass; the command-line tools derive one absl flag per field
(`define_flags_for`) and only override the fields a user actually passed
(`config_from_flags`), so `--config run.yaml --beta=-0.05` means "the file, except β".
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from typing import Any, Optional, Type, TypeVar, Union, get_type_hints

import yaml

ConfigT = TypeVar("ConfigT")


@dataclasses.dataclass
class RunConfig:
    """Fields shared by every training run: data, schedule, weight optimizer, bookkeeping."""

    dataset: str = "embedded"
    data_dir: Optional[str] = None
    held_out_fraction: float = 0.1
    steps: Optional[int] = 300
    epochs: Optional[float] = None  # overrides `steps` when set
    batch_size: int = 64
    image_size: int = 32
    strategy: str = "auto"
    model_dir: str = "runs/run"
    seed: int = 0
    # "rmsprop" is the reference (decay 0.9, momentum 0.9, eps 1.0); lr = base × batch / 256 with
    # linear warmup then cosine.
    optimizer: str = "rmsprop"
    learning_rate: float = 0.165
    learning_rate_warmup_fraction: float = 0.025
    label_smoothing: float = 0.1
    # L2 as the reference: a penalty weight_decay / 2 · Σw² over the non-classifier kernels.
    weight_decay: float = 4e-5
    # Start each residual branch's last batch-norm gamma at 0 (Goyal et al. 2017; not the reference
    # recipe): deep networks then train in a short budget (docs/benchmarks.md, "Embedded dataset").
    zero_init_residual: bool = False
    checkpoint_every: int = 100
    summary_every: int = 10
    progress_bar: bool = True
    deterministic: bool = True


@dataclasses.dataclass
class SearchConfig(RunConfig):
    """Everything that defines a TuNAS search run (paper §4, design.md §4–§7).

    The defaults are the embedded offline demo (468–665 s measured on idle 2-core CPUs): 800
    steps of batch 64 at 64 px, K = 4 architectures per step (micro-batches of 16), residual
    branches starting at zero, RL learning rate 0.4, β = −0.3; its children reach ~0.98
    validation accuracy and its argmax landed within 2 % of T0 for 5 of 5 seeds with one thread
    per kernel (the default on small CPU hosts; at the reference's β = −0.1, 3 of 5:
    docs/benchmarks.md, "A stronger cost penalty"). The
    paper's ImageNet recipe is
    one file away: `--config=configs/imagenet_<space>.yaml` (batch 4096, 90 epochs, 224 px,
    RMSProp, RL lr 3e-4). The demo trains the shared weights with Adam (peak lr 0.032 × 64 / 256
    = 8e-3): in a few hundred small-batch steps the reference RMSProp (ε = 1, lr 0.165 × batch /
    256) first drives the loss above chance and learns far less (docs/benchmarks.md, "Embedded
    dataset").
    """

    space: str = "proxyless"
    # ms; None: the space's default (84 / 57). Several targets (a list, or "60,84,110" on the command
    # line): one controller per target over one shared supernet (tunas_keras.search.multi_target).
    target_latency: Union[float, list, None] = None
    reward: str = "abs"
    # The reference's β is -0.1 (configs/imagenet_*.yaml). The demo's quality signal is one
    # validation batch of 128 images per sample over 600 RL steps, whose noise (~0.02) drowns a
    # 2 % cost error priced at 0.1 x 0.02; at -0.3 the argmax lands closer to T0 (docs/benchmarks.md,
    # "A stronger cost penalty").
    beta: float = -0.3
    cost_model: str = "pixel1"
    # 64 px (stride-32 networks see too little at 32 px) and zero-init residual branches: without
    # them the children stay near chance for hundreds of CPU steps (docs/benchmarks.md).
    steps: Optional[int] = 800
    batch_size: int = 64
    image_size: int = 64
    zero_init_residual: bool = True
    optimizer: str = "adam"
    learning_rate: float = 0.032
    validation_batch_multiplier: int = 2  # the reference: 4 (the demo keeps the step cost down)
    # None: the reference's search default for the space (3e-5 mobilenet_v3_like, 4e-5 otherwise).
    weight_decay: Optional[float] = None
    # Architectures sampled per replica and step: the replica's training batch is split into this
    # many micro-batches (one architecture each, one optimizer step on the mean gradient) and its
    # validation batch into as many groups. The paper's v3-32 TPU run: 32 per step in total
    # (e.g. --batch_size=4096 --architectures_per_step=32 on one device: micro-batches of 128, the
    # per-core batch of a v3-32). Demo: 4 of 16 images each (docs/benchmarks.md, "The default search").
    architectures_per_step: int = 4
    # Of the K micro-batches, this many train the shared weights on a uniformly drawn architecture
    # instead of the policy's sample (which is still scored and rewarded): weights trained on more
    # of the space than the policy visits. Not in the reference (docs/deviations.md); on the
    # embedded data it did not make children rank by cost (docs/benchmarks.md).
    uniform_architectures_per_step: int = 0
    model_dir: str = "runs/search"
    # Controller: Adam(0, 0.999, 1e-8) over per-sample gradients; lr = base × batch / 256, 0 for the
    # first int(0.25 · steps) steps, then × 10^progress (×1 at the delay, ×10 at the end).
    # The reference uses base 3e-4 over ~27k steps; the demo's 600 RL steps need a larger base for
    # the policy to converge: 0.4 (base 0.1 at batch 64). At 0.1 the policy was still at 20-25 nats
    # when the demo ended and 2 of 5 seeds landed within 2 % of T0 (docs/benchmarks.md).
    rl_learning_rate: float = 0.4
    rl_delay_fraction: float = 0.25
    entropy_weight: float = 0.0
    # "auto": "slice" on CPU, "mask" on GPU / TPU (tunas_keras.models.supernet, docs/benchmarks.md).
    supernet_execution: str = "auto"
    jit_compile: Optional[bool] = None  # None: XLA for the "mask" execution on a GPU / TPU
    op_warmup: bool = True
    filter_warmup: bool = True
    warmup_fraction: float = 0.25
    checkpoint_every: int = 30
    summary_every: int = 5
    # One thread per kernel, independent ops running concurrently on the inter-op pool (instead of
    # --deterministic's one inter-op thread): 388 vs 583 s for the default search on 2 cores, the
    # same history byte for byte (docs/reproducibility.md). None: on a host without an accelerator
    # and with at most 4 cores (`trainer.SINGLE_THREADED_KERNELS_MAX_CORES`).
    single_threaded_kernels: Optional[bool] = None


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """A standalone training run (design.md §6)."""

    architecture: Optional[str] = None  # path of an architecture.json
    indices: Optional[str] = None
    space: Optional[str] = None
    reference: Optional[str] = None
    protocol: str = "valid"
    model_dir: str = "runs/train"
    dropout_rate: Optional[float] = None  # None: 0 below 150 epochs, else 0.15 (0.25 MobileNetV3-like)
    weight_ema: Optional[float] = None
    init_from_supernet: Optional[str] = None
    eval_batches: Optional[int] = None


# One line of `--help` per config field (`define_flags_for` adds type and default). A key
# "ClassName.field" overrides the plain "field" for that class and its subclasses. Every field
# of every config class needs an entry (tests/test_cli.py checks it).
FIELD_HELP = {
    "dataset": "Dataset: 'embedded' (offline, generated), 'folder:/path' (one sub-folder per class) or a "
    "TFDS name such as cifar10 or imagenet2012.",
    "data_dir": "TFDS data directory (TFDS datasets only; None: TFDS's default).",
    "held_out_fraction": "Fraction of the training split held out as 'valid' (the RL reward's data), in (0, 1).",
    "steps": "Training steps (ignored when --epochs is set).",
    "epochs": "Training epochs; when set, overrides --steps.",
    "batch_size": "Global training batch size (split over replicas).",
    "image_size": "Input image height and width in pixels.",
    "strategy": "tf.distribute strategy: auto (all GPUs if several, else one device), one_device, mirrored, "
    "multi_worker, tpu.",
    "model_dir": "Directory for checkpoints, summaries, config.json and results; rerunning the same command "
    "resumes there.",
    "seed": "Seed of the initial weights, the data order and augmentation, and the sampled architectures.",
    "optimizer": "Weight optimizer: rmsprop (the reference: decay 0.9, momentum 0.9, eps 1.0), adam or sgd "
    "(momentum 0.9).",
    "learning_rate": "Base learning rate; the peak is base x batch_size / 256 (linear warmup, then cosine to 0).",
    "learning_rate_warmup_fraction": "Fraction of the steps with a linear learning-rate warmup, in [0, 1).",
    "label_smoothing": "Label smoothing of the cross-entropy, in [0, 1).",
    "weight_decay": "L2 as the reference: a penalty weight_decay / 2 x sum of squares of the non-classifier kernels.",
    "SearchConfig.weight_decay": "L2 as the reference (weight_decay / 2 x sum of squares of the active "
    "non-classifier kernels); None: the space's search default (3e-5 mobilenet_v3_like, 4e-5 otherwise).",
    "zero_init_residual": "Start each residual branch's last batch-norm gamma at 0 (not the reference recipe; "
    "helps short runs).",
    "checkpoint_every": "Steps between checkpoints (the last step is always checkpointed).",
    "summary_every": "Steps between history / TensorBoard entries.",
    "progress_bar": "Show a progress bar with ETA.",
    "deterministic": "Bit-identical runs for the same command and seed on this machine: one inter-op thread (one "
    "thread per kernel instead with --single_threaded_kernels), and op determinism on GPUs (docs/reproducibility.md).",
    "single_threaded_kernels": "Run each kernel on one thread and independent ops concurrently (faster on few "
    "cores; with --deterministic it replaces the one inter-op thread); None: on a CPU-only host with at most 4 "
    "cores.",
    "space": "Search space: proxyless, proxyless_enlarged or mobilenet_v3_like.",
    "TrainConfig.space": "Search space of --indices: proxyless, proxyless_enlarged or mobilenet_v3_like.",
    "target_latency": "Target cost T0 in the cost model's units (ms); None: the space's default (84 / 57).",
    "SearchConfig.target_latency": "Target cost T0 in the cost model's units (ms), or several, comma-separated "
    "(e.g. 60,84,110: one controller per target over one shared supernet; --architectures_per_step must be a "
    "multiple of their number); None: the space's default (84 / 57).",
    "reward": "RL reward: abs (TuNAS), mnas (soft exponent) or mnas_hard.",
    "beta": "Cost exponent / penalty beta of the reward, a negative number.",
    "cost_model": "Cost model: pixel1 (simulated Pixel-1 latency, ms), macs, params, or a coefficient .json file.",
    "validation_batch_multiplier": "Validation (reward) batch size as a multiple of --batch_size.",
    "architectures_per_step": "Architectures sampled per replica and step (the training batch is split into as "
    "many micro-batches, one architecture each).",
    "uniform_architectures_per_step": "Of those micro-batches, how many train the shared weights on a uniformly drawn "
    "architecture instead of the policy's sample (which is still rewarded); 0 as the reference.",
    "supernet_execution": "How the supernet computes the active channels: slice, mask, or auto (slice on CPU, mask "
    "on GPU / TPU).",
    "jit_compile": "Compile the search step with XLA; None: XLA for the mask execution on a GPU / TPU.",
    "rl_learning_rate": "Base RL (controller) learning rate; scaled by batch_size / 256, 0 during the RL delay, "
    "then x 10^progress.",
    "rl_delay_fraction": "Fraction of the steps before the controller starts learning, in [0, 1].",
    "entropy_weight": "Weight of the policy-entropy bonus in the REINFORCE loss.",
    "op_warmup": "Op warmup: early steps train every op choice (the probability decays to 0 over --warmup_fraction).",
    "filter_warmup": "Filter warmup: early steps train the largest filter choices (decays like op warmup).",
    "warmup_fraction": "Fraction of the steps over which op / filter warmup decay from 1 to 0, in [0, 1].",
    "architecture": "Path of an architecture.json (as written by tools/search.py).",
    "indices": "Colon-separated decision indices of an architecture of --space, e.g. 0:1:0:2:...",
    "reference": "A reference model, e.g. mobilenet_v2, mnasnet_b1, proxylessnas_mobile, mobilenet_v3_large.",
    "protocol": "valid: train on 'train', evaluate on 'valid'; test: train on the whole training split, "
    "evaluate on 'test'.",
    "dropout_rate": "Dropout before the classifier, in [0, 1); None: 0 below 150 epochs, else 0.15 "
    "(0.25 MobileNetV3-like).",
    "weight_ema": "Decay of an exponential moving average of the weights used for evaluation, in [0, 1); None: off.",
    "init_from_supernet": "A tools/search.py model_dir: start from the child's weights in its supernet.",
    "eval_batches": "Evaluate on at most this many batches; None: the whole split.",
    "tolerance": "Sampled architectures cost within target_latency +- tolerance (paper: 1 ms).",
    "num_samples": "Number of architectures sampled and trained.",
}


def _at_least(minimum, integer=True):
    kind = "an int" if integer else "a number"
    return (lambda value: value >= minimum), f"{kind} >= {minimum}"


def _in_range(low, high, closed_high=False):
    bracket = "]" if closed_high else ")"
    check = (lambda value: low <= value <= high) if closed_high else (lambda value: low <= value < high)
    return check, f"a number in [{low}, {high}{bracket}"


def _positive_numbers(value) -> bool:
    """Whether `value` is a number > 0, or a list (or "60,84,110") of them."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        return bool(items) and all(float(item) > 0 for item in items)
    except (TypeError, ValueError):
        return False


# Range checks of numeric fields (None always passes where the field is Optional). Choices
# (space, reward, cost model, dataset, optimizer, strategy, protocol) are checked by their
# registries when a task is created.
FIELD_CHECKS = {
    "held_out_fraction": ((lambda value: 0 < value < 1), "a number in (0, 1)"),
    "steps": _at_least(1),
    "epochs": ((lambda value: value > 0), "a number > 0"),
    "batch_size": _at_least(1),
    "image_size": _at_least(1),
    "learning_rate": _at_least(0, integer=False),
    "learning_rate_warmup_fraction": _in_range(0, 1),
    "label_smoothing": _in_range(0, 1),
    "weight_decay": _at_least(0, integer=False),
    "checkpoint_every": _at_least(1),
    "summary_every": _at_least(1),
    "target_latency": (_positive_numbers, "a number > 0 (or a list of them)"),
    "beta": ((lambda value: value < 0), "a negative number"),
    "validation_batch_multiplier": _at_least(1),
    "architectures_per_step": _at_least(1),
    "uniform_architectures_per_step": _at_least(0),
    "rl_learning_rate": _at_least(0, integer=False),
    "rl_delay_fraction": _in_range(0, 1, closed_high=True),
    "entropy_weight": _at_least(0, integer=False),
    "warmup_fraction": _in_range(0, 1, closed_high=True),
    "dropout_rate": _in_range(0, 1),
    "weight_ema": _in_range(0, 1),
    "eval_batches": _at_least(1),
    "tolerance": ((lambda value: value > 0), "> 0 ms"),
    "num_samples": _at_least(1),
}


def validate_config(config: Any) -> None:
    """Checks every field of a run config against `FIELD_CHECKS` and the registries that need no
    heavy work (optimizer, strategy, reward, dataset name), so that a tool fails before building
    anything or reading data. The space, cost model and architecture are checked by the task's
    constructor, which also builds nothing (`training.search.prepare_search`).

    Raises:
      ValueError: "Invalid value for argument `name`. Expected ... Received: value".
    """
    for name, value in dataclasses.asdict(config).items():
        if name in FIELD_CHECKS and value is not None:
            check, expected = FIELD_CHECKS[name]
            if not check(value):
                raise ValueError(f"Invalid value for argument `{name}`. Expected {expected}. Received: {value!r}")
    if getattr(config, "steps", 1) is None and getattr(config, "epochs", None) is None:
        raise ValueError("Invalid value for argument `steps`. Expected an int >= 1 (or --epochs). Received: None")
    # Imported here: the registries import TensorFlow, this module should stay light.
    from tunas_keras.models.supernet_widths import EXECUTION_MODES  # pylint: disable=import-outside-toplevel
    from tunas_keras.search.rewards import REWARDS  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.schedules import OPTIMIZERS  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.trainer import STRATEGIES  # pylint: disable=import-outside-toplevel

    choices = {
        "optimizer": sorted(OPTIMIZERS),
        "strategy": list(STRATEGIES),
        "reward": sorted(REWARDS),
        "supernet_execution": [*EXECUTION_MODES, "auto"],
    }
    for name, allowed in choices.items():
        value = getattr(config, name, None)
        if value is not None and value not in allowed:
            raise ValueError(f"Invalid value for argument `{name}`. Expected one of {allowed}. Received: {value!r}")
    if hasattr(config, "validate_task"):  # a task with its own fields and dataset registry (detection.config)
        config.validate_task()
    else:
        _check_dataset(config)


def _check_dataset(config: Any) -> None:
    """The dataset's name (and folder / TFDS data), opened lazily: nothing is read but metadata."""
    from tunas_keras import datasets  # pylint: disable=import-outside-toplevel

    try:
        datasets.get_dataset(
            config.dataset,
            image_size=config.image_size,
            seed=config.seed,
            held_out_fraction=config.held_out_fraction,
            data_dir=config.data_dir,
        )
    except ValueError as error:
        message = str(error)
        if "argument `dataset`" not in message:
            message = f"Invalid value for argument `dataset` ({config.dataset!r}): {message}"
        raise ValueError(message) from error


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Converts a JSON/YAML/flag value to the field's type, with a clear error."""
    text = str(annotation)
    if value is None:
        if "Optional" in text or "None" in text:
            return None
        raise ValueError(f"Invalid value for argument `{name}`. Expected {_type_name(annotation)}. Received: None")
    if "list" in text:
        return _number_or_numbers(name, value)
    kinds = [(bool, "bool"), (int, "int"), (float, "float"), (str, "str")]
    for kind, label in kinds:
        if label in text:
            try:
                if kind is bool and isinstance(value, str):
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(value)
                    return value.lower() in ("true", "1")
                if kind is int and isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                return kind(value)
            except (TypeError, ValueError) as error:
                message = f"Invalid value for argument `{name}`. Expected {label}. Received: {value!r}"
                raise ValueError(message) from error
    return value


def _number_or_numbers(name: str, value: Any) -> Any:
    """A float, or a list of floats from a list or "60,84,110"; a single value stays a float (as a float field's)."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",") if isinstance(value, str) else [value]
    try:
        numbers = [float(item) for item in items if not isinstance(item, bool)]
    except (TypeError, ValueError):
        numbers = []
    if not numbers or len(numbers) != len(items):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a number or a comma-separated list of numbers. "
            f"Received: {value!r}"
        )
    return numbers[0] if len(numbers) == 1 else numbers


def config_from_dict(config_class: Type[ConfigT], data: dict, base: Optional[ConfigT] = None) -> ConfigT:
    """A config of `config_class` from `base` (or the defaults) with `data` applied."""
    hints = get_type_hints(config_class)
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        close = [match for name in unknown for match in difflib.get_close_matches(name, known, n=1)]
        hint = f" (did you mean {close}?)" if close else ""
        raise ValueError(
            f"Invalid config: unknown field(s) {unknown}{hint}. Expected fields of {config_class.__name__}: "
            f"{sorted(known)}"
        )
    values = dataclasses.asdict(base) if base is not None else {}
    values.update({key: _coerce(key, value, hints[key]) for key, value in data.items()})
    return config_class(**values)


def load_config_file(config_class: Type[ConfigT], path: str) -> ConfigT:
    """Reads a JSON or YAML (.yaml / .yml) config file."""
    if not os.path.isfile(path):
        raise ValueError(
            f"Invalid value for argument `config`. Expected an existing JSON/YAML file. Received: {path!r}"
        )
    with open(path) as handle:
        text = handle.read()
    try:
        if path.endswith((".yaml", ".yml")):
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as error:
                raise ValueError(str(error)) from error
        else:
            data = json.loads(text)
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(
            f"Invalid value for argument `config`. Expected a JSON or YAML file. Received: {path!r} "
            f"({' '.join(str(error).split())})"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(
            f"Invalid value for argument `config`. Expected a mapping of fields. Received: {path!r} holding "
            f"a {type(data).__name__}"
        )
    try:
        return config_from_dict(config_class, data)
    except ValueError as error:
        raise ValueError(f"Invalid value for argument `config` ({path!r}): {error}") from error


def define_flags_for(config_class: type, flags_module) -> None:
    """Defines one absl flag per config field, plus `--config`.

    Each flag's help is the field's line of `FIELD_HELP` followed by its type and default, e.g.
    `--steps: Training steps ... [int or None; default: 120]`. `bool` fields are absl booleans
    (`--op_warmup`, `--noop_warmup`, `--op_warmup=false`); the others are strings converted by
    the field's type. Every flag's absl default is None (= not passed, the config's value holds).
    """
    # Listed under the running program (absl's main module, `sys.argv[0]`), so that `--help` shows them.
    module = {"module_name": sys.argv[0]}
    flags_module.DEFINE_string(
        "config", None, "JSON or YAML file with config fields; flags given beside it override single fields.", **module
    )
    hints = get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        define = flags_module.DEFINE_boolean if hints[field.name] is bool else flags_module.DEFINE_string
        define(field.name, None, field_help(config_class, field.name), **module)


def field_help(config_class: type, name: str) -> str:
    """The `--help` line of a config field: its `FIELD_HELP` text, type and default."""
    hints = get_type_hints(config_class)
    field = {field.name: field for field in dataclasses.fields(config_class)}[name]
    default = field.default if field.default is not dataclasses.MISSING else None
    text = None
    for klass in config_class.__mro__:
        text = FIELD_HELP.get(f"{klass.__name__}.{name}")
        if text:
            break
    text = text or FIELD_HELP.get(name)
    if not text:
        raise KeyError(f"Config field {config_class.__name__}.{name} has no help text in FIELD_HELP.")
    return f"{text} [{_type_name(hints[name])}; default: {default!r}]"


def _type_name(annotation: Any) -> str:
    names = [getattr(argument, "__name__", str(argument)) for argument in getattr(annotation, "__args__", ())]
    if names:
        return " or ".join("None" if name == "NoneType" else name for name in names)
    return getattr(annotation, "__name__", str(annotation))


def config_from_flags(config_class: Type[ConfigT], flag_values) -> ConfigT:
    """The config file (if any) with the flags that were passed on the command line applied."""
    base = load_config_file(config_class, flag_values.config) if flag_values.config else config_class()
    overrides = {}
    for field in dataclasses.fields(config_class):
        if flag_values[field.name].present:
            raw = flag_values[field.name].value
            overrides[field.name] = None if isinstance(raw, str) and raw.lower() == "none" else raw
    return config_from_dict(config_class, overrides, base=base)


def config_to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)
