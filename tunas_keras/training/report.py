"""The PNG report of a search: sampled cost vs T0, policy entropy, final per-decision probabilities.

A multi-target search (`write_targets_report`): every target's sampled cost and entropy over the
steps and the final architectures side by side.
"""

from __future__ import annotations

import io

import numpy as np

from tunas_keras.training.trainer import write_atomic


def write_search_report(path: str, space, history: list, probabilities: list, result: dict) -> None:
    """Writes a three-panel PNG summarising a search (atomically)."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    steps = [entry["step"] for entry in history]
    figure, (cost_axis, entropy_axis, probability_axis) = pyplot.subplots(
        3, 1, figsize=(10, 11), gridspec_kw={"height_ratios": [1, 1, 1.4]}
    )
    cost_axis.plot(steps, [entry["cost"] for entry in history], label="sampled cost", lw=1)
    cost_axis.axhline(result["target_latency"], color="k", ls="--", label="target T0")
    cost_axis.axhline(result["cost"], color="tab:red", ls=":", label=f"most likely: {result['cost']:.2f}")
    cost_axis.set(xlabel="step", ylabel=f"cost ({result['cost_model']})", title=f"{space.name}: sampled cost vs T0")
    cost_axis.legend()
    entropy_axis.plot(steps, [entry.get("entropy", np.nan) for entry in history], color="tab:green")
    entropy_axis.set(xlabel="step", ylabel="policy entropy (nats)", title="controller entropy")
    width = max(len(values) for values in probabilities)
    table = np.full((len(probabilities), width), np.nan)
    for position, values in enumerate(probabilities):
        table[position, : len(values)] = values
    image = probability_axis.imshow(table.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    probability_axis.set(xlabel="decision", ylabel="choice", title="final per-decision probabilities")
    figure.colorbar(image, ax=probability_axis, fraction=0.03)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())


def write_targets_report(path: str, space, history: list, labels: list, results: list, probabilities: list) -> None:
    """The PNG of a multi-target search (atomically): every target's sampled cost and entropy over
    the steps, and the final architectures side by side (one row per target)."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    steps = [entry["step"] for entry in history]
    figure, (cost_axis, entropy_axis, architecture_axis) = pyplot.subplots(
        3, 1, figsize=(12, 11), gridspec_kw={"height_ratios": [1.2, 1, 0.35 + 0.25 * len(labels)]}
    )
    for index, (label, result) in enumerate(zip(labels, results)):
        color = f"C{index}"
        key = f"target_{label}/"
        cost_axis.plot(steps, [entry.get(key + "cost", np.nan) for entry in history], color=color, lw=1, label=label)
        cost_axis.axhline(result["target_latency"], color=color, ls="--", lw=1)
        cost_axis.axhline(result["cost"], color=color, ls=":", label=f"most likely: {result['cost']:.2f}")
        entropy_axis.plot(steps, [entry.get(key + "entropy", np.nan) for entry in history], color=color, label=label)
    cost_axis.set(
        xlabel="step",
        ylabel=f"sampled cost ({results[0]['cost_model']})",
        title=f"{space.name}: each target's sampled cost (dashed: its target, dotted: its final architecture)",
    )
    cost_axis.legend(ncol=len(labels), fontsize="small")
    entropy_axis.set(xlabel="step", ylabel="policy entropy (nats)", title="each controller's entropy")
    entropy_axis.legend(ncol=len(labels), fontsize="small")
    _draw_architectures(architecture_axis, space, labels, results, probabilities)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())


def _draw_architectures(axis, space, labels: list, results: list, probabilities: list) -> None:
    """One row per target: the chosen index of every searched decision, coloured by its probability."""
    searched = [position for position, decision in enumerate(space.decisions) if decision.num_choices > 1]
    chosen = np.asarray([[result["indices"][position] for position in searched] for result in results])
    confidence = np.asarray(
        [
            [values[position][result["indices"][position]] for position in searched]
            for result, values in zip(results, probabilities)
        ]
    )
    image = axis.imshow(confidence, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    for row, column in np.ndindex(chosen.shape):
        axis.text(column, row, str(chosen[row, column]), ha="center", va="center", fontsize=6, color="w")
    axis.set_yticks(range(len(labels)), [f"{label}: {result['cost']:.1f}" for label, result in zip(labels, results)])
    axis.set(xlabel=f"searched decision (of {len(searched)}; text: chosen index)", title="final architectures")
    axis.figure.colorbar(image, ax=axis, fraction=0.03, label="probability")
