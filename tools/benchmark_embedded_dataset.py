"""Search-signal check of the embedded dataset: does a larger architecture beat a smaller one?

Trains the smallest and the largest standalone architecture of a search space (default
"proxyless": every kernel / expansion at its first choice and every skippable layer skipped,
versus every choice at its maximum with no layer skipped) on the embedded data for the same
number of steps and seeds, then prints the held-out ("valid") accuracies and their difference.
The defaults (64 px, residual branches starting at zero) are those under which the larger
architecture wins; docs/benchmarks.md records why 32 px and the reference initialisation do not.

    .venv/bin/python tools/benchmark_embedded_dataset.py --seeds=0,1
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import flags

import tunas_keras
from tunas_keras import cli, datasets, errors
from tunas_keras.cost_models.sampling import extreme_indices

FLAGS = flags.FLAGS
flags.DEFINE_string("space", "proxyless", "Search space whose extreme architectures are compared.")
flags.DEFINE_list(
    "architectures",
    ["smallest", "largest"],
    "Architectures to train: 'smallest', 'largest' (of --space) or reference names (e.g. proxylessnas_mobile); "
    "the difference printed is last minus first.",
)
flags.DEFINE_string("dataset", "embedded", "Dataset name (see tunas_keras.datasets.get_dataset).")
flags.DEFINE_integer("image_size", 64, "Image size.", lower_bound=1)
flags.DEFINE_integer("steps", 400, "Training steps per model.", lower_bound=10)
flags.DEFINE_integer("batch_size", 32, "Training batch size.", lower_bound=1)
flags.DEFINE_float(
    "learning_rate", 2e-3, "Peak Adam learning rate (linear warmup over 10% of steps, cosine to 0).", lower_bound=0.0
)
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_list("seeds", ["0"], "Seeds of the weights, the shuffling and the augmentation; one run per seed.")
flags.DEFINE_bool(
    "zero_init_residual", True, "Start every residual branch's last batch-norm gamma at 0 (see build_model)."
)


def train_and_evaluate(architecture, data, steps: int, batch_size: int, seed: int) -> dict:
    """Trains a standalone model for `steps` steps and returns its held-out accuracy and timings."""
    keras.utils.set_random_seed(seed)
    model = tunas_keras.build_model(
        architecture,
        num_classes=data.num_classes,
        input_shape=(data.image_size, data.image_size, 3),
        zero_init_residual=FLAGS.zero_init_residual,
    )
    warmup_steps = steps // 10
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup_steps, warmup_target=FLAGS.learning_rate, warmup_steps=warmup_steps
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=FLAGS.label_smoothing),
        metrics=["accuracy"],
    )
    one_hot = lambda images, labels: (images, tf.one_hot(labels, data.num_classes))  # noqa: E731
    train = data.make("train", batch_size, training=True, seed=seed).map(one_hot)
    valid = data.make("valid", 250, training=False, repeat=False).map(one_hot)
    start = time.time()
    history = model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    train_seconds = time.time() - start
    _, accuracy = model.evaluate(valid, verbose=0)
    return {
        "params": model.count_params(),
        "train_loss": history.history["loss"][-1],
        "train_accuracy": history.history["accuracy"][-1],
        "valid_accuracy": accuracy,
        "seconds": train_seconds,
    }


def _architectures(space) -> dict:
    """Label -> architecture of every `--architectures` entry (a ValueError naming a bad one)."""
    if not FLAGS.architectures:
        raise ValueError("Invalid value for argument `architectures`. Expected at least one. Received: none")
    found = {}
    for label in FLAGS.architectures:
        if label in ("smallest", "largest"):
            found[label] = space.architecture(extreme_indices(space)[label == "largest"])
            continue
        try:
            found[label] = tunas_keras.reference_architecture(label, space=FLAGS.space)
        except ValueError as error:
            raise ValueError(
                f"Invalid value for argument `architectures`. Expected 'smallest', 'largest' or a reference name of "
                f"space {space.name!r}. Received: {label!r} ({error})"
            ) from error
    return found


def main(argv):
    del argv
    with errors.user_input():  # runs no TensorFlow op, so the thread count can still be set below
        space = tunas_keras.get_search_space(FLAGS.space)
        architectures = _architectures(space)
        seeds = cli.numbers(FLAGS.seeds, "seeds", minimum=0)
        data = datasets.get_dataset(FLAGS.dataset, image_size=FLAGS.image_size)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    start = time.time()
    print(f"dataset {data.name}: {data.num_examples('train')} train / {data.num_examples('valid')} valid")
    accuracies = {label: [] for label in FLAGS.architectures}
    for seed in seeds:
        for label, architecture in architectures.items():
            result = train_and_evaluate(architecture, data, FLAGS.steps, FLAGS.batch_size, seed)
            accuracies[label].append(result["valid_accuracy"])
            print(
                f"seed {seed} {label:20s} params={result['params']:>9,d} train_loss={result['train_loss']:.3f} "
                f"train_acc={result['train_accuracy']:.3f} valid_acc={result['valid_accuracy']:.4f} "
                f"({result['seconds']:.0f} s for {FLAGS.steps} steps)",
                flush=True,
            )
    first, last = FLAGS.architectures[0], FLAGS.architectures[-1]
    differences = np.subtract(accuracies[last], accuracies[first])
    print(
        f"valid accuracy: {last} - {first} = {np.mean(differences):+.4f} on average over {len(differences)} seed(s) "
        f"(each: {', '.join(f'{d:+.4f}' for d in differences)}; total {time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
    cli.run(main)
