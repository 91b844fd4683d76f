"""Per-request records -> aggregate metrics keyed like `vllm bench serve` (benchmarks/serve.py).

Definitions follow vLLM: TTFT = time to the first content chunk; TPOT = (latency - TTFT) /
(output_tokens - 1) per request (requests with 1 output token are left out); ITL = gaps between
successive content chunks; E2EL = request latency. Token counts come from the server's usage
field when present (stream_options.include_usage), else from the number of content chunks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadInput

NUMPY_HINT = "numpy is part of deploykit's core install: pip install 'numpy>=1.24'"


def require_numpy() -> Any:
    """numpy (imported here, lazily: `deploykit --help` must not load it), or BadInput (exit 2)."""
    try:
        import numpy
    except ImportError:
        raise BadInput("bench statistics need numpy, which is not installed", hint=NUMPY_HINT) from None
    return numpy


@dataclass
class RequestRecord:
    index: int
    prompt_len: int = 0              # tokens (usage.prompt_tokens when known)
    output_len: int = 0              # tokens (usage.completion_tokens when known)
    success: bool = False
    error: str = ""
    start: float = 0.0               # perf_counter seconds
    ttft: float = 0.0                # s
    latency: float = 0.0             # s
    itl: list[float] = field(default_factory=list)  # s, one per chunk after the first
    text: str = ""
    usage_from_server: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _stats(name: str, values_s: list[float], percentiles: list[float]) -> dict[str, float | None]:
    """mean/median/std/percentiles in ms; None for every key when there is no value (all requests
    failed): a 0 there would read as a measurement."""
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"] + \
        [f"p{int(p) if float(p).is_integer() else p}_{name}_ms" for p in percentiles]
    if not values_s:
        return dict.fromkeys(keys)
    np = require_numpy()   # np.percentile: the interpolation vLLM uses
    arr = np.asarray(values_s, dtype=float) * 1000.0
    vals = [arr.mean(), np.median(arr), arr.std()] + [np.percentile(arr, p) for p in percentiles]
    return {k: float(v) for k, v in zip(keys, vals, strict=True)}


def aggregate(
    records: list[RequestRecord],
    duration: float,
    *,
    percentiles: tuple[float, ...] = (50, 90, 99),
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
) -> dict:
    """Aggregate like vllm's calculate_metrics; goodput counts requests meeting every given SLO.

    Only successful requests (a proper end of stream) enter the latency and token statistics;
    the others are counted in `failed`, with each distinct reason and its count in `error_counts`.
    """
    ok = [r for r in records if r.success]
    ttfts = [r.ttft for r in ok]
    tpots = [(r.latency - r.ttft) / (r.output_len - 1) for r in ok if r.output_len > 1]
    itls = [x for r in ok for x in r.itl]
    e2el = [r.latency for r in ok]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_len for r in ok)
    dur = max(duration, 1e-9)
    good = 0
    for r in ok:
        tpot = (r.latency - r.ttft) / (r.output_len - 1) if r.output_len > 1 else 0.0
        if slo_ttft_ms is not None and r.ttft * 1000 > slo_ttft_ms:
            continue
        if slo_tpot_ms is not None and tpot * 1000 > slo_tpot_ms:
            continue
        good += 1
    m: dict = {
        "duration": duration,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / dur,
        "request_goodput": (good / dur) if (slo_ttft_ms is not None or slo_tpot_ms is not None) else None,
        "output_throughput": total_out / dur,
        "total_token_throughput": (total_in + total_out) / dur,
    }
    for name, vals in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2el)):
        m.update(_stats(name, vals, list(percentiles)))
    counts = Counter(r.error or "unknown" for r in records if not r.success)
    m["errors"] = sorted(counts)[:20]
    m["error_counts"] = dict(counts.most_common(20))
    return m
