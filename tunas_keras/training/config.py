"""Typed run configurations, loaded from JSON / YAML and overridden field by field.

A config is a dataclass; the command-line tools derive one absl flag per field
(`define_flags_for`) and only override the fields a user actually passed
(`config_from_flags`), so `--config run.yaml --beta=-0.05` means "the file, except β".
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Type, TypeVar, get_type_hints

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


@dataclasses.dataclass
class SearchConfig(RunConfig):
    """Everything that defines a TuNAS search run (paper §4, design.md §4–§7).

    The defaults are the embedded offline demo (a few minutes on 2 CPU cores). The paper's
    ImageNet recipe is batch 4096, 90 epochs, image size 224, `--optimizer=rmsprop
    --learning_rate=0.165 --rl_learning_rate=3e-4`; pass those explicitly. The demo trains the
    shared weights with Adam (peak lr 0.032 × 32 / 256 = 4e-3): in a few hundred steps at batch 32
    the reference RMSProp (ε = 1, lr 0.165 × batch / 256) first drives the loss above chance and
    learns far less (docs/benchmarks.md, "Embedded dataset").
    """

    space: str = "proxyless"
    target_latency: Optional[float] = None  # ms; None: the space's default (84 / 57)
    reward: str = "abs"
    beta: float = -0.1
    cost_model: str = "pixel1"
    steps: Optional[int] = 120
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 0.032
    validation_batch_multiplier: int = 4
    # None: the reference's search default for the space (3e-5 mobilenet_v3_like, 4e-5 otherwise).
    weight_decay: Optional[float] = None
    # Architectures sampled per replica and step: the replica's training batch is split into this
    # many micro-batches (one architecture each, one optimizer step on the mean gradient) and its
    # validation batch into as many groups. The paper's v3-32 TPU run: 32 per step in total
    # (e.g. --batch_size=4096 --architectures_per_step=32 on one device: micro-batches of 128, the
    # per-core batch of a v3-32). Demo: 4 (docs/benchmarks.md, controller simulation).
    architectures_per_step: int = 4
    model_dir: str = "runs/search"
    # Controller: Adam(0, 0.999, 1e-8) over per-sample gradients; lr = base × batch / 256, 0 for the
    # first int(0.25 · steps) steps, then × 10^progress (×1 at the delay, ×10 at the end).
    # The reference uses base 3e-4 over ~27k steps; a run of a hundred steps needs a larger base
    # for the policy to move as far, hence the demo default.
    rl_learning_rate: float = 0.1
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


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Converts a JSON/YAML/flag value to the field's type, with a clear error."""
    text = str(annotation)
    if value is None:
        if "Optional" in text or "None" in text:
            return None
        raise ValueError(f"Invalid value for config field `{name}`. Expected {text}. Received: None")
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
                raise ValueError(
                    f"Invalid value for config field `{name}`. Expected {label}. Received: {value!r}"
                ) from error
    return value


def config_from_dict(config_class: Type[ConfigT], data: dict, base: Optional[ConfigT] = None) -> ConfigT:
    """A config of `config_class` from `base` (or the defaults) with `data` applied."""
    hints = get_type_hints(config_class)
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"Invalid config: unknown field(s) {unknown}. Expected fields of {config_class.__name__}: {sorted(known)}"
        )
    values = dataclasses.asdict(base) if base is not None else {}
    values.update({key: _coerce(key, value, hints[key]) for key, value in data.items()})
    return config_class(**values)


def load_config_file(config_class: Type[ConfigT], path: str) -> ConfigT:
    """Reads a JSON or YAML (.yaml / .yml) config file."""
    if not os.path.isfile(path):
        raise ValueError(f"Invalid value for argument `config`. Expected an existing JSON/YAML file. Received: {path!r}")
    with open(path) as handle:
        text = handle.read()
    if path.endswith((".yaml", ".yml")):
        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"Invalid config file {path!r}. Expected a mapping of fields. Received: {type(data).__name__}")
    return config_from_dict(config_class, data)


def define_flags_for(config_class: type, flags_module) -> None:
    """Defines one absl flag per config field, plus `--config`.

    `bool` fields are absl booleans (`--op_warmup`, `--noop_warmup`, `--op_warmup=false`); the
    others are strings converted by the field's type. Every flag's default is None (= not passed).
    """
    flags_module.DEFINE_string("config", None, "JSON or YAML file with config fields; flags override it.")
    hints = get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        default = field.default if field.default is not dataclasses.MISSING else None
        define = flags_module.DEFINE_boolean if hints[field.name] is bool else flags_module.DEFINE_string
        define(field.name, None, f"{field.type} (default: {default!r})")


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
