"""bench against the mock streaming server: exact metric arithmetic, failures, bad input."""

from __future__ import annotations

from statistics import median

import pytest

from deploy_kit.errors import BadInput, RuntimeFailure
from deploy_kit.verify.bench import BenchConfig, arrival_delays, make_prompts, run_bench
from deploy_kit.verify.metrics import RequestRecord, aggregate
from tests.mock_openai import MockConfig, MockProcess, MockServer

pytestmark = pytest.mark.integration

TTFT, ITL, NOUT = 0.100, 0.020, 11
# At c=64 the per-token delay is 50 ms: 64 streams x 50 chunks/s (ITL 20 ms) is 3200 chunks/s,
# which saturates a Python client and the Python mock sharing 2 cores (first-chunk delivery p90
# ~10 ms, median ~1 ms, measured); at 1280 chunks/s the median is ~0.4 ms, p90 ~4 ms.
ITL_64 = 0.050


def _run(ttft, concurrency, api="completions", n=None, itl=ITL):
    """One bench run against the mock in its own process (so it does not share the client's GIL).
    At concurrency 64 arrivals are paced (400 req/s, near-constant gaps) so 64 streams are in
    flight without the client serialising 64 request sends into the first chunk's timing.
    Returns the bench result and the server's own log of what it sent when."""
    rate = float("inf") if concurrency == 1 else 400.0
    with MockProcess(MockConfig(ttft_s=ttft, itl_s=itl)) as srv:
        res = run_bench(BenchConfig(url=srv.url, model="mock-model", api=api, input_len=8,
                                    output_len=NOUT, num_prompts=n or max(16, 2 * concurrency),
                                    concurrency=concurrency, request_rate=rate, burstiness=1000.0,
                                    warmup=2))
        return res, srv.server_log()


def _max_in_flight(records):
    ev = sorted([(r["start"], 1) for r in records] + [(r["start"] + r["latency"], -1) for r in records])
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def _match(records, log):
    """Pair each client record with the server's log entry of the same request: same prompt, the
    first one read after the client started it (prompts repeat every 36 requests, ~90 ms apart)."""
    prompts = make_prompts(len(records), 8)
    pairs = []
    for r in records:
        cands = [e for e in log if e["prompt"] == prompts[r["index"]][0] and e["t_read"] >= r["start"]]
        pairs.append((r, min(cands, key=lambda e: e["t_read"])))
    return pairs


def test_client_and_server_share_a_clock():
    # the comparison below needs perf_counter to be CLOCK_MONOTONIC in both processes
    import time

    assert "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation


def _timing_misses(pairs, m, itl, concurrency) -> list[str]:
    """Timing bounds (one clock, client vs server). TTFT = request path (client sends, server
    reads) + server TTFT + first-chunk delivery. The metric arithmetic (first *content* chunk,
    timestamps taken as bytes arrive) shows in the delivery term and in TPOT/ITL.
    Measured medians (2-core host shared by 8 sessions, load 12, aiohttp client with its pool
    opened before the clock): first-chunk delivery 0.3 ms at c=1, 1.1-8.4 ms at c=64 (a first
    chunk waits behind other streams' chunks in the client's event loop; 0.3-1.0 ms when quiet);
    request path 1.5-1.8 ms at c=1, 3-6.5 ms at c=64 (5-25 ms before connections were pooled);
    |TPOT gap| 0.007-0.023 ms; the mock's own TPOT within 0.08 ms of the known delay. Bounds:
    delivery 1 / 5 ms, request path 5 / 20 ms, TPOT and ITL gaps 0.5 ms, the mock 1 ms; the timing
    bounds get 3 tries (the loaded-host c=64 delivery runs over 5 ms in some)."""
    deliver_ms = [1000 * (r["start"] + r["ttft"] - e["sent"][0]) for r, e in pairs]
    request_ms = [1000 * (e["t_read"] - r["start"]) for r, e in pairs]
    tpot_gap_ms = [1000 * ((r["latency"] - r["ttft"]) - (e["sent"][-1] - e["sent"][0])) / (NOUT - 1)
                   for r, e in pairs]
    itl_gap_ms = [1000 * (c - (b - a)) for r, e in pairs
                  for c, a, b in zip(r["itl"], e["sent"], e["sent"][1:], strict=False)]
    srv_tpot = median([(e["sent"][-1] - e["sent"][0]) / (NOUT - 1) for _, e in pairs]) * 1000
    checks = {
        "first-chunk delivery median bound": median(deliver_ms) < (1.0 if concurrency == 1 else 5.0),
        "request path median bound": median(request_ms) < (5.0 if concurrency == 1 else 20.0),
        "|median TPOT gap client - server| < 0.5 ms": abs(median(tpot_gap_ms)) < 0.5,
        "|ITL client - server| median < 0.5 ms": abs(median(itl_gap_ms)) < 0.5,
        "median_tpot_ms vs server within 0.5 ms": abs(m["median_tpot_ms"] - srv_tpot) < 0.5,
        "mock applied the known delay (1 ms)": abs(srv_tpot - itl * 1000) < 1.0,
    }
    return [f"{k}: deliver {median(deliver_ms):.2f} request {median(request_ms):.2f} "
            f"tpot {median(tpot_gap_ms):.2f} itl {median(itl_gap_ms):.2f}"
            for k, ok in checks.items() if not ok]


@pytest.mark.parametrize("concurrency", [1, 64])
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_metrics_match_known_delays(concurrency, api):
    # Ground truth is the server's own clock: when it read each request and wrote each chunk.
    # A shared 2-core host makes the mock's sleeps late by ms under load, and a zero-delay
    # baseline run does not subtract that out at c=64 (its own queueing differs), so the
    # client's numbers are compared with what the server really did, request by request.
    itl = ITL if concurrency == 1 else ITL_64
    misses: list[str] = []
    for _attempt in range(3):   # the timing bounds get 3 tries on a shared box; invariants, every try
        res, log = _run(TTFT, concurrency, api, itl=itl)
        m = res["metrics"]
        recs = res["records"]
        assert m["completed"] == len(recs) and m["failed"] == 0
        assert m["total_output_tokens"] == NOUT * m["completed"]   # from usage
        assert all(len(r["itl"]) == NOUT - 1 for r in recs)
        # the semaphore caps in-flight requests; pacing must get (nearly) all of them in flight
        assert 0.9 * concurrency <= _max_in_flight(recs) <= concurrency
        pairs = _match(recs, log)
        for r, e in pairs:
            assert len(e["sent"]) == NOUT
            # causality on one clock: start <= server read; first chunk sent <= received
            assert r["start"] <= e["t_read"] and e["sent"][0] <= r["start"] + r["ttft"]
            assert e["sent"][0] - e["t_read"] >= TTFT        # the mock never sends early
            assert r["ttft"] >= e["sent"][0] - e["t_read"]   # so TTFT never under-reports
        assert m["median_ttft_ms"] >= TTFT * 1000
        misses = _timing_misses(pairs, m, itl, concurrency)
        if not misses:
            break
    assert not misses, misses
    for key in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "p90_tpot_ms", "request_throughput",
                "output_throughput", "total_token_throughput", "duration", "completed", "failed",
                "mean_e2el_ms", "std_itl_ms"):
        assert key in m


# Failed streams (HTTP error, error event, dropped connection, no content, no proper end, malformed
# chunks, servers that never end) are tests/test_bench_hostile.py, each with its exact reason.


def test_unreachable_url_is_runtime_failure():
    with pytest.raises(RuntimeFailure) as exc:
        run_bench(BenchConfig(url="http://127.0.0.1:9", model="x"))
    assert exc.value.exit_code == 4
    assert exc.value.one_line().startswith("cannot reach http://127.0.0.1:9/v1/models: ConnectError")


def test_unknown_model_is_bad_input():
    with MockServer() as srv, pytest.raises(BadInput) as exc:
        run_bench(BenchConfig(url=srv.url, model="nope"))
    assert exc.value.one_line() == f"model: model 'nope' is not served by {srv.url} (served: mock-model)"


def test_goodput_and_tpot_definition():
    recs = [RequestRecord(index=0, output_len=11, success=True, ttft=0.5, latency=1.5, prompt_len=3),
            RequestRecord(index=1, output_len=11, success=True, ttft=3.0, latency=4.0, prompt_len=3),
            RequestRecord(index=2, success=False, error="boom")]
    m = aggregate(recs, 2.0, slo_ttft_ms=2000, slo_tpot_ms=100)
    assert m["mean_tpot_ms"] == pytest.approx(100.0)
    assert m["request_goodput"] == pytest.approx(0.5)   # only request 0 meets TTFT <= 2 s
    assert m["failed"] == 1 and m["errors"] == ["boom"]
    assert m["output_throughput"] == pytest.approx(11.0)


def test_poisson_arrivals_mean_rate():
    d = arrival_delays(4000, rate=4.0, burstiness=1.0, seed=1)
    assert sum(d) / len(d) == pytest.approx(0.25, rel=0.05)
    assert arrival_delays(3, float("inf"), 1.0, 0) == [0.0, 0.0, 0.0]


def test_fallback_prompts_have_requested_word_count():
    ps = make_prompts(3, 50)
    assert all(len(p.split()) == 50 and n == 50 for p, n in ps)


def test_tokenizer_prompts_have_exact_length(demo_weights):
    from deploy_kit.verify.bench import load_tokenizer

    d = demo_weights
    tok = load_tokenizer(d)
    ps = make_prompts(4, 256, tokenizer=tok)
    assert [n for _, n in ps] == [256] * 4 and len({p for p, _ in ps}) == 4
    assert load_tokenizer("/nonexistent") is None
