"""Draw the benchmark's figures for the documentation from the raw figures of a run.

Usage::

    python benchmarks/charts.py [RESULTS_JSON] [--output DIR]

Reads ``benchmarks/results/latest.json`` (written by ``run.py``) and writes SVG figures to
``docs/_static/bench/``: acquisitions per second against the number of processes, lock
handoff latency percentiles, and the cost of one forced refresh; msal-persist beside
msal-extensions, the documented recipe and in-memory msal. ``nox -s bench`` runs it
after ``run.py``; the documentation shows the figures last committed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE / "results" / "latest.json"
DEFAULT_OUTPUT = HERE.parent / "docs" / "_static" / "bench"
ORDER = ("memory", "recipe", "msal-extensions", "msal-persist")
LABELS = {
    "memory": "in-memory msal (persists nothing)",
    "recipe": "documented recipe",
    "msal-extensions": "msal-extensions",
    "msal-persist": "msal-persist",
}
COLOURS = {
    "memory": "#9e9e9e",
    "recipe": "#c49a6c",
    "msal-extensions": "#d1495b",
    "msal-persist": "#00798c",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(q / 100 * len(ordered) + 0.999999) - 1))
    return ordered[rank]


def throughput(results: dict[str, Any], output: Path) -> Path:
    contention = results["contention"]
    processes = sorted(int(p) for p in contention)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind in ORDER:
        rates = [statistics.median(r["rate"] for r in contention[str(p)][kind]) for p in processes]
        ax.plot(processes, rates, marker="o", label=LABELS[kind], color=COLOURS[kind])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(processes, [str(p) for p in processes])
    ax.set_xlabel("processes, each forcing 20 refreshes on one shared cache")
    ax.set_ylabel("acquisitions per second (log)")
    ax.set_title("Throughput under contention (higher is better)")
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, output / "throughput.svg")


def handoff(results: dict[str, Any], output: Path) -> Path:
    runs = results["handoff"]
    kinds = [k for k in ORDER if k in runs]
    marks = (("p50", 50), ("p99", 99), ("max", 100))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / len(kinds)
    for index, kind in enumerate(kinds):
        latencies = [lat for run in runs[kind] for lat in run["latencies"]]
        values = [percentile(latencies, q) * 1e3 for _, q in marks]
        positions = [m + (index - (len(kinds) - 1) / 2) * width for m in range(len(marks))]
        ax.bar(positions, values, width, label=LABELS[kind], color=COLOURS[kind])
    ax.set_xticks(range(len(marks)), [name for name, _ in marks])
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds per acquisition (log)")
    ax.set_title("Lock handoff: 8 processes x 25 forced refreshes (lower is better)")
    ax.grid(visible=True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, output / "handoff.svg")


def refresh(results: dict[str, Any], output: Path) -> Path:
    write = results["write"]
    sizes = (("small", "1 account"), ("large", "2,000 accounts"))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, (size, title) in zip(axes, sizes, strict=True):
        values = [write[size][kind] * 1e3 for kind in ORDER]
        ax.barh([LABELS[k] for k in ORDER], values, color=[COLOURS[k] for k in ORDER])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
        ax.set_title(f"forced refresh, {title}")
        ax.set_xlabel("milliseconds (log)")
        ax.invert_yaxis()
        ax.grid(visible=True, axis="x", which="both", alpha=0.3)
    axes[1].set_yticks([])
    fig.suptitle("One acquire_token_silent(force_refresh=True) (lower is better)")
    return _save(fig, output / "refresh.svg")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # No date in the file, so a re-run with the same figures changes nothing.
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    results = json.loads(args.results.read_text(encoding="utf-8"))["results"]
    args.output.mkdir(parents=True, exist_ok=True)
    for draw in (throughput, handoff, refresh):
        print(f"wrote {draw(results, args.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
