"""The calibration report's warnings, table and plot (see `calibration.calibrate`)."""

from __future__ import annotations

import io

import numpy as np

from tunas_keras.training.trainer import write_atomic

PLOTTED = (
    ("table_corrected", "train", "o"),
    ("table_corrected", "heldout", "^"),
    ("table", "heldout", "s"),
    ("ridge", "heldout", "x"),
)


def noise_warnings(report: dict, max_noise_percent: float) -> list[str]:
    """Sentences saying why the measurements cannot support the fit's accuracy (empty: none).

    Warns for every round left out as disturbed (`protocol.disturbed_rounds`), when the rounds of
    whole networks disagree by more than `max_noise_percent` (MAPE;
    micro-benchmarks: twice that), when an anchor drifts by more than twice its phase's limit
    (coefficient of variation: single slow visits weigh in, so it is looser),
    when the expected error of the measured networks is above the chosen fit's held-out MAPE,
    and when the load average shows other work.
    """
    warnings = []
    chosen = report["methods"][report["method"]]["heldout"]["mape_percent"]
    for phase, limit in (("networks", max_noise_percent), ("micro", 2 * max_noise_percent)):
        for round_index, shift in sorted(report[phase].get("dropped_rounds", {}).items()):
            warnings.append(
                f"{phase}: round {round_index} ran {abs(shift):.1f} % {'slower' if shift > 0 else 'faster'} than "
                "the others as a whole (other work during part of the run?); left out of the values and the "
                "noise floor."
            )
        noise = report[phase]["noise"]
        rounds = noise.get("round_to_round")
        if rounds and rounds["mean"]["mape_percent"] > limit:
            warnings.append(
                f"{phase}: rounds disagree by {rounds['mean']['mape_percent']:.2f} % (MAPE; Spearman "
                f"{rounds['mean']['spearman']:.4f}), above {limit:g} %: a busy machine?"
            )
        drift = max((anchor["cv_percent"] for anchor in noise["anchors"].values()), default=0.0)
        if drift > 2 * limit:
            warnings.append(f"{phase}: anchors drifted by {drift:.2f} % (coefficient of variation) during the run.")
    floor = report["networks"]["noise"].get("final_noise_percent")
    if floor is not None and floor > chosen:
        warnings.append(
            f"The noise floor ({floor:.2f} % expected error of the measured networks) is above the "
            f"fit's held-out MAPE ({chosen:.2f} %): the accuracy figures cannot be trusted."
        )
    load = report.get("load_average_1m")
    if load is not None and load > report["num_threads"] + 1:
        warnings.append(
            f"Load average {load:.2f} during the measurements (an idle host shows about "
            f"{report['num_threads']}, the timing threads): other work was running."
        )
    return warnings


def write_plot(report: dict, title: str) -> None:
    """Predicted vs measured networks (the corrected table on both sets, the others held out), y = x."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    figure = Figure(figsize=(5.5, 5.0))
    axes = figure.subplots()
    values = []
    for method, name, marker in PLOTTED:
        rows = report["architectures"][name]
        measured, predicted = [row["measured_ms"] for row in rows], [row[f"{method}_ms"] for row in rows]
        mape = report["methods"][method][name]["mape_percent"]
        axes.scatter(
            measured,
            predicted,
            marker=marker,
            s=18,
            alpha=0.7,
            label=f"{method}, {name} ({len(rows)}): MAPE {mape:.1f} %",
        )
        values += measured + predicted
    limits = [min(values) * 0.95, max(values) * 1.05]
    axes.plot(limits, limits, "k--", linewidth=1, label="y = x")
    axes.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", title=title, xlim=limits, ylim=limits)
    axes.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_atomic(report["plot_path"], buffer.getvalue())


def _metrics_line(label: str, metrics: dict) -> str:
    return (
        f"{label:38s} {metrics['count']:4d} {metrics['spearman']:9.4f} {metrics['mape_percent']:7.2f} "
        f"{metrics['max_abs_percent_error']:7.2f} {metrics['rmse_ms']:8.3f}"
    )


def _noise_line(phase: str, noise: dict) -> str:
    rounds = noise.get("round_to_round")
    if not rounds:
        return f"noise ({phase}): one round only, no test-retest"
    anchors = max((anchor["cv_percent"] for anchor in noise["anchors"].values()), default=float("nan"))
    final = noise.get("final_noise_percent", float("nan"))
    return (
        f"noise ({phase}, {noise['num_items']} items, {noise['num_rounds']} rounds): round-to-round Spearman "
        f"{rounds['mean']['spearman']:.4f} MAPE {rounds['mean']['mape_percent']:.2f} % (worst pair "
        f"{rounds['worst']['mape_percent']:.2f} %), expected error of the values {final:.2f} %, anchor CV "
        f"{anchors:.2f} %"
    )


def format_report(report: dict) -> str:
    """The methods' accuracy on the training and held-out networks, the noise floor and the warnings."""
    lines = [f"{'method / set':38s} {'n':>4s} {'spearman':>9s} {'MAPE %':>7s} {'max|%|':>7s} {'RMSE ms':>8s}"]
    for method, result in report["methods"].items():
        chosen = " (written)" if method == report["method"] else ""
        for name in ("train", "heldout"):
            lines.append(_metrics_line(f"{method}{chosen} / {name}", result[name]))
    for ablation in report.get("ablations", {}).values():
        for method in ("table", "table_corrected"):
            label = f"{method} @{ablation['num_sampled']}/{ablation['num_ops']} ops / heldout"
            lines.append(_metrics_line(label, ablation[method]["heldout"]) + "  (the rest predicted)")
    pixel1 = report["pixel1_heldout"]["spearman"]
    lines.append(f"{'pixel1 / heldout':38s} {report['heldout']['count']:4d} {pixel1:9.4f}")
    micro = report["micro"]
    lines.append(
        f"micro-benchmarks: {micro['num_measured']} {report['unit']} models timed, {micro['num_predicted']} "
        f"predicted, empty model {1000 * micro['overhead_ms']:.1f} us"
    )
    lines += [_noise_line("networks", report["networks"]["noise"]), _noise_line("micro", micro["noise"])]
    seconds = {phase: report[phase]["seconds"]["total"] for phase in ("micro", "networks")}
    load = report.get("load_average_1m")
    lines.append(
        f"measurement time: {report['measurement_seconds'] / 60:.1f} min (micro {seconds['micro'] / 60:.1f}, "
        f"networks {seconds['networks'] / 60:.1f}); mean load average "
        f"{np.nan if load is None else load:.2f}"
    )
    lines += [f"WARNING: {warning}" for warning in report["warnings"]] or ["no noise warnings"]
    lines.append(f"statistic={report['statistic']}  cost model ({report['method']}): {report['cost_model_path']}")
    return "\n".join(lines)


def study_markdown(reports: dict) -> str:
    """A markdown table of several calibrations (`{label: report}`): every method's held-out accuracy
    beside the run's noise floor, measurement time and warnings (as docs/benchmarks.md records them)."""
    lines = [
        "| run | method | fitted networks | micro models | held-out n | Spearman | MAPE | worst | "
        "noise floor: rounds Spearman / MAPE (expected error) | measurement time | warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, report in reports.items():
        noise = report["networks"]["noise"]
        rounds = noise.get("round_to_round", {}).get("mean", {})
        floor = (
            f"{rounds.get('spearman', float('nan')):.4f} / {rounds.get('mape_percent', float('nan')):.2f} % "
            f"({noise.get('final_noise_percent', float('nan')):.2f} %)"
        )
        micro = f"{report['micro']['num_measured']} {report['unit']}s"
        if report["micro"]["num_predicted"]:
            micro += f" (+{report['micro']['num_predicted']} predicted)"
        minutes = f"{report['measurement_seconds'] / 60:.1f} min"
        rows = [(name, result["heldout"]) for name, result in report["methods"].items()]
        rows += [
            (f"{name} from {ablation['num_sampled']}/{ablation['num_ops']} ops", ablation[name]["heldout"])
            for ablation in report.get("ablations", {}).values()
            for name in ("table", "table_corrected")
        ]
        for name, metrics in rows:
            written = " **(written)**" if name == report["method"] else ""
            pure_table = name.startswith("table") and not name.startswith("table_corrected")
            fitted = 0 if pure_table else report["train"]["count"]
            lines.append(
                f"| {label} | {name}{written} | {fitted} | {micro} | {metrics['count']} | "
                f"{metrics['spearman']:.4f} | {metrics['mape_percent']:.2f} % | "
                f"{metrics['max_abs_percent_error']:.1f} % | {floor} | {minutes} | "
                f"{len(report['warnings'])} |"
            )
    return "\n".join(lines)
