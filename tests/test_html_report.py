"""The search's HTML report: written, valid HTML, every decision named, figures embedded."""

import base64
import html.parser
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import tunas_keras
from tunas_keras.training import html_report

VOID_ELEMENTS = {"meta", "img", "br", "hr", "link", "input"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _BalanceChecker(html.parser.HTMLParser):
    """Records an error for every closing tag that does not close the innermost open element."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _fake_search(space, seed=0, steps=40):
    rng = np.random.default_rng(seed)
    indices = [int(rng.integers(n)) for n in space.num_choices]
    probabilities = [rng.dirichlet(np.ones(n)).tolist() for n in space.num_choices]
    history = [
        {"step": step, "cost": 90.0 - step / 10, "valid_accuracy": step / steps, "entropy": 35.0 - step / 4}
        for step in range(5, steps + 1, 5)
    ]
    result = {
        "indices": indices,
        "cost": 83.5,
        "target_latency": 84.0,
        "cost_model": "pixel1",
        "config": {"space": space.name, "steps": steps, "seed": seed},
    }
    return history, probabilities, result


@pytest.fixture(scope="module")
def written_report(tmp_path_factory):
    space = tunas_keras.get_search_space("mobilenet_v3_like")  # every kind of decision: kernel, expansion, SE, skip
    history, probabilities, result = _fake_search(space)
    path = str(tmp_path_factory.mktemp("report") / "report.html")
    html_report.write_html_report(path, space, history, probabilities, result)
    with open(path, encoding="utf-8") as handle:
        return space, result, handle.read(), path


def test_html_report_is_valid_html(written_report):
    _, _, text, _ = written_report
    checker = _BalanceChecker()
    checker.feed(text)
    checker.close()
    assert text.startswith("<!DOCTYPE html>")
    assert checker.errors == []
    assert checker.stack == []  # every element closed
    assert {"html", "head", "body", "title", "table", "img"} <= set(checker.tags)


def test_html_report_names_every_decision(written_report):
    space, _, text, _ = written_report
    labels = [html_report.decision_label(decision) for decision in space.decisions]
    assert len(set(labels)) == space.num_decisions  # the short names stay unique
    for label in labels:
        assert f"<td>{label}</td>" in text
    assert "blocks/1/layers/1/kernel_size" in labels
    assert "blocks/1/layers/1/op" in labels  # skip-or-not of a skippable layer
    for key, value in (("space", "mobilenet_v3_like"), ("steps", 40)):
        assert f"<td>{key}</td><td>{value}</td>" in text  # the run's config


def test_html_report_embeds_its_figures(written_report):
    _, _, text, path = written_report
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', text)
    assert [alt for alt, _ in images] == ["architecture", "cost and accuracy", "policy entropy"]
    for _, data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert 'src="http' not in text and "<link" not in text  # self-contained
    assert os.listdir(os.path.dirname(path)) == ["report.html"]  # nothing else written


def test_html_report_shades_every_probability(written_report):
    space, result, text, _ = written_report
    _, probabilities, _ = _fake_search(space)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>", text)
    table = {label: (chosen, cells) for label, chosen, cells in rows}
    for decision, values, index in zip(space.decisions, probabilities, result["indices"]):
        chosen, cells = table[html_report.decision_label(decision)]
        assert chosen == html_report.choice_label(decision.choices[index])
        shaded = re.findall(
            r'<td style="background:rgba\(33,113,181,([0-9.]+)\);color:#(?:fff|000)">([^<]+)</td>', cells
        )
        assert [float(alpha) for alpha, _ in shaded] == pytest.approx(values, abs=5e-4)  # darker = likelier
        labels = [f"{html_report.choice_label(choice)}: {value:.3f}" for choice, value in zip(decision.choices, values)]
        assert [cell for _, cell in shaded] == labels


def test_multi_target_html_report_is_valid_and_shows_every_target(tmp_path):
    space = tunas_keras.get_search_space("proxyless")
    labels, results, probabilities, history = ["60ms", "84ms"], [], [], []
    for seed, target in enumerate((60.0, 84.0)):
        _, values, result = _fake_search(space, seed=seed)
        results.append({**result, "target_latency": target, "cost": target + 0.5 * seed})
        probabilities.append(values)
    for step in range(5, 41, 5):
        entry = {"step": step}
        for label in labels:
            entry.update(
                {f"target_{label}/cost": 70.0, f"target_{label}/valid_accuracy": 0.5, f"target_{label}/entropy": 9.0}
            )
        history.append(entry)
    ranking = {"found": [{"accuracy": 0.61}, {"accuracy": 0.72}]}
    path = str(tmp_path / "report.html")
    html_report.write_targets_html_report(path, space, history, labels, results, probabilities, (ranking, PNG_MAGIC))
    text = open(path, encoding="utf-8").read()
    checker = _BalanceChecker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', text)
    assert [alt for alt, _ in images] == ["Pareto front", "targets", "architecture for 60ms", "architecture for 84ms"]
    assert base64.b64decode(images[0][1]) == PNG_MAGIC  # the Pareto plot as given
    for label, result, accuracy in zip(labels, results, ("0.610", "0.720")):
        row = f"<td>{label}</td><td>{result['target_latency']:g}</td><td>{result['cost']:.2f}</td>"
        assert row in text and f"<td>{accuracy}</td>" in text and ":".join(map(str, result["indices"])) in text
    assert "<td>+0.6 %</td>" in text  # 84.5 vs 84
    assert text.count("<td>blocks/2/layers/1/kernel_size</td>") == 2  # each target's probability table


def test_architecture_rows_of_proxylessnas_mobile():
    space = tunas_keras.get_search_space("proxyless")
    architecture = tunas_keras.reference_architecture("proxylessnas_mobile")
    rows = html_report.architecture_rows(space, architecture.indices)
    # design.md: per-layer op = e*3 + k (e: x3 / x6, k: 3 / 5 / 7), 6 = skip; the first entry is the sepconv kernel.
    ops = [1, 0, 6, 6, 2, 0, 1, 1, 5, 1, 1, 1, 4, 1, 1, 1, 5, 5, 2, 2, 5]
    bottlenecks = [row for row in rows if row["type"] in ("bneck", "skip")]
    assert [row["type"] for row in rows[:2]] == ["conv", "sepconv"] and rows[1]["kernel"] == 3
    assert len(bottlenecks) == len(ops)
    for row, op in zip(bottlenecks, ops):
        assert row["skipped"] == (op == 6), row
        if op != 6:
            assert (row["expansion"], row["kernel"]) == ((3, 6)[op // 3], (3, 5, 7)[op % 3]), row
    assert [row["filters"] for row in bottlenecks[::4]] == [32, 40, 80, 96, 192, 320]
    assert bottlenecks[0]["expanded"] == 48 and bottlenecks[0]["strides"] == 2  # 16 input filters x 3
    text = html_report.architecture_table_text(space, architecture.indices)
    assert len(text.splitlines()) == len(rows) + 2  # header, rule, one line per layer
    assert "blocks/2/layers/2  skip" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")
def test_html_report_renders_in_headless_chromium(written_report, tmp_path):
    _, _, _, path = written_report
    screenshot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    command = ["chromium", *flags, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}"]
    subprocess.run(
        [*command, "--window-size=1200,1600", f"file://{path}"], check=True, timeout=120, capture_output=True
    )
    from matplotlib import image  # pylint: disable=import-outside-toplevel

    pixels = image.imread(str(screenshot))
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page: text and figures were drawn
