"""bench against misbehaving servers (issue 13): bounded in time and memory, honest counting.

Every probe runs the real client against tests/mock_openai.py in one of its misbehaving modes.
Time bounds are a few times the value measured on the shared 2-core host (noted beside each).
"""

from __future__ import annotations

import resource
import time

import pytest

from deploy_kit.errors import RuntimeFailure
from deploy_kit.verify.bench import CUT_REASON, BenchConfig, run_bench
from tests.mock_openai import MockConfig, MockServer

pytestmark = pytest.mark.integration


def _bench(mode: str, **kw) -> tuple[dict, float]:
    """One run against the mock in `mode`: 3 prompts, concurrency 3, no warm-up unless given."""
    opts = {"output_len": 5, "num_prompts": 3, "concurrency": 3, "warmup": 0, "max_duration_s": 10.0,
            "read_timeout_s": 10.0, "connect_timeout_s": 2.0, **kw}
    with MockServer(MockConfig(ttft_s=0.001, itl_s=0.001, error=mode)) as srv:
        t0 = time.monotonic()
        res = run_bench(BenchConfig(url=srv.url, model="mock-model", **opts))
        return res, time.monotonic() - t0


def test_keepalive_only_server_is_cut_at_max_duration():
    # the server sends ": keep-alive" every 20 ms forever: no read timeout ever fires, only the
    # total deadline ends the run (measured 1.01 s for max_duration 1 s on a quiet host). 3 s, not
    # 1 s: under a vLLM start on the other xdist worker, resolving the model and opening the pool
    # once took over 1 s, so nothing was sent before the deadline (CI, not_sent == 3)
    res, took = _bench("keepalive", max_duration_s=3.0)
    m = res["metrics"]
    assert 3.0 <= took < 5.0
    assert (m["completed"], m["failed"], m["not_sent"]) == (0, 3, 0)
    assert m["error_counts"] == {CUT_REASON: 3}
    assert all(not r["success"] and r["ttft"] == 0.0 and r["itl"] == [] for r in res["records"])


def test_keepalive_during_warmup_leaves_nothing_sent_and_ends_on_time():
    res, took = _bench("keepalive", max_duration_s=3.0, warmup=1)   # 3 s: see above
    m = res["metrics"]
    assert 3.0 <= took < 5.0           # measured 3.01 s
    assert (m["completed"], m["failed"], m["not_sent"]) == (0, 0, 3)
    assert m["warmup_errors"] == [CUT_REASON] and res["records"] == []


def test_endless_line_is_capped_not_buffered():
    # one `data:` line that never ends: each request fails once its line passes the cap, and the
    # process does not grow by more than a few caps (measured: 0.05 s; +0-3 MB max RSS)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res, took = _bench("endless_line", max_line_bytes=256 * 1024)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    m = res["metrics"]
    assert took < 2.0
    assert grown_mb < 64, grown_mb
    assert (m["completed"], m["failed"]) == (0, 3)
    assert m["error_counts"] == {"SSE line longer than 262144 bytes without a newline": 3}


def test_silent_server_fails_each_request_after_the_read_timeout():
    # no byte after the request: the read timeout (not a fixed 300 s) ends each request
    # (measured 0.31 s for read timeout 0.3 s, all three in parallel)
    res, took = _bench("silence", read_timeout_s=0.3)
    m = res["metrics"]
    assert 0.3 <= took < 1.5
    assert (m["completed"], m["failed"]) == (0, 3)
    assert m["error_counts"] == {"no data for 0.3 s (--read-timeout)": 3}


@pytest.mark.parametrize("mode,reason", [
    ("malformed", "malformed SSE chunk (not JSON): '{\"choices\": [{\"text\": \"t2\"'"),
    ("no_done", "stream ended without [DONE] or finish_reason after 5 content chunks"),
    ("abort", "server ended the request: finish_reason=abort"),
    ("drop", "connection closed mid-stream (ClientPayloadError)"),
    ("midstream", "stream error: injected mid-stream error"),
    ("empty", "zero-length output"),
    ("http500", 'HTTP 500: {"error": {"message": "injected"}}'),
])
def test_broken_streams_are_failures_with_their_reason(mode, reason):
    res, took = _bench(mode)
    m = res["metrics"]
    assert took < 2.0                  # measured 0.03-0.12 s
    assert (m["completed"], m["failed"]) == (0, 3)
    assert m["error_counts"] == {reason: 3} and m["errors"] == [reason]
    assert [r["error"] for r in res["records"]] == [reason] * 3
    # failed requests never enter the latency statistics: there is none to report
    assert m["median_ttft_ms"] is None and m["mean_tpot_ms"] is None and m["total_output_tokens"] == 0


def test_finish_reason_without_done_is_a_proper_end():
    res, _ = _bench("finish_only")
    m = res["metrics"]
    assert (m["completed"], m["failed"]) == (3, 0)
    assert m["total_output_tokens"] == 15 and all(r["text"] == " t0 t1 t2 t3 t4" for r in res["records"])


@pytest.mark.parametrize("mode,message", [
    ("models_garbage", "/v1/models: the answer is not JSON: '<html>oops'"),
    ("models_shape", "/v1/models: malformed model list (expected {\"data\": [{\"id\": ...}]}): '{\"data\": [1, 2]}'"),
    ("models_endless", "/v1/models: answer larger than 8388608 bytes"),
])
def test_malformed_model_list_is_a_runtime_failure(mode, message):
    with MockServer(MockConfig(error=mode)) as srv:
        t0 = time.monotonic()
        with pytest.raises(RuntimeFailure) as exc:
            run_bench(BenchConfig(url=srv.url, model="", num_prompts=1))
        assert time.monotonic() - t0 < 3.0      # measured 0.02-0.06 s
    assert exc.value.one_line() == f"GET {srv.url}{message}"


def test_one_failure_among_successes_stays_out_of_the_latency_stats():
    from deploy_kit.verify.metrics import RequestRecord, aggregate

    ok = RequestRecord(index=0, output_len=3, success=True, ttft=0.1, latency=0.3, itl=[0.1, 0.1])
    cut = RequestRecord(index=1, output_len=0, success=False, ttft=5.0, latency=9.0, error=CUT_REASON)
    m = aggregate([ok, cut], 1.0)
    assert (m["completed"], m["failed"]) == (1, 1)
    assert m["mean_ttft_ms"] == pytest.approx(100.0) and m["p99_e2el_ms"] == pytest.approx(300.0)
    assert m["error_counts"] == {CUT_REASON: 1}


@pytest.mark.parametrize("field,value,message", [
    ("max_duration_s", float("nan"), "max_duration_s: max_duration_s must be a positive finite number, not nan"),
    ("max_duration_s", float("inf"), "max_duration_s: max_duration_s must be a positive finite number, not inf"),
    ("read_timeout_s", 0.0, "read_timeout_s: read_timeout_s must be a positive finite number, not 0.0"),
    ("request_rate", float("nan"), "request_rate: request_rate must be > 0 (inf = all at once), not nan"),
    ("request_rate", -1.0, "request_rate: request_rate must be > 0 (inf = all at once), not -1.0"),
])
def test_numbers_that_would_unbound_the_run_are_bad_input(field, value, message):
    from deploy_kit.errors import BadInput

    with pytest.raises(BadInput) as exc:
        run_bench(BenchConfig(url="http://127.0.0.1:9", model="m", **{field: value}))
    assert exc.value.one_line() == message
