"""A latency measurement protocol that knows its noise: interleaved rounds, anchors, a resumable cache.

Items (networks, layer or op models) are timed in `rounds`; each round visits every item once in
its own seeded order (so a load change is spread over all items instead of hitting one item's
runs back to back), and re-times a few *anchor* items every `anchor_every` items, which tracks
drift through the whole run. Each visit is one *block*: `warmup_runs` untimed runs, then `runs`
timed ones, summarised by their min / median / mean.

What the rounds give besides the value (the median over rounds of the per-round statistic):

* test-retest agreement: Spearman and MAPE between the values of two rounds, averaged over
  the pairs of rounds (the *noise floor*);
* `final_noise_percent`: the expected |error| of the final values implied by it (a median of
  `R` rounds; see `noise_floor`);
* the spread of every item over its rounds, and the anchors' drift (coefficient of variation).

Every block is appended to a JSON-lines cache as soon as it is measured, so a killed
measurement resumes where it stopped; a cache made with other settings is refused.

    >>> items = [Item("network", key, architecture) for key, architecture in ...]
    >>> records = run_rounds("network", items, device, cache, rounds=3, anchors=anchor_keys)
    >>> values = item_values(records["network"], "median"); noise_floor(records["network"], "median")
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

STATISTICS = ("min", "median", "mean")


@dataclasses.dataclass(frozen=True)
class Item:
    """One thing to time: `kind` ("network", "layer", "op", "overhead"), a stable `key`, and what
    the device needs to build it (`payload`: an `Architecture`, a `LayerVariant`, an `Op`...)."""

    kind: str
    key: str
    payload: Any = None


class Device(abc.ABC):
    """Where items are timed: `prepare` builds an item once (e.g. exports a `.tflite`), `time` runs a block."""

    @abc.abstractmethod
    def prepare(self, item: Item) -> Any:
        """Whatever `time` needs for `item` (a file path, ...); called once per block, should cache."""

    @abc.abstractmethod
    def time(self, prepared: Any, warmup_runs: int, runs: int) -> dict:
        """One block: `{"min", "median", "mean" (ms, None if unknown), "provenance": {...}}`."""


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, ranks) / counts)[inverse]


def correlation(first, second) -> float:
    """Pearson's correlation (NaN when either side is constant or shorter than 2)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if len(first) < 2 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return float("nan")
    return float(np.corrcoef(first, second)[0, 1])


def spearman(first, second) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    return correlation(_ranks(first), _ranks(second))


def regression_metrics(predicted, measured) -> dict:
    """Spearman / Pearson correlation, MAPE and max |% error| (of the measured value), RMSE (ms)."""
    predicted, measured = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    percent = 100 * np.abs(predicted - measured) / measured
    return {
        "count": int(len(measured)),
        "spearman": spearman(predicted, measured),
        "pearson": correlation(predicted, measured),
        "mape_percent": float(percent.mean()),
        "max_abs_percent_error": float(percent.max()),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
    }


def schedule(
    phase: str,
    keys: Sequence[str],
    rounds: int,
    anchors: Sequence[str] = (),
    anchor_every: int = 20,
    seed: int = 0,
    first: Sequence[str] = (),
) -> list[tuple[int, str, int]]:
    """The visits of a phase: `(round, key, occurrence)` in measuring order.

    Each round starts with `first` (e.g. the empty model), then every key once in a seeded order
    of its own, with the anchors re-visited before each run of `anchor_every` keys and at the
    end. `occurrence` numbers the visits of a key within a round. The order of a key's visits
    depends on the key list, but the visits themselves do not: asking for more keys later keeps
    every cached visit (they are matched by `(round, key, occurrence)`).
    """
    keys, anchors = list(dict.fromkeys(keys)), list(dict.fromkeys(anchors))
    missing = [anchor for anchor in anchors if anchor not in keys]
    if missing:
        raise ValueError(f"Invalid value for argument `anchors`: {missing[:3]} are not items of the phase.")
    phase_seed = int.from_bytes(phase.encode()[:8].ljust(8, b"\0"), "little")
    visits = []
    for round_index in range(rounds):
        order = np.random.default_rng([seed, phase_seed, round_index]).permutation(len(keys))
        counts: dict[str, int] = {}

        def visit(key: str, round_index: int = round_index, counts: dict = counts) -> None:
            visits.append((round_index, key, counts.get(key, 0)))
            counts[key] = counts.get(key, 0) + 1

        for key in first:
            visit(key)
        for position, index in enumerate(order):
            if anchors and position % anchor_every == 0:
                for anchor in anchors:
                    visit(anchor)
            if keys[index] not in anchors:
                visit(keys[index])
        for anchor in anchors:
            visit(anchor)
    return visits


class MeasurementCache:
    """The JSON-lines file of measured blocks; each record carries the settings it was made with.

    Args:
      path: the file (created on the first append).
      settings: a dict; every record must have been made with exactly these (else ValueError).
    """

    def __init__(self, path: str, settings: dict):
        self.path, self.settings, self._synced = path, dict(settings), 0.0

    def read(self) -> list[dict]:
        """All records; a truncated last line (a killed run) is cut off with a warning.

        Raises:
          ValueError: a line is not JSON, or was measured with other settings (the setting is named).
        """
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as handle:
            data = handle.read()
        *lines, tail = data.split(b"\n")
        if tail:  # A run killed mid-write; cut the partial line so that the next append starts clean.
            logging.warning("Dropping a truncated last line of the measurement cache %s: %r", self.path, tail[:80])
            os.truncate(self.path, len(data) - len(tail))
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"Invalid measurement cache {self.path!r}: line {number} is not JSON ({error})."
                ) from error
            self._check(record)
            records.append(record)
        return records

    def _check(self, record: dict) -> None:
        for key, value in self.settings.items():
            cached = record.get("settings", {}).get(key)
            if cached != value:
                raise ValueError(
                    f"Invalid value for argument `{key}`. Expected {key}={cached!r} as in the measurement cache "
                    f"{self.path!r} (or another output directory). Received: {key}={value!r}"
                )

    def append(self, record: dict) -> None:
        """Appends one record. A killed process loses nothing (the line is written before returning);
        against a crash of the machine the file is fsync'ed at most once a second."""
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"settings": self.settings, **record}) + "\n")
            handle.flush()
            if time.monotonic() - self._synced > 1.0:
                os.fsync(handle.fileno())
                self._synced = time.monotonic()


def run_rounds(
    phase: str,
    items: Sequence[Item],
    device: Device,
    cache: MeasurementCache,
    rounds: int = 3,
    warmup_runs: int = 3,
    runs: int = 10,
    anchors: Sequence[str] = (),
    anchor_every: int = 20,
    first: Sequence[str] = (),
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = print,
) -> list[dict]:
    """Times every visit of `schedule(...)` not yet in the cache; returns the phase's records.

    A record: `{"phase", "round", "key", "kind", "occurrence", "min", "median", "mean",
    "prepare_seconds", "timing_seconds", "load_1m" (the host's load average, when the device
    reports one), "date", "provenance"}`.
    """
    by_key = {item.key: item for item in items}
    done = {(r["round"], r["key"], r["occurrence"]): r for r in cache.read() if r["phase"] == phase}
    visits = schedule(
        phase, [item.key for item in items if item.key not in first], rounds, anchors, anchor_every, seed, first
    )
    todo = [visit for visit in visits if visit not in done]
    for count, (round_index, key, occurrence) in enumerate(todo, 1):
        start = time.perf_counter()
        prepared = device.prepare(by_key[key])
        middle = time.perf_counter()
        result = device.time(prepared, warmup_runs, runs)
        record = {
            "phase": phase,
            "round": round_index,
            "key": key,
            "kind": by_key[key].kind,
            "occurrence": occurrence,
            **{name: result.get(name) for name in STATISTICS},
            "prepare_seconds": middle - start,
            "timing_seconds": time.perf_counter() - middle,
            "load_1m": result.get("provenance", {}).get("device", {}).get("load_average_1m"),
            "date": time.time(),
            "provenance": result.get("provenance", {}),
        }
        cache.append(record)
        done[(round_index, key, occurrence)] = record
        if progress and (count == len(todo) or count % max(1, len(todo) // 20) == 0):
            progress(f"[{phase} {count}/{len(todo)}] round {round_index} {key[:70]}  median={record['median']:.4f} ms")
    return [done[visit] for visit in visits]


def _value(record: dict, statistic: str) -> float:
    value = record.get(statistic)
    if value is None:
        recorded = [name for name in STATISTICS if record.get(name) is not None]
        raise ValueError(
            f"Invalid value for argument `statistic`. Expected one that the target recorded: "
            f"{recorded}. Received: statistic={statistic!r}"
        )
    return float(value)


def round_values(records: Sequence[dict], statistic: str) -> dict[str, dict[int, float]]:
    """`{key: {round: value}}`: per round, the median of the key's visits (anchors have several)."""
    visits: dict[str, dict[int, list]] = {}
    for record in records:
        visits.setdefault(record["key"], {}).setdefault(record["round"], []).append(_value(record, statistic))
    return {key: {r: float(np.median(values)) for r, values in rounds.items()} for key, rounds in visits.items()}


def disturbed_rounds(
    records: Sequence[dict], statistic: str, max_shift_percent: float, exclude: Sequence[str] = ()
) -> dict[int, float]:
    """Rounds that ran apart from the others as a whole: `{round: shift %}`.

    A round's shift is the median over items of (its value / the item's median over rounds) - 1:
    a round that other work slowed (a job started and stopped in between) shifts every item the
    same way, which idle jitter does not (idle rounds here shift by <= 2 %). Rounds shifted by
    more than `max_shift_percent` are returned; none with fewer than 3 rounds, or when they would
    be half of the rounds or more (then the rounds have no majority to be compared with).
    """
    per_round = {key: rounds for key, rounds in round_values(records, statistic).items() if key not in exclude}
    rounds = sorted({r for values in per_round.values() for r in values})
    if len(rounds) < 3:
        return {}
    ratios: dict[int, list] = {r: [] for r in rounds}
    for values in per_round.values():
        if len(values) == len(rounds):
            centre = float(np.median(list(values.values())))
            for r, value in values.items():
                ratios[r].append(value / centre)
    shifts = {r: 100 * (float(np.median(found)) - 1) for r, found in ratios.items() if found}
    disturbed = {r: shift for r, shift in shifts.items() if abs(shift) > max_shift_percent}
    return disturbed if 2 * len(disturbed) < len(rounds) else {}


def item_values(records: Sequence[dict], statistic: str) -> dict[str, float]:
    """`{key: median over rounds}` of `round_values`."""
    return {key: float(np.median(list(rounds.values()))) for key, rounds in round_values(records, statistic).items()}


def noise_floor(records: Sequence[dict], statistic: str, exclude: Sequence[str] = ()) -> dict:
    """How well the rounds agree with each other, and what that means for the final values.

    `round_to_round`: for every pair of rounds, Spearman and MAPE (of the second) between the
    values of the items measured in both; `mean` over the pairs and the `worst` pair.
    `final_noise_percent`: if one round's relative error has standard deviation s, two rounds
    differ by 2 s / sqrt(pi) on average, and the median of R rounds is off by about
    1.25 s / sqrt(R) (normal errors), i.e. by sqrt(2/pi) · 1.25 s / sqrt(R) ~ s / sqrt(R) on
    average; so it is `sqrt(pi) / 2 · round MAPE / sqrt(R)`.
    `spread_percent`: quartiles over items of (max - min) / median of their round values.
    `anchors`: coefficient of variation (%) and max / min of every anchor visit (drift).
    """
    per_round = {key: rounds for key, rounds in round_values(records, statistic).items() if key not in exclude}
    rounds = sorted({r for values in per_round.values() for r in values})
    pairs = []
    for first_index, first in enumerate(rounds):
        for second in rounds[first_index + 1 :]:
            keys = [key for key, values in per_round.items() if first in values and second in values]
            if len(keys) >= 2:
                a = np.asarray([per_round[key][first] for key in keys])
                b = np.asarray([per_round[key][second] for key in keys])
                pairs.append(
                    {
                        "rounds": [first, second],
                        "count": len(keys),
                        "spearman": spearman(a, b),
                        "mape_percent": float(100 * np.mean(np.abs(a - b) / b)),
                    }
                )
    spreads = [100 * np.ptp(list(v.values())) / np.median(list(v.values())) for v in per_round.values() if len(v) > 1]
    visits: dict[str, list] = {}
    for record in records:
        if record["key"] not in exclude:
            visits.setdefault(record["key"], []).append(_value(record, statistic))
    anchors = {
        key: {
            "visits": len(values),
            "cv_percent": float(100 * np.std(values) / np.mean(values)),
            "max_over_min": float(max(values) / min(values)),
        }
        for key, values in visits.items()
        if len(values) > len(rounds)
    }
    result = {
        "num_rounds": len(rounds),
        "num_items": len(per_round),
        "round_pairs": pairs,
        "anchors": anchors,
        "spread_percent": [float(q) for q in np.percentile(spreads, [25, 50, 75])] if spreads else None,
    }
    if pairs:
        mape = float(np.mean([pair["mape_percent"] for pair in pairs]))
        result["round_to_round"] = {
            "mean": {"spearman": float(np.mean([p["spearman"] for p in pairs])), "mape_percent": mape},
            "worst": {
                "spearman": float(min(p["spearman"] for p in pairs)),
                "mape_percent": float(max(p["mape_percent"] for p in pairs)),
            },
        }
        result["final_noise_percent"] = float(math.sqrt(math.pi) / 2 * mape / math.sqrt(len(rounds)))
    return result


def measurement_seconds(records: Sequence[dict]) -> dict:
    """Seconds spent preparing (exporting) and timing, summed over the records, and the wall span."""
    if not records:
        return {"prepare": 0.0, "timing": 0.0, "total": 0.0}
    prepare = float(sum(record["prepare_seconds"] for record in records))
    timing = float(sum(record["timing_seconds"] for record in records))
    return {"prepare": prepare, "timing": timing, "total": prepare + timing}
