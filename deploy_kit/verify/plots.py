"""PNG plots for reports (matplotlib imported lazily, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
            ax.plot(xs, [r["metrics"][f"{p}_{metric}_ms"] for r in levels], style, label=f"{p} {metric}")
    ax.set_xlabel("concurrency"); ax.set_ylabel("ms"); ax.set_yscale("log"); ax.legend(fontsize=7)
    ax.set_title("Latency percentiles vs concurrency")
    paths.append(out_dir / "latency_vs_concurrency.png"); fig.tight_layout(); fig.savefig(paths[-1]); plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["metrics"]["output_throughput"] for r in levels], "-o", label="output tok/s")
    ax.plot(xs, [r["metrics"]["total_token_throughput"] for r in levels], "-s", label="total tok/s")
    ax.set_xlabel("concurrency"); ax.set_ylabel("tokens/s"); ax.legend()
    ax.set_title("Throughput vs concurrency")
    paths.append(out_dir / "throughput_vs_concurrency.png"); fig.tight_layout(); fig.savefig(paths[-1]); plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r, x in zip(levels, xs):
        vals = [rec["ttft"] * 1000 for rec in r["records"] if rec["success"]]
        if vals:
            ax.hist(vals, bins=30, alpha=0.5, label=f"c={x}")
    ax.set_xlabel("TTFT (ms)"); ax.set_ylabel("requests"); ax.legend()
    ax.set_title("TTFT distribution")
    paths.append(out_dir / "ttft_distribution.png"); fig.tight_layout(); fig.savefig(paths[-1]); plt.close(fig)
    return paths
