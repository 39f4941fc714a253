r"""Runs a TuNAS search (weight-sharing supernet + REINFORCE controller) and writes its results.

With no flags: the embedded offline dataset, the `proxyless` space, T0 = 84 ms of the simulated
Pixel-1 model, 120 steps of batch 32 at 32 px (about 5-8 minutes on 2 CPU cores, most of it
tracing the supernet's training step). The paper's ImageNet run:

    python tools/search.py --dataset=imagenet2012 --image_size=224 --batch_size=4096 --epochs=90 \
        --rl_learning_rate=3e-4 --strategy=mirrored --model_dir=runs/imagenet

Every field of `tunas_keras.training.config.SearchConfig` is a flag (`--help` lists them with
type and default); `--config run.yaml` loads a file and flags override it. A run killed at any
moment (even with kill -9) resumes when restarted with the same command and ends as an
uninterrupted one; with `--deterministic` (the default) the same command and seed give the same
search, bit for bit, on one machine.

Several targets in one search, one controller each over one shared supernet (the K
architectures of a step are divided among them, so K must be a multiple of their number):

    python tools/search.py --target_latency=60,84,110 --architectures_per_step=6 --batch_size=36

writes architecture_60ms.json, architecture_84ms.json, architecture_110ms.json, their index
architectures.json, report.png (every target) and pareto.png (the found architectures against
uniform children under the final shared weights).
"""

import os
import sys

from absl import flags

from tunas_keras import cli, errors
from tunas_keras.training import config as config_lib
from tunas_keras.training import search as search_lib
from tunas_keras.training.trainer import create_strategy, is_chief

config_lib.define_flags_for(config_lib.SearchConfig, flags)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with errors.user_input():
        config = config_lib.config_from_flags(config_lib.SearchConfig, FLAGS)
    # Validates the whole config and sets the thread count; neither initialises TensorFlow, so
    # multi-worker and TPU strategies can still be created next (they must exist before it is).
    task = search_lib.prepare_search(config)
    strategy = create_strategy(config.strategy)
    print(f"TuNAS search: space={config.space} dataset={config.dataset} model_dir={config.model_dir}")
    print("Building the supernet and tracing its training step (takes a few minutes on a CPU) ...", flush=True)
    try:
        result = search_lib.run_search(config, strategy=strategy, task=task)
    except FloatingPointError as error:
        print(f"Search stopped: {error}", file=sys.stderr)
        return 1
    if "indices" not in result:  # several targets
        return _print_targets(config, result, is_chief(strategy))
    architecture_path = os.path.join(config.model_dir, "architecture.json")
    if not is_chief(strategy):
        print(f"Worker done; the chief writes the outputs. Final architecture: {':'.join(map(str, result['indices']))}")
        return 0
    print()
    print(f"Final architecture ({result['space']}): {':'.join(map(str, result['indices']))}")
    print(
        f"Cost ({result['cost_model']}): {result['cost']:.2f} vs target {result['target_latency']:.2f} "
        f"({100 * (result['cost'] / result['target_latency'] - 1):+.1f} %)"
    )
    print(f"Wall time: {result['wall_time_s']:.0f} s. Outputs in {config.model_dir}/ (architecture.json, report.png)")
    print("Next steps:")
    same_data = f"--dataset={config.dataset} --image_size={config.image_size}"
    zero_init = " --zero_init_residual" if config.zero_init_residual else ""
    print(f"  python tools/train.py --architecture={architecture_path} {same_data}{zero_init}")
    print(f"  python tools/export_tflite.py --architecture={architecture_path} --quantization=int8")
    return 0


def _print_targets(config, result: dict, chief: bool) -> int:
    """The summary of a multi-target search: one line per target, the outputs, next steps."""
    print()
    for entry in result["architectures"]:
        indices = ":".join(map(str, entry["indices"]))
        cost = f"{entry['cost']:.2f} ({100 * entry['relative_error']:+.1f} %)"
        print(f"Target {entry['target_latency']:g}: {indices}  cost ({result['cost_model']}) {cost} -> {entry['file']}")
    if not chief:
        print("Worker done; the chief writes the outputs.")
        return 0
    print(
        f"Wall time: {result['wall_time_s']:.0f} s. Outputs in {config.model_dir}/ (one architecture_<target>.json "
        "per target, architectures.json listing them, report.png, pareto.png)"
    )
    print("Next steps (one per target):")
    same_data = f"--dataset={config.dataset} --image_size={config.image_size}"
    zero_init = " --zero_init_residual" if config.zero_init_residual else ""
    for entry in result["architectures"]:
        path = os.path.join(config.model_dir, entry["file"])
        print(f"  python tools/train.py --architecture={path} {same_data}{zero_init}")
    return 0


if __name__ == "__main__":
    cli.run(main)
