"""Summaries, the printed table, latest.json and the ratio chart."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.workloads import Metric, Sample

SEARCH_P99_TARGET_MS = 20.0
RSS_RATIO_TARGET = 3.0


@dataclass
class Stats:
    median: float
    low: float
    high: float
    samples: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Stats | None:
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), values)


@dataclass
class Row:
    key: str
    title: str
    unit: str
    dockyard: Stats | None
    reference: Stats | None
    ratio: float | None  # dockyard / reference as throughput (or memory for RSS)
    target: str  # human form, e.g. ">= 1.5x"
    target_ratio: float | None  # where the chart draws the target tick
    passed: bool | None  # None: informational, or not measurable in this run


def _ratio(a: Stats | None, b: Stats | None) -> float | None:
    if a is None or b is None or b.median == 0:
        return None
    return a.median / b.median


def build_rows(
    metrics: list[Metric],
    samples: dict[str, dict[str, list[Sample]]],
    search: list[Sample],
    rss_mib: dict[str, float],
) -> list[Row]:
    rows: list[Row] = []
    for m in metrics:
        per_side = samples.get(m.key, {})
        d = Stats.of([s.value for s in per_side.get("dockyard", [])])
        r = Stats.of([s.value for s in per_side.get("reference", [])])
        ratio = _ratio(d, r)
        passed = None if m.target is None or ratio is None else ratio >= m.target
        rows.append(
            Row(
                m.key,
                m.title,
                m.unit,
                d,
                r,
                ratio,
                f">= {m.target:g}x" if m.target else "-",
                m.target,
                passed,
            )
        )
    s = Stats.of([x.value for x in search])
    rows.append(
        Row(
            "search_p99",
            "search p99, 16 clients (dockyard only)",
            "ms",
            s,
            None,
            None,
            f"< {SEARCH_P99_TARGET_MS:g} ms",
            None,
            None if s is None else s.median < SEARCH_P99_TARGET_MS,
        )
    )
    d_rss, r_rss = Stats.of([rss_mib["dockyard"]]), Stats.of([rss_mib["reference"]])
    rss_ratio = _ratio(d_rss, r_rss)
    rows.append(
        Row(
            "peak_rss",
            "peak RSS, all processes (lower is better)",
            "MiB",
            d_rss,
            r_rss,
            rss_ratio,
            f"<= {RSS_RATIO_TARGET:g}x",
            RSS_RATIO_TARGET,
            None if rss_ratio is None else rss_ratio <= RSS_RATIO_TARGET,
        )
    )
    return rows


SEARCH_WRK_P99_TARGET_MS = 10.0
SEARCH_WRK_RATE_TARGET = 1000.0


def search_wrk_rows(samples: dict[str, list[Sample]], settings: Any) -> list[Row]:
    paced = Stats.of([s.value for s in samples.get("search_paced_p99", [])])
    closed = Stats.of([s.value for s in samples.get("search_closed_rate", [])])
    clients = settings.search_wrk_clients
    return [
        Row("search_paced_p99", f"search p99, {settings.search_wrk_rate:g} q/s offered over "
            f"{clients} connections (wrk, dockyard only)", "ms", paced, None, None,
            f"< {SEARCH_WRK_P99_TARGET_MS:g} ms", None,
            None if paced is None else paced.median < SEARCH_WRK_P99_TARGET_MS),
        Row("search_closed_rate", f"search, {clients} connections closed loop (wrk, "
            "dockyard only)", "q/s", closed, None, None, f">= {SEARCH_WRK_RATE_TARGET:g}",
            None, None if closed is None else closed.median >= SEARCH_WRK_RATE_TARGET),
    ]


def _num(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cell(s: Stats | None) -> str:
    if s is None:
        return "-"
    if len(s.samples) == 1:
        return _num(s.median)
    return f"{_num(s.median)} ({_num(s.low)}-{_num(s.high)})"


def format_table(rows: list[Row], dockyard_label: str) -> str:
    head = [
        "workload",
        "unit",
        f"{dockyard_label} median (min-max)",
        "reference median (min-max)",
        "ratio",
        "target",
        "result",
    ]
    body = [
        [
            r.title,
            r.unit,
            _cell(r.dockyard),
            _cell(r.reference),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            {True: "PASS", False: "FAIL", None: "-"}[r.passed],
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*line) for line in body]
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def draw_chart(rows: list[Row], path: Path, subtitle: str, dockyard_label: str) -> None:
    """Horizontal bars of dockyard/reference ratios, target marked per bar."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.ratio is not None]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(shown) + 1.8))
    ys = list(range(len(shown)))[::-1]
    colors = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
    ratios = [r.ratio or 1.0 for r in shown]
    # Log scale, bars grow from 1.0: 2x better and 2x worse look the same size.
    ax.set_xscale("log")
    ax.barh(
        ys, [x - 1.0 for x in ratios], left=1.0, color=[colors[r.passed] for r in shown], height=0.6
    )
    for y, r, x in zip(ys, shown, ratios, strict=True):
        ax.text(max(x, 1.0) * 1.04, y, f"{x:.2f}x", va="center", fontsize=8)
        if r.target_ratio is not None:
            ax.plot([r.target_ratio] * 2, [y - 0.35, y + 0.35], color="black", lw=2)
    lo = min([*ratios, 0.5]) / 1.5
    hi = max([*ratios, 3.0]) * 1.6
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100) if lo <= t <= hi]
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.axvline(1.0, color="#555", lw=0.8, ls="--")
    for r in rows:
        if r.key == "search_p99" and r.dockyard is not None:
            verdict = "PASS" if r.passed else "FAIL"
            ax.text(
                0.99,
                0.01,
                f"search p99 ({dockyard_label} only): {r.dockyard.median:.1f} ms, "
                f"target {r.target}: {verdict}",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=9,
                color=colors[r.passed],
            )
    ax.set_yticks(ys, [r.title for r in shown], fontsize=8)
    ax.set_xlabel(
        f"{dockyard_label} / reference  (throughput: higher is better; RSS: lower is better)  "
        "| black tick = target"
    )
    ax.set_title(
        f"{dockyard_label} vs reference registry (distribution 2.8.2)\n{subtitle}", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
