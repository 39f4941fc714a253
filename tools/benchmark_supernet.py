"""Benchmarks the supernet's execution modes against standalone children, side by side.

Everything below is measured in ONE run on whatever device is present, each comparison timed in
alternation (medians over `--steps` steps after 2 warm-up steps) so that a noisy machine affects
both sides alike. All training steps: same batch and resolution, RMSProp (decay 0.9, momentum
0.9, ε 1.0), cross-entropy + 4e-5 / 2 · L2 of the non-classifier kernels (the reference's penalty).

- `speed`: per execution mode (`--executions`, each optionally `--jit_compile`d):
  * supernet step on the largest child's one-hot masks (the search's one-hot phase graph) ÷ the
    standalone step of the largest child;
  * the same for `--children` uniformly sampled children, each ÷ its own standalone model:
    median and range of the ratios;
- `memory`: peak memory of an op-warmup step (uniform op masks, largest filters, the
  op-warmup graph) ÷ a one-hot step of the largest child, per mode (see `memory_probe`);
- `startup`: wall time of `tools/search.py --steps=3` ÷ `tools/train.py` of the largest child
  for 3 steps (same data, batch, resolution), each a fresh process, alternated `--repeats` times;
- `search`: training images / s of the real search step (after warmup and the RL delay) for
  each `--architectures_per_step`, ÷ the largest child's standalone step.

Peak memory: on a GPU `tf.config.experimental.get_memory_info` (peak after
`reset_memory_stats`); on CPU the peak RSS growth during one step, sampled by a thread every
~0.2 ms in a fresh subprocess whose step was already traced and run once, with
MALLOC_MMAP_THRESHOLD_=65536 so that freed tensor buffers leave the RSS (a proxy: it also counts
temporaries and allocator slack).

    python tools/benchmark_supernet.py --measure=speed,memory --batch_size=32 --image_size=64
    python tools/benchmark_supernet.py --measure=startup --batch_size=32 --image_size=32
    python tools/benchmark_supernet.py --measure=search --architectures_per_step=1,8 --batch_size=32
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import tensorflow as tf
import tf_keras as keras
from absl import flags

import tunas_keras
from tunas_keras import cli, errors
from tunas_keras.cost_models.sampling import extreme_indices
from tunas_keras.masks import one_hot_masks, uniform_masks
from tunas_keras.models.standalone import kernel_weights
from tunas_keras.models.supernet import build_supernet
from tunas_keras.models.supernet_widths import EXECUTION_MODES
from tunas_keras.training.trainer import configure_determinism, gpu_op_determinism

FLAGS = flags.FLAGS
flags.DEFINE_string("space", "proxyless", "Search space name.")
flags.DEFINE_integer("batch_size", 32, "Images per step.", lower_bound=1)
flags.DEFINE_integer("image_size", 64, "Image height and width.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps per model (after 2 warm-up steps).", lower_bound=1)
flags.DEFINE_integer("num_classes", 10, "Classifier outputs.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the sampled children.")
flags.DEFINE_integer(
    "children", 10, "--measure=speed: sampled children compared with their standalone models.", lower_bound=1
)
flags.DEFINE_list("executions", ["mask", "slice"], "Supernet execution modes to measure.")
flags.DEFINE_boolean("jit_compile", False, "Compile the supernet steps with XLA (the 'mask' mode only).")
flags.DEFINE_integer("repeats", 2, "--measure=startup: processes per command.", lower_bound=1)
flags.DEFINE_string("memory_probe", "", "Internal: 'one_hot:<mode>' or 'warmup:<mode>' runs one probe, prints JSON.")
flags.DEFINE_boolean(
    "deterministic", False, "Time with --deterministic's settings (one inter-op thread; op determinism on GPUs)."
)
MEASUREMENTS = ("speed", "memory", "startup", "search")
flags.DEFINE_list("architectures_per_step", ["1"], "--measure=search: architectures per search step (K), each timed.")
flags.DEFINE_list("measure", ["speed", "memory"], "What to measure: speed, memory, startup, search.")

L2_COEFFICIENT = 4e-5 / 2  # the reference's l2(weight_decay / 2)
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _optimizer():
    return keras.optimizers.RMSprop(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1.0)


def supernet_step_fn(supernet, execution: str, one_hot: bool):
    """A training step of the supernet in `execution` (masks are a traced input: any child, one graph)."""
    optimizer = _optimizer()
    jit = FLAGS.jit_compile and execution == "mask"

    @tf.function(jit_compile=jit, autograph=False)
    def step(images, labels, masks):
        with tf.GradientTape() as tape:
            logits = supernet(images, list(masks), training=True, one_hot=one_hot, execution=execution)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += L2_COEFFICIENT * supernet.regularization_loss(list(masks))
        variables = supernet.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def standalone_step_fn(model):
    optimizer = _optimizer()
    classifier = {id(weight) for weight in model.get_layer("classifier").weights}
    kernels = [kernel for kernel in kernel_weights(model) if id(kernel) not in classifier]

    @tf.function(autograph=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += L2_COEFFICIENT * tf.add_n([tf.reduce_sum(tf.square(kernel)) for kernel in kernels])
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def _batch():
    images = tf.random.normal([FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3], seed=1)
    labels = tf.random.uniform([FLAGS.batch_size], 0, FLAGS.num_classes, tf.int32, seed=2)
    return images, labels


def _time_alternating(runs: dict, steps: int) -> dict:
    """Median seconds per step of each zero-argument callable, run in alternation."""
    for run in runs.values():
        for _ in range(2):
            run().numpy()
    times = {name: [] for name in runs}
    for _ in range(steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run().numpy()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _children(space) -> list:
    rng = random.Random(FLAGS.seed)
    return [space.architecture([rng.randrange(count) for count in space.num_choices]) for _ in range(FLAGS.children)]


def benchmark_speed() -> dict:
    """`{mode: {"largest": ratio, "children": [ratios]}}` of supernet ÷ standalone step times."""
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    supernet = build_supernet(FLAGS.space, FLAGS.num_classes, shape)
    space, (images, labels) = supernet.space, _batch()
    steps = {mode: supernet_step_fn(supernet, mode, one_hot=True) for mode in FLAGS.executions}
    largest = space.architecture(extreme_indices(space)[1])
    results = {mode: {"children": []} for mode in FLAGS.executions}
    for index, child in enumerate([largest] + _children(space)):
        masks = one_hot_masks(space, child)
        standalone = standalone_step_fn(tunas_keras.build_model(child, FLAGS.num_classes, shape))
        runs = {mode: (lambda step=step, masks=masks: step(images, labels, masks)) for mode, step in steps.items()}
        runs["standalone"] = lambda standalone=standalone: standalone(images, labels)
        times = _time_alternating(runs, FLAGS.steps if index == 0 else max(3, FLAGS.steps // 2))
        for mode in FLAGS.executions:
            ratio = times[mode] / times["standalone"]
            if index == 0:
                results[mode].update(
                    largest=ratio, largest_ms=1000 * times[mode], standalone_ms=1000 * times["standalone"]
                )
            else:
                results[mode]["children"].append(ratio)
    return results


def memory_probe(probe: str) -> dict:
    """One supernet step's peak memory growth (bytes), traced and run once first (not counted)."""
    kind, execution = probe.split(":")
    supernet = build_supernet(FLAGS.space, FLAGS.num_classes, (FLAGS.image_size, FLAGS.image_size, 3))
    space = supernet.space
    masks = uniform_masks(space) if kind == "warmup" else one_hot_masks(space, extreme_indices(space)[1])
    images, labels = _batch()
    step = supernet_step_fn(supernet, execution, one_hot=kind != "warmup")
    step(images, labels, masks).numpy()
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")
        before = tf.config.experimental.get_memory_info("GPU:0")["current"]
        step(images, labels, masks).numpy()
        peak, method = tf.config.experimental.get_memory_info("GPU:0")["peak"], "gpu_peak"
    else:
        before = _current_rss_bytes()
        peak, method = _sampled_peak_rss(lambda: step(images, labels, masks).numpy()), "cpu_rss_sampled"
    return {"probe": probe, "peak_growth_bytes": peak - before, "method": method}


def _sampled_peak_rss(function) -> int:
    peak, done = [_current_rss_bytes()], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _current_rss_bytes())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        function()
    finally:
        done.set()
        sampler.join()
    return peak[0]


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_probe(probe: str) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), f"--memory_probe={probe}"]
    names = ("space", "batch_size", "image_size", "num_classes", "deterministic")
    argv += [f"--{name}={getattr(FLAGS, name)}" for name in names]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    output = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def benchmark_startup() -> dict:
    """Median wall seconds of a 3-step search and a 3-step standalone training of the largest child."""
    space = tunas_keras.get_search_space(FLAGS.space)
    largest = ":".join(map(str, extreme_indices(space)[1]))
    common = [f"--batch_size={FLAGS.batch_size}", f"--image_size={FLAGS.image_size}", "--steps=3", "--noprogress_bar"]
    commands = {
        "search": ["tools/search.py", f"--space={FLAGS.space}"],
        "train": ["tools/train.py", f"--space={FLAGS.space}", f"--indices={largest}", "--eval_batches=1"],
    }
    times = {name: [] for name in commands}
    for _ in range(FLAGS.repeats):
        for name, command in commands.items():
            with tempfile.TemporaryDirectory() as model_dir:
                start = time.perf_counter()
                argv = [sys.executable, *command, *common, f"--model_dir={model_dir}"]
                subprocess.run(argv, check=True, capture_output=True, cwd=REPOSITORY)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _search_step(count: int, strategy):
    """The real search step (past warmup and the RL delay) with `count` architectures per step."""
    from tunas_keras.training.config import SearchConfig  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.search_task import SearchTask  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.trainer import Trainer  # pylint: disable=import-outside-toplevel

    config = SearchConfig(
        space=FLAGS.space,
        batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size,
        steps=100 * FLAGS.steps,
        optimizer="rmsprop",
        model_dir="unused",
        progress_bar=False,
        architectures_per_step=count,
        supernet_execution=FLAGS.executions[0],
    )
    task = SearchTask(config)
    with strategy.scope():
        task.build(strategy)
        # Past op / filter warmup and the RL delay: the steady state of a search.
        step = tf.Variable(task.total_steps // 2, dtype=tf.int64, trainable=False)
    search_step = Trainer(task, config.model_dir, {}, strategy=strategy)._make_step_function(step)
    iterator = iter(strategy.distribute_datasets_from_function(task.dataset_fn(0)))
    phase = task.phase(int(step.numpy()))
    return task, lambda: search_step(next(iterator), phase)["loss"]


def benchmark_search() -> dict:
    """Training images/s of the real search step (each K, after warmup) and of the largest child's step."""
    from tunas_keras.training.trainer import create_strategy  # pylint: disable=import-outside-toplevel

    strategy = create_strategy("auto")
    runs = {}
    for count in (int(value) for value in FLAGS.architectures_per_step):
        task, runs[f"search_step_k{count}"] = _search_step(count, strategy)
    images, labels = next(iter(task.data.make("train", FLAGS.batch_size, training=True)))
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    largest = task.space.architecture(extreme_indices(task.space)[1])
    largest_step = standalone_step_fn(tunas_keras.build_model(largest, task.data.num_classes, shape))
    runs["standalone_largest"] = lambda: largest_step(images, labels)
    times = _time_alternating(runs, FLAGS.steps)
    return {name: FLAGS.batch_size / seconds for name, seconds in times.items()}


def _report_speed() -> None:
    for mode, result in benchmark_speed().items():
        children = sorted(result["children"])
        print(
            f"  {mode}{' +XLA' if FLAGS.jit_compile and mode == 'mask' else ''}: largest child "
            f"{result['largest_ms']:.1f} ms vs standalone {result['standalone_ms']:.1f} ms "
            f"-> ratio {result['largest']:.3f}; "
            f"{len(children)} sampled children: median ratio {statistics.median(children):.3f} "
            f"(min {children[0]:.3f}, max {children[-1]:.3f})"
        )


def _report_memory() -> None:
    for mode in FLAGS.executions:
        one_hot, warmup = _run_probe(f"one_hot:{mode}"), _run_probe(f"warmup:{mode}")
        ratio = warmup["peak_growth_bytes"] / one_hot["peak_growth_bytes"]
        print(
            f"  {mode}: peak memory growth one-hot {one_hot['peak_growth_bytes'] / 2**20:.1f} MiB, op warmup "
            f"{warmup['peak_growth_bytes'] / 2**20:.1f} MiB ({one_hot['method']}) -> ratio {ratio:.3f}"
        )


def main(argv):
    del argv
    with errors.user_input():
        tunas_keras.get_search_space(FLAGS.space)
        for argument, values, allowed in (
            ("measure", FLAGS.measure, MEASUREMENTS),
            ("executions", FLAGS.executions, EXECUTION_MODES),
        ):
            if not values or sorted(set(values) - set(allowed)):
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected a list of {list(allowed)}. Received: {values}"
                )
    configure_determinism(FLAGS.deterministic)
    with gpu_op_determinism(FLAGS.deterministic):
        _measure()


def _measure() -> None:
    if FLAGS.memory_probe:
        print(json.dumps(memory_probe(FLAGS.memory_probe)))
        return
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(
        f"space={FLAGS.space} batch={FLAGS.batch_size} image={FLAGS.image_size} steps={FLAGS.steps} device={device} "
        f"deterministic={FLAGS.deterministic}"
    )
    if "speed" in FLAGS.measure:
        _report_speed()
    if "memory" in FLAGS.measure:
        _report_memory()
    if "startup" in FLAGS.measure:
        times = benchmark_startup()
        print(
            f"  startup: search {times['search']:.1f} s, train {times['train']:.1f} s "
            f"-> ratio {times['search'] / times['train']:.2f}"
        )
    if "search" in FLAGS.measure:
        throughput = benchmark_search()
        for name, value in throughput.items():
            print(f"  {name}: {value:.1f} training images/s")
        for name, value in throughput.items():
            if name.startswith("search_step"):
                print(f"{name}/standalone throughput (largest child): {value / throughput['standalone_largest']:.3f}")


if __name__ == "__main__":
    cli.run(main)
