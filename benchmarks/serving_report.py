"""Tables and the plot for bench_serving.py's JSON report (also usable alone:
`python benchmarks/serving_report.py benchmarks/results/serving.json docs/serving.png`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}" if value < 10 else f"{value:.0f}{unit}"


def _ms(seconds: float | None) -> str:
    return _fmt(None if seconds is None else 1000 * seconds, " ms")


def table(report: dict[str, Any]) -> str:
    """A Markdown table: one row per system and point."""
    rows = [
        "| system | streams | tokens | tok/s | TTFT p50 / p95 | ITL p50 / p95 | errors | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, system in report["systems"].items():
        if "skipped" in system:
            rows.append(f"| {name} | skipped: {system['skipped']} |||||||")
            continue
        for p in system["points"]:
            head = f"| {name} | {p['concurrency']} | {p['tokens']} "
            if "skipped" in p:
                rows.append(head + f"| skipped ({p['skipped']}) |||||")
                continue
            rss = p.get("peak_rss_mb")
            ttft = f"{_fmt(p['ttft_p50_s'], ' s')} / {_fmt(p['ttft_p95_s'], ' s')}"
            itl = f"{_ms(p['itl_p50_s'])} / {_ms(p['itl_p95_s'])}"
            memory = "-" if rss is None else f"{rss:.0f} MB"
            rows.append(head + f"| {p['tokens_per_s']:.1f} | {ttft} | {itl} | {p['errors']} | {memory} |")
    return "\n".join(rows)


def plot(report: dict[str, Any], target: Path) -> None:
    """Aggregate tokens/s and TTFT p50 against concurrency, one column per completion length."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    lengths = sorted({p["tokens"] for s in report["systems"].values() for p in s.get("points", [])})
    fig, axes = plt.subplots(2, len(lengths), figsize=(6 * len(lengths), 8), squeeze=False)
    for col, tokens in enumerate(lengths):
        for name, system in report["systems"].items():
            points = [p for p in system.get("points", []) if p["tokens"] == tokens and "skipped" not in p]
            if not points:
                continue
            xs = [p["concurrency"] for p in points]
            axes[0][col].plot(xs, [p["tokens_per_s"] for p in points], marker="o", label=name)
            axes[1][col].plot(xs, [p["ttft_p50_s"] for p in points], marker="o", label=name)
        axes[0][col].set_title(f"{tokens}-token completions: aggregate tokens/s")
        axes[1][col].set_title(f"{tokens}-token completions: TTFT p50 (s)")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xlabel("concurrent streams")
            axes[row][col].grid(True, alpha=0.3)
        axes[1][col].set_yscale("log")
    axes[0][0].legend()
    fig.suptitle(f"{report['model']}\n{report['cpus']} CPU cores, {report['date']}", fontsize=10)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=80)
    print(f"plot: {target}", file=sys.stderr)


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    print(table(data))
    plot(data, Path(sys.argv[2]))
