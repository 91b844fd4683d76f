"""PNG plots for reports (matplotlib imported lazily, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOTS_EXTRA = "pip install 'deploykit[plots]'"


def require_plots() -> None:
    """matplotlib (the `plots` extra) is installed, or BadInput (exit 2) naming the extra; checked
    before a report writes anything."""
    from ..errors import BadInput

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BadInput("the report's plots need matplotlib, which is not installed", hint=PLOTS_EXTRA) from None


def _plt() -> Any:
    require_plots()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(v: float | None) -> float:
    """A metric for plotting: None (no successful request at that level) becomes a gap (NaN)."""
    return float("nan") if v is None else float(v)


def _save(plt: Any, fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(levels: list[dict], out_dir: Path) -> list[Path]:
    """levels: bench results (config + metrics + records), one per concurrency level."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    levels = sorted(levels, key=lambda r: r["config"].get("concurrency") or 0)
    xs = [r["config"].get("concurrency") or 0 for r in levels]
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for metric in ("ttft", "tpot", "e2el"):
        for p, style in (("median", "-o"), ("p99", "--x")):
            ax.plot(xs, [_num(r["metrics"][f"{p}_{metric}_ms"]) for r in levels], style, label=f"{p} {metric}")
    ax.set_yscale("log")
    paths.append(_save(plt, fig, ax, out_dir / "latency_vs_concurrency.png",
                       "Latency percentiles vs concurrency", "concurrency", "ms"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["metrics"]["output_throughput"] for r in levels], "-o", label="output tok/s")
    ax.plot(xs, [r["metrics"]["total_token_throughput"] for r in levels], "-s", label="total tok/s")
    paths.append(_save(plt, fig, ax, out_dir / "throughput_vs_concurrency.png",
                       "Throughput vs concurrency", "concurrency", "tokens/s"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for r, x in zip(levels, xs, strict=True):
        vals = [rec["ttft"] * 1000 for rec in r["records"] if rec["success"]]
        if vals:
            ax.hist(vals, bins=30, alpha=0.5, label=f"c={x}")
    paths.append(_save(plt, fig, ax, out_dir / "ttft_distribution.png", "TTFT distribution", "TTFT (ms)",
                       "requests"))
    return paths
