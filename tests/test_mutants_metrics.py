"""Unit tests that kill the mutants of deploy_kit/verify/metrics.py (mutation run: every one of its
149 mutants had "no tests" in the unit tier; its tests were all integration). Exact values, worked
out by hand from vLLM's definitions (benchmarks/serve.py calculate_metrics)."""

from __future__ import annotations

import pytest

from deploy_kit.errors import BadInput
from deploy_kit.verify import metrics
from deploy_kit.verify.metrics import RequestRecord, aggregate

pytestmark = pytest.mark.unit


def rec(i, *, ttft, latency, out, prompt=10, itl=(), ok=True, error=""):
    return RequestRecord(index=i, prompt_len=prompt, output_len=out, success=ok, error=error, ttft=ttft,
                         latency=latency, itl=list(itl))


RECORDS = [
    rec(0, ttft=0.1, latency=0.5, out=5, prompt=10, itl=(0.1, 0.1, 0.1, 0.1)),   # TPOT 0.1
    rec(1, ttft=0.3, latency=1.1, out=3, prompt=20, itl=(0.4, 0.4)),             # TPOT 0.4
    rec(2, ttft=0.2, latency=0.2, out=1, prompt=30),                             # 1 token: no TPOT
    rec(3, ttft=0.0, latency=0.0, out=0, prompt=99, ok=False, error="HTTP 500"),
    rec(4, ttft=0.0, latency=0.0, out=0, prompt=99, ok=False, error="HTTP 500"),
    rec(5, ttft=0.0, latency=0.0, out=0, prompt=99, ok=False),
]


def test_counts_tokens_and_throughputs():
    m = aggregate(RECORDS, 2.0)
    assert (m["duration"], m["completed"], m["failed"]) == (2.0, 3, 3)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (60, 9)  # failed requests' 99s excluded
    assert m["request_throughput"] == pytest.approx(1.5)
    assert m["output_throughput"] == pytest.approx(4.5)
    assert m["total_token_throughput"] == pytest.approx(34.5)
    assert m["request_goodput"] is None  # no SLO given


def test_latency_statistics_in_ms():
    m = aggregate(RECORDS, 2.0, percentiles=(50, 99.5))
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    assert m["std_ttft_ms"] == pytest.approx(81.6496581, rel=1e-6)
    assert m["p50_ttft_ms"] == pytest.approx(200.0)
    assert m["p99.5_ttft_ms"] == pytest.approx(299.0)   # linear interpolation, as numpy/vLLM
    assert m["mean_tpot_ms"] == pytest.approx(250.0)    # (100 + 400) / 2: the 1-token request left out
    assert m["median_tpot_ms"] == pytest.approx(250.0)
    assert m["mean_itl_ms"] == pytest.approx(200.0)     # (4 x 100 + 2 x 400) / 6
    assert m["median_itl_ms"] == pytest.approx(100.0)
    assert m["mean_e2el_ms"] == pytest.approx(600.0)
    assert m["p50_e2el_ms"] == pytest.approx(500.0)
    assert "p50.0_ttft_ms" not in m and "p99_ttft_ms" not in m


def test_errors_are_counted_by_reason():
    m = aggregate(RECORDS, 2.0)
    assert m["errors"] == ["HTTP 500", "unknown"]
    assert m["error_counts"] == {"HTTP 500": 2, "unknown": 1}


@pytest.mark.parametrize(("slo_ttft", "slo_tpot", "good"), [
    (200.0, None, 2),     # TTFT 100 and 200 ms meet 200 ms (inclusive), 300 ms does not
    (199.0, None, 1),
    (None, 100.0, 2),     # TPOT 100 ms meets; the 1-token request has TPOT 0
    (None, 99.0, 1),
    (300.0, 400.0, 3),
    (250.0, 400.0, 2),
])
def test_goodput_counts_requests_meeting_every_slo(slo_ttft, slo_tpot, good):
    m = aggregate(RECORDS, 2.0, slo_ttft_ms=slo_ttft, slo_tpot_ms=slo_tpot)
    assert m["request_goodput"] == pytest.approx(good / 2.0)


def test_all_failed_gives_none_not_zero():
    m = aggregate([rec(0, ttft=0, latency=0, out=0, ok=False, error="timeout")], 1.0, percentiles=(90,))
    assert m["completed"] == 0 and m["failed"] == 1
    for key in ("mean_ttft_ms", "median_tpot_ms", "std_itl_ms", "p90_e2el_ms"):
        assert key in m and m[key] is None, key
    assert m["request_throughput"] == 0.0


def test_zero_duration_does_not_divide_by_zero():
    m = aggregate([rec(0, ttft=0.1, latency=0.2, out=2)], 0.0)
    assert m["request_throughput"] == pytest.approx(1e9)
    assert m["duration"] == 0.0


def test_stats_keys_and_values_directly():
    assert metrics._stats("x", [], [50, 99.9]) == {"mean_x_ms": None, "median_x_ms": None, "std_x_ms": None,
                                                   "p50_x_ms": None, "p99.9_x_ms": None}
    s = metrics._stats("x", [0.001, 0.003], [50])
    assert s == {"mean_x_ms": pytest.approx(2.0), "median_x_ms": pytest.approx(2.0),
                 "std_x_ms": pytest.approx(1.0), "p50_x_ms": pytest.approx(2.0)}


def test_missing_numpy_is_bad_input(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_numpy(name, *args, **kwargs):
        if name == "numpy":
            raise ImportError("no numpy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numpy)
    with pytest.raises(BadInput) as ei:
        metrics.require_numpy()
    assert ei.value.exit_code == 2 and ei.value.hint == metrics.NUMPY_HINT


def test_record_to_dict_round_trips():
    r = rec(7, ttft=0.1, latency=0.2, out=2, itl=(0.1,))
    d = r.to_dict()
    assert d["index"] == 7 and d["itl"] == [0.1] and d["usage_from_server"] is False and d["text"] == ""
    assert RequestRecord(**d) == r
