"""The PNG report of a search: sampled cost vs T0, policy entropy, final per-decision probabilities."""

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
