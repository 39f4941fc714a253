"""The HTML report of a search: one self-contained file (figures embedded as base64 PNG).

Written next to `report.png` at the end of a search (`write_html_report`). It shows:
- the found architecture drawn block by block (per layer: kernel, expansion, skipped or not,
  width, squeeze-excite; as the paper's architecture figures) and as a table
  (`architecture_rows`, also printed on the console as text by `architecture_table_text`);
- the most likely architecture's cost against T0, and the sampled children's cost and
  validation accuracy over the steps;
- the policy entropy over the steps;
- the final per-decision probabilities, each labelled with the decision's name
  (`decision_label`: e.g. `blocks/2/layers/1/kernel_size`) and its choices;
- the run's config.

A multi-target search writes `write_targets_html_report`: a row per target (T0, cost, accuracy),
the Pareto plot under the final shared weights, every target's cost, accuracy and entropy over
the steps, and per target its architecture and probabilities.

    >>> write_html_report("runs/search/report.html", space, history, probabilities, result)
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Optional

import numpy as np

from tunas_keras import specs
from tunas_keras.training.trainer import write_atomic

# Path components of a decision that only say "inside a OneOf" / "the skippable layer's body".
_HIDDEN_PARTS = ("layer",)
KERNEL_COLOURS = {3: "#c6dbef", 5: "#6baed6", 7: "#2171b5"}
FINAL_FRACTION = 0.1  # "the end of the run": the last 10 % of the history


def decision_label(decision) -> str:
    """A short, unique name of a decision: its path without the `layer` / `op=0` steps.

    `blocks/2/layers/1/layer/op=0/kernel_size/kernel_size` -> `blocks/2/layers/1/kernel_size`;
    `blocks/2/layers/1/layer/op` (skip or not) -> `blocks/2/layers/1/op`.
    """
    parts = [str(part) for part in decision.path if str(part) not in _HIDDEN_PARTS and "=" not in str(part)]
    if parts and parts[-1] == decision.tag:
        parts = parts[:-1]
    return "/".join(parts + [decision.tag])


def choice_label(choice: Any) -> str:
    """A short label of one choice of a decision: `3`, `True`, `skip`, `bneck`, `sepconv k5`."""
    if isinstance(choice, specs.Zero):
        return "skip"
    if isinstance(choice, specs.Bottleneck):
        return "bneck"
    if isinstance(choice, (specs.SeparableConv, specs.Conv)):
        name = "sepconv" if isinstance(choice, specs.SeparableConv) else "conv"
        return f"{name} k{choice.kernel_size}" if isinstance(choice.kernel_size, int) else name
    return str(choice)


def _layer_row(block: int, position: int, layer: Any, filters: int, input_filters: int) -> Optional[dict]:
    """One table row for a computing layer of a resolved network (None for pools, endpoints, activations)."""
    residual = isinstance(layer, specs.Residual)
    body = layer.layer if residual else layer
    row = {
        "layer": f"blocks/{block}/layers/{position}",
        "type": "",
        "kernel": None,
        "expansion": None,
        "expanded": None,
        "squeeze_excite": False,
        "strides": 1,
        "filters": filters,
        "residual": residual,
        "skipped": isinstance(body, specs.Zero),
    }
    if isinstance(body, specs.Zero):
        row["type"] = "skip"
    elif isinstance(body, specs.Bottleneck):
        row.update(
            type="bneck",
            kernel=body.kernel_size,
            expansion=body.expansion if body.expanded_filters is None else None,
            expanded=body.inner_filters(input_filters),
            squeeze_excite=bool(body.squeeze_excite),
            strides=body.strides,
        )
    elif isinstance(body, (specs.SeparableConv, specs.Conv)):
        row.update(
            type="sepconv" if isinstance(body, specs.SeparableConv) else "conv",
            kernel=body.kernel_size,
            strides=body.strides,
        )
    else:
        return None
    return row


def architecture_rows(space, indices) -> list:
    """Per computing layer of the architecture `indices` of `space`: a dict with `layer` (name),
    `type` (conv / sepconv / bneck / skip), `kernel`, `expansion`, `expanded` (inner width),
    `squeeze_excite`, `strides`, `filters` (output width), `residual` and `skipped`."""
    network = space.resolve(space.architecture(indices))
    rows, input_filters = [], 3
    for block_index, block in enumerate(network.blocks):
        for position, layer in enumerate(block.layers):
            row = _layer_row(block_index, position, layer, block.filters, input_filters)
            if row is not None:
                rows.append(row)
                if not row["skipped"]:
                    input_filters = block.filters
        input_filters = block.filters
    return rows


_COLUMNS = ("layer", "type", "kernel", "expansion", "SE", "stride", "filters", "skipped")


def _cells(row: dict) -> list:
    expansion = f"x{row['expansion']}" if row["expansion"] is not None else ""
    if row["expanded"] is not None:
        expansion = f"{expansion} ({row['expanded']})".strip()
    return [
        row["layer"],
        row["type"],
        "" if row["kernel"] is None else f"{row['kernel']}x{row['kernel']}",
        expansion,
        "yes" if row["squeeze_excite"] else "",
        str(row["strides"]),
        str(row["filters"]),
        "skipped" if row["skipped"] else "",
    ]


def architecture_table_text(space, indices) -> str:
    """The architecture table as aligned plain text (the console's final lines)."""
    table = [list(_COLUMNS)] + [_cells(row) for row in architecture_rows(space, indices)]
    widths = [max(len(line[column]) for line in table) for column in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    return pyplot


def _png(figure, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def architecture_figure(rows: list, title: str) -> bytes:
    """The architecture drawn layer by layer (PNG): box height ~ inner width, colour = kernel size,
    dashed = skipped, "SE" = squeeze-excite, block boundaries with their output widths."""
    from matplotlib import patches  # pylint: disable=import-outside-toplevel

    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=(max(6.0, 0.62 * len(rows) + 1.0), 2.8))
    widest = max([row["expanded"] or row["filters"] for row in rows] + [1])
    previous_block = None
    for x, row in enumerate(rows):
        block = row["layer"].split("/")[1]
        if block != previous_block:
            axis.axvline(x - 0.5, color="0.7", lw=0.8)
            axis.text(x - 0.45, 1.12, f"block {block}\n{row['filters']} ch", fontsize=7, va="bottom")
            previous_block = block
        width = row["expanded"] or row["filters"]
        height = 0.25 + 0.75 * np.sqrt(width / widest)
        colour = "white" if row["skipped"] else KERNEL_COLOURS.get(row["kernel"], "#bdbdbd")
        axis.add_patch(
            patches.FancyBboxPatch(
                (x - 0.4, -height / 2),
                0.8,
                height,
                boxstyle="round,pad=0.02",
                facecolor=colour,
                edgecolor="0.3",
                ls="--" if row["skipped"] else "-",
            )
        )
        if row["skipped"]:
            label = "skip"
        else:
            label = f"{row['type']}\nk{row['kernel']}"
            if row["expansion"] is not None:
                label += f"\nx{row['expansion']}"
            if row["strides"] > 1:
                label += f"\ns{row['strides']}"
        axis.text(x, 0, label, ha="center", va="center", fontsize=7, color="black" if row["kernel"] != 7 else "white")
        if row["squeeze_excite"]:
            axis.text(x, -0.62, "SE", ha="center", fontsize=7, color="tab:red", weight="bold")
    axis.set(xlim=(-0.6, len(rows) - 0.4), ylim=(-0.7, 1.4), title=title)
    axis.axis("off")
    return _png(figure, dpi=110)


def training_figure(history: list, result: dict) -> bytes:
    """Sampled cost (and the most likely architecture's final cost) vs T0, and validation accuracy."""
    pyplot = _pyplot()
    steps = [entry["step"] for entry in history]
    figure, cost_axis = pyplot.subplots(figsize=(9, 3.6))
    cost_axis.plot(steps, [entry.get("cost", np.nan) for entry in history], lw=1, label="sampled cost")
    cost_axis.axhline(result["target_latency"], color="k", ls="--", label="target T0")
    cost_axis.axhline(result["cost"], color="tab:red", ls=":", label=f"most likely: {result['cost']:.2f}")
    cost_axis.set(xlabel="step", ylabel=f"cost ({result['cost_model']})")
    accuracy_axis = cost_axis.twinx()
    accuracy_axis.plot(
        steps, [entry.get("valid_accuracy", np.nan) for entry in history], color="tab:orange", lw=1, label="valid acc"
    )
    accuracy_axis.set(ylabel="children's validation accuracy", ylim=(0, 1))
    handles = cost_axis.get_legend_handles_labels()
    extra = accuracy_axis.get_legend_handles_labels()
    cost_axis.legend(handles[0] + extra[0], handles[1] + extra[1], loc="lower right", fontsize=8)
    cost_axis.set_title("cost vs T0 and validation accuracy of the sampled children")
    figure.tight_layout()
    return _png(figure)


def entropy_figure(history: list) -> bytes:
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=(9, 2.8))
    axis.plot([entry["step"] for entry in history], [entry.get("entropy", np.nan) for entry in history], color="g")
    axis.set(xlabel="step", ylabel="nats", title="policy entropy")
    figure.tight_layout()
    return _png(figure)


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list, rows: list) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def final_accuracy(history: list, fraction: float = FINAL_FRACTION, key: str = "valid_accuracy") -> Optional[float]:
    """Mean validation accuracy of the sampled children (history field `key`) over the last
    `fraction` of the history entries that have it."""
    values = [entry[key] for entry in history if key in entry]
    if not values:
        return None
    return float(np.mean(values[-max(1, int(round(fraction * len(values)))) :]))


def probability_table(space, probabilities: list, chosen: list) -> str:
    """The final probabilities as an HTML table shaded like a heatmap: a row per decision (its
    `decision_label`), the chosen option, then one cell per choice with its label and
    probability, its background as dark as the probability is high."""
    width = max(space.num_choices)
    rows = []
    for decision, values, index in zip(space.decisions, probabilities, chosen):
        cells = [f"<td>{html.escape(decision_label(decision))}</td>"]
        cells.append(f"<td>{html.escape(choice_label(decision.choices[index]))}</td>")
        for choice, value in zip(decision.choices, values):
            colour = "#fff" if value > 0.6 else "#000"
            style = f"background:rgba(33,113,181,{value:.3f});color:{colour}"
            cells.append(f'<td style="{style}">{html.escape(choice_label(choice))}: {value:.3f}</td>')
        cells += ["<td></td>"] * (width - len(values))
        rows.append("<tr>" + "".join(cells) + "</tr>\n")
    header = ["decision", "chosen"] + [f"choice {column}" for column in range(width)]
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(rows)}</tbody>\n</table>"


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#eee}img{max-width:100%}"
)


def render_html(space, history: list, probabilities: list, result: dict) -> str:
    """The report as one HTML string (see the module docstring)."""
    indices = list(result["indices"])
    rows = architecture_rows(space, indices)
    accuracy = final_accuracy(history)
    ratio = 100 * (result["cost"] / result["target_latency"] - 1)
    summary = [
        ["space", space.name],
        ["architecture", ":".join(map(str, indices))],
        ["cost of the most likely architecture", f"{result['cost']:.2f} ({result['cost_model']})"],
        ["target T0", f"{result['target_latency']:.2f} ({ratio:+.1f} %)"],
        ["steps", history[-1]["step"] if history else 0],
        ["children's validation accuracy, last 10 % of steps", "n/a" if accuracy is None else f"{accuracy:.3f}"],
    ]
    parts = [
        _table(["what", "value"], summary),
        "<h2>Found architecture</h2>",
        "<p>Box height ~ inner width, colour = kernel size (3, 5, 7: light to dark), dashed = skipped, SE = "
        "squeeze-excite.</p>",
        _image(
            architecture_figure(rows, f"{space.name}: {result['cost']:.2f} vs T0 {result['target_latency']:.2f}"),
            "architecture",
        ),
        _table(list(_COLUMNS), [_cells(row) for row in rows]),
        "<h2>Cost vs T0 and validation accuracy over steps</h2>",
        _image(training_figure(history, result), "cost and accuracy"),
        "<h2>Policy entropy</h2>",
        _image(entropy_figure(history), "policy entropy"),
        "<h2>Final per-decision probabilities</h2>",
        probability_table(space, probabilities, indices),
    ]
    return _document(f"TuNAS search report: {space.name}", parts, result.get("config", {}))


def _document(title: str, parts: list, config: dict) -> str:
    """A whole HTML page: `title` as its title and heading, `parts`, then the run's config table."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    tail = ["<h2>Config</h2>", _table(["field", "value"], [[key, config[key]] for key in sorted(config)])]
    return "\n".join(head + parts + tail + ["</body>", "</html>"]) + "\n"


def write_html_report(path: str, space, history: list, probabilities: list, result: dict) -> None:
    """Writes `render_html(...)` to `path` (atomically)."""
    write_atomic(path, render_html(space, history, probabilities, result).encode("utf-8"))


# -- several targets (`SearchTask._finalize_targets`) -----------------------------------------------


def targets_figure(history: list, labels: list, results: list) -> bytes:
    """Each target's sampled cost (dashed: its target, dotted: its final architecture), its sampled
    children's validation accuracy and its controller's entropy over the steps (three panels)."""
    pyplot = _pyplot()
    steps = [entry["step"] for entry in history]
    figure, (cost_axis, accuracy_axis, entropy_axis) = pyplot.subplots(3, 1, figsize=(9, 8.4), sharex=True)
    for index, (label, result) in enumerate(zip(labels, results)):
        color, key = f"C{index}", f"target_{label}/"
        cost_axis.plot(steps, [entry.get(key + "cost", np.nan) for entry in history], color=color, lw=1, label=label)
        cost_axis.axhline(result["target_latency"], color=color, ls="--", lw=1)
        cost_axis.axhline(result["cost"], color=color, ls=":", lw=1)
        values = [entry.get(key + "valid_accuracy", np.nan) for entry in history]
        accuracy_axis.plot(steps, values, color=color, lw=1, label=label)
        entropy_axis.plot(steps, [entry.get(key + "entropy", np.nan) for entry in history], color=color, label=label)
    cost_axis.set(ylabel=f"sampled cost ({results[0]['cost_model']})", title="each target's sampled cost vs its T0")
    accuracy_axis.set(ylabel="validation accuracy", ylim=(0, 1), title="each target's sampled children")
    entropy_axis.set(xlabel="step", ylabel="nats", title="each controller's entropy")
    for axis in (cost_axis, accuracy_axis, entropy_axis):
        axis.legend(ncol=len(labels), fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _targets_summary(history: list, labels: list, results: list, found: Optional[list]) -> str:
    """One row per target: T0, the found architecture's cost and error, the children's validation
    accuracy over the last 10 % of steps, the found architecture's accuracy under the shared weights."""
    rows = []
    for index, (label, result) in enumerate(zip(labels, results)):
        accuracy = final_accuracy(history, key=f"target_{label}/valid_accuracy")
        shared = None if not found else found[index].get("accuracy")
        rows.append(
            [
                label,
                f"{result['target_latency']:g}",
                f"{result['cost']:.2f}",
                f"{100 * (result['cost'] / result['target_latency'] - 1):+.1f} %",
                "n/a" if accuracy is None else f"{accuracy:.3f}",
                "n/a" if shared is None else f"{shared:.3f}",
                ":".join(map(str, result["indices"])),
            ]
        )
    header = ["target", "T0", "cost", "vs T0", "children's valid acc (last 10 %)", "shared-weight acc", "indices"]
    return _table(header, rows)


def render_targets_html(
    space, history: list, labels: list, results: list, probabilities: list, pareto: Optional[tuple] = None
) -> str:
    """The report of a multi-target search as one HTML string: a summary row per target, the Pareto
    plot (`pareto` = (ranking dict, pareto.png bytes), as `pareto.write_search_front` wrote them),
    every target's cost, accuracy and entropy over the steps, then per target its architecture
    (figure and table) and its final per-decision probabilities."""
    ranking, pareto_png = pareto if pareto is not None else (None, None)
    parts = [_targets_summary(history, labels, results, ranking["found"] if ranking else None)]
    if pareto_png is not None:
        parts += [
            "<h2>Cost vs accuracy under the final shared weights</h2>",
            "<p>Stars: the found architectures; grey: uniform children; the line joins the non-dominated points.</p>",
            _image(pareto_png, "Pareto front"),
        ]
    parts += [
        "<h2>Cost, accuracy and entropy over steps</h2>",
        _image(targets_figure(history, labels, results), "targets"),
    ]
    for label, result, values in zip(labels, results, probabilities):
        rows = architecture_rows(space, list(result["indices"]))
        title = f"{label}: {result['cost']:.2f} vs T0 {result['target_latency']:g}"
        parts += [
            f"<h2>Target {html.escape(label)}: found architecture</h2>",
            _image(architecture_figure(rows, title), f"architecture for {label}"),
            _table(list(_COLUMNS), [_cells(row) for row in rows]),
            f"<h3>Target {html.escape(label)}: final per-decision probabilities</h3>",
            probability_table(space, values, list(result["indices"])),
        ]
    return _document(f"TuNAS multi-target search report: {space.name}", parts, results[0].get("config", {}))


def write_targets_html_report(
    path: str, space, history: list, labels: list, results: list, probabilities: list, pareto: Optional[tuple] = None
) -> None:
    """Writes `render_targets_html(...)` to `path` (atomically)."""
    html_text = render_targets_html(space, history, labels, results, probabilities, pareto)
    write_atomic(path, html_text.encode("utf-8"))
