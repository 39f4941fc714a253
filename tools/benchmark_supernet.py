"""Benchmarks the supernet's training step against standalone children, side by side.

Prints, measured in ONE run on whatever device is present:
- (`--measure=search`) throughput of whole search steps (sample, weight step on the training
  batch, validation pass on a 4× batch, REINFORCE step: the real `SearchTask` step inside
  `strategy.run`, after warmup) ÷ standalone training throughput of the largest child, in
  training images per second, on the embedded data; one search step per value of
  `--architectures_per_step` (K micro-batches of batch / K images, each its own architecture),
  all timed side by side;
- supernet step (one-hot masks of the largest child) ÷ standalone step of the largest child;
- supernet step (one-hot masks of a sampled child) ÷ standalone step of that child;
- peak memory of a supernet step under full op + filter warmup ÷ a one-hot step (largest child).

All steps: same batch, resolution, RMSProp (decay 0.9, momentum 0.9, ε 1.0), cross-entropy +
4e-5 / 2 · L2 of the non-classifier kernels (the reference's penalty). Timings are medians over
`--steps` steps, the models run in alternation so that a
noisy shared machine affects them alike. Peak memory: on a GPU `tf.config.experimental
.get_memory_info` (peak, after `reset_memory_stats`); on CPU (which has no allocator stats) the
peak RSS growth during one step, sampled by a thread every ~0.2 ms, each variant in a fresh
subprocess whose step was already traced and run once, with MALLOC_MMAP_THRESHOLD_=65536 so
that freed tensor buffers leave the RSS (a proxy: it also counts temporaries and allocator slack).

    python tools/benchmark_supernet.py --space=proxyless --batch_size=16 --image_size=128 --steps=10
    python tools/benchmark_supernet.py --measure=search --architectures_per_step=1,8 --batch_size=32
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

import tensorflow as tf
import tf_keras as keras
from absl import flags

import tunas_keras
from tunas_keras import cli, errors
from tunas_keras.cost_models.sampling import extreme_indices
from tunas_keras.masks import one_hot_masks, uniform_masks
from tunas_keras.models.supernet import build_supernet
from tunas_keras.training.trainer import configure_determinism, gpu_op_determinism

FLAGS = flags.FLAGS
flags.DEFINE_string("space", "proxyless", "Search space name.")
flags.DEFINE_integer("batch_size", 16, "Images per step.", lower_bound=1)
flags.DEFINE_integer("image_size", 128, "Image height and width.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps per model (after 2 warm-up steps).", lower_bound=1)
flags.DEFINE_integer("num_classes", 1001, "Classifier outputs.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the sampled child.")
flags.DEFINE_enum("memory_probe", "", ["", "one_hot", "warmup"], "Internal: runs one memory probe and prints JSON.")
flags.DEFINE_boolean(
    "deterministic", False, "Time with --deterministic's settings (one inter-op thread; op determinism on GPUs)."
)
MEASUREMENTS = ("speed", "memory", "search")
flags.DEFINE_list("architectures_per_step", ["1"], "--measure=search: architectures per search step (K), each timed.")
flags.DEFINE_list(
    "measure", ["speed", "memory"], "What to measure: speed, memory, search (whole search steps vs the largest child)."
)

L2_COEFFICIENT = 4e-5 / 2  # the reference's l2(weight_decay / 2)


def _optimizer():
    return keras.optimizers.RMSprop(learning_rate=0.01, rho=0.9, momentum=0.9, epsilon=1.0)


def supernet_step_fn(supernet):
    optimizer = _optimizer()

    @tf.function
    def step(images, labels, masks):
        with tf.GradientTape() as tape:
            logits = supernet(images, list(masks), training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += L2_COEFFICIENT * supernet.regularization_loss(list(masks))
        variables = supernet.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def standalone_step_fn(model):
    from tunas_keras.training.standalone_task import kernel_l2  # pylint: disable=import-outside-toplevel

    optimizer = _optimizer()

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            loss += L2_COEFFICIENT * kernel_l2(model)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def _batch():
    images = tf.random.normal([FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3], seed=1)
    labels = tf.random.uniform([FLAGS.batch_size], 0, FLAGS.num_classes, tf.int32, seed=2)
    return images, labels


def _time_alternating(runs: dict) -> dict:
    """Median seconds per step of each zero-argument callable, run in alternation."""
    for run in runs.values():
        for _ in range(2):
            run().numpy()
    times = {name: [] for name in runs}
    for _ in range(FLAGS.steps):
        for name, run in runs.items():
            start = time.perf_counter()
            run().numpy()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def benchmark_speed() -> dict:
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    supernet = build_supernet(FLAGS.space, FLAGS.num_classes, shape)
    space = supernet.space
    largest = space.architecture(extreme_indices(space)[1])
    rng = random.Random(FLAGS.seed)
    sampled = space.architecture([rng.randrange(count) for count in space.num_choices])
    images, labels = _batch()
    step = supernet_step_fn(supernet)
    largest_masks, sampled_masks = one_hot_masks(space, largest), one_hot_masks(space, sampled)
    largest_step = standalone_step_fn(tunas_keras.build_model(largest, FLAGS.num_classes, shape))
    sampled_step = standalone_step_fn(tunas_keras.build_model(sampled, FLAGS.num_classes, shape))
    times = _time_alternating(
        {
            "supernet_largest": lambda: step(images, labels, largest_masks),
            "standalone_largest": lambda: largest_step(images, labels),
            "supernet_sampled": lambda: step(images, labels, sampled_masks),
            "standalone_sampled": lambda: sampled_step(images, labels),
        }
    )
    times["sampled_architecture"] = str(sampled)
    return times


def _search_step(count: int, strategy):
    """The real search step (past warmup and the RL delay) with `count` architectures per step."""
    from tunas_keras.training.config import SearchConfig  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.search_task import SearchTask  # pylint: disable=import-outside-toplevel
    from tunas_keras.training.trainer import Trainer  # pylint: disable=import-outside-toplevel

    config = SearchConfig(
        space=FLAGS.space, batch_size=FLAGS.batch_size, image_size=FLAGS.image_size, steps=100 * FLAGS.steps,
        optimizer="rmsprop", model_dir="unused", progress_bar=False, architectures_per_step=count,
    )
    task = SearchTask(config)
    with strategy.scope():
        task.build(strategy)
        # Past op / filter warmup and the RL delay: the steady state of a search.
        step = tf.Variable(task.total_steps // 2, dtype=tf.int64, trainable=False)
    search_step = Trainer(task, config.model_dir, {}, strategy=strategy)._make_step_function(step)
    iterator = iter(strategy.distribute_datasets_from_function(task.dataset_fn(0)))
    return task, lambda: search_step(next(iterator))["loss"]


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
    times = _time_alternating(runs)
    return {name: FLAGS.batch_size / seconds for name, seconds in times.items()}


def memory_probe(kind: str) -> dict:
    """One supernet step's peak memory growth (bytes), traced first so tracing is not counted."""
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    supernet = build_supernet(FLAGS.space, FLAGS.num_classes, shape)
    space = supernet.space
    if kind == "warmup":
        masks = uniform_masks(space)
    else:
        masks = one_hot_masks(space, extreme_indices(space)[1])
    images, labels = _batch()
    step = supernet_step_fn(supernet)
    step(images, labels, masks).numpy()  # Trace, optimise and run once: none of that is counted.
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")
        before = tf.config.experimental.get_memory_info("GPU:0")["current"]
        step(images, labels, masks).numpy()
        peak, method = tf.config.experimental.get_memory_info("GPU:0")["peak"], "gpu_peak"
    else:
        before = _current_rss_bytes()
        peak, method = _sampled_peak_rss(lambda: step(images, labels, masks).numpy()), "cpu_rss_sampled"
    return {"kind": kind, "peak_growth_bytes": peak - before, "method": method}


def _sampled_peak_rss(function) -> int:
    """Peak RSS (sampled every ~0.2 ms by a thread) while `function` runs.

    The parent starts this process with MALLOC_MMAP_THRESHOLD_=65536, so that freed tensor
    buffers go back to the OS and the RSS follows the live tensors.
    """
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


def _run_probe(kind: str) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), f"--memory_probe={kind}"]
    names = ("space", "batch_size", "image_size", "num_classes", "deterministic")
    argv += [f"--{name}={getattr(FLAGS, name)}" for name in names]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    output = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv):
    del argv
    with errors.user_input():
        tunas_keras.get_search_space(FLAGS.space)
        unknown = sorted(set(FLAGS.measure) - set(MEASUREMENTS))
        if unknown or not FLAGS.measure:
            raise ValueError(
                f"Invalid value for argument `measure`. Expected a list of {list(MEASUREMENTS)}. "
                f"Received: {FLAGS.measure}"
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
        times = benchmark_speed()
        for name, value in times.items():
            print(f"  {name}: {value if isinstance(value, str) else f'{value * 1000:.1f} ms/step'}")
        print(f"supernet/standalone (largest child): {times['supernet_largest'] / times['standalone_largest']:.3f}")
        print(f"supernet/standalone (sampled child): {times['supernet_sampled'] / times['standalone_sampled']:.3f}")
    if "search" in FLAGS.measure:
        throughput = benchmark_search()
        for name, value in throughput.items():
            print(f"  {name}: {value:.1f} training images/s")
        for name, value in throughput.items():
            if name.startswith("search_step"):
                print(f"{name}/standalone throughput (largest child): {value / throughput['standalone_largest']:.3f}")
    if "memory" not in FLAGS.measure:
        return
    one_hot, warmup = _run_probe("one_hot"), _run_probe("warmup")
    print(f"  peak memory growth one-hot: {one_hot['peak_growth_bytes'] / 2**20:.1f} MiB ({one_hot['method']})")
    print(f"  peak memory growth op warmup: {warmup['peak_growth_bytes'] / 2**20:.1f} MiB ({warmup['method']})")
    print(f"op-warmup/one-hot peak memory: {warmup['peak_growth_bytes'] / one_hot['peak_growth_bytes']:.3f}")


if __name__ == "__main__":
    cli.run(main)
