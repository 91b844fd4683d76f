"""report + the verify CLI end to end against the mock server (exit codes, files, links)."""

from __future__ import annotations

import json
import re

import pytest

from deploy_kit.cli import main
from tests.mock_openai import MockConfig, MockProcess, MockServer

pytestmark = pytest.mark.integration


def test_cli_bench_then_report(tmp_path, isolated_home, capsys):
    out = tmp_path / "rep"
    with MockProcess(MockConfig(ttft_s=0.02, itl_s=0.005)) as srv:
        rc = main(["bench", srv.url, "--model", "mock-model", "--concurrency", "1,4", "--num-prompts", "8",
                   "--output-len", "6", "--input-len", "16", "--out", str(out / "bench")])
        assert rc == 0
        rc = main(["report", "demo", "--out", str(out), "--url", srv.url, "--bandwidth-gbs", "10",
                   "--weights-dir", str(tmp_path)])
    assert rc == 0
    files = sorted(p.name for p in (out / "bench").iterdir())
    assert files == ["bench-c1-rinf.json", "bench-c4-rinf.json", "records-c1-rinf.jsonl", "records-c4-rinf.jsonl"]
    data = json.loads((out / "report.json").read_text())
    assert [p["config"]["concurrency"] for p in data["performance"]] == [1, 4]
    for png in data["plots"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    # every linked file exists; unmeasured sections say so
    for target in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / target).exists(), target
    assert "Greedy equivalence: not measured" in md and "## Smoke\n\nnot measured" in md
    # no weights and no card -> roofline bound unknown, reported as not measured (never 0)
    assert data["roofline"]["bound_tok_s"] is None
    assert data["roofline"]["measured_decode_tok_s"] == pytest.approx(
        1000 / data["performance"][0]["metrics"]["mean_tpot_ms"])


def _err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_cli_errors_exit_codes(isolated_home, capsys):
    assert main(["bench", "http://127.0.0.1:9", "--model", "x"]) == 4
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: cannot reach http://127.0.0.1:9/v1/models: ConnectError")
    with MockServer() as srv:
        assert main(["bench", srv.url, "--model", "nope"]) == 2
    assert _err_lines(capsys) == [f"error: model: model 'nope' is not served by {srv.url} (served: mock-model)"]
    assert main(["bench", "no-such-deployment"]) == 2
    assert _err_lines(capsys) == ["error: no running deployment named 'no-such-deployment' "
                                  "(run `deploykit up no-such-deployment` or pass a URL)"]
    assert main(["bench", "http://127.0.0.1:9", "--concurrency", "1,x"]) == 2
    assert _err_lines(capsys) == ["error: --concurrency must be comma-separated integers, not '1,x'"]
    assert main(["bench", "http://:80"]) == 2
    assert _err_lines(capsys) == ["error: not a valid URL: 'http://:80' (pass http://host:port or a deployment name)"]


def test_cli_bench_failed_requests_exit_5_after_saving(tmp_path, isolated_home, capsys):
    out = tmp_path / "b"
    with MockServer(MockConfig(ttft_s=0.001, itl_s=0.001, error="no_done")) as srv:
        rc = main(["bench", srv.url, "--model", "mock-model", "--num-prompts", "2", "--output-len", "3",
                   "--warmup", "0", "--out", str(out)])
    assert rc == 5
    assert _err_lines(capsys)[-1] == (
        "error: 2 of 2 requests failed: 2 x stream ended without [DONE] or finish_reason after 3 content "
        f"chunks (per-request reasons in {out}/records-*.jsonl)")
    recs = [json.loads(line) for line in (out / "records-cinf-rinf.jsonl").read_text().splitlines()]
    assert [r["success"] for r in recs] == [False, False]


def test_cli_bench_max_duration_against_keepalive_only_server(tmp_path, isolated_home, capsys):
    import time

    with MockServer(MockConfig(error="keepalive")) as srv:
        t0 = time.monotonic()
        rc = main(["bench", srv.url, "--model", "mock-model", "--num-prompts", "3", "--warmup", "0",
                   "--max-duration", "1", "--out", str(tmp_path / "b"), "--json"])
        took = time.monotonic() - t0
    assert rc == 5 and 1.0 <= took < 3.0          # measured 1.05 s
    printed = json.loads(capsys.readouterr().out)
    m = printed[0]["metrics"]
    assert (m["completed"], m["failed"], m["not_sent"]) == (0, 3, 0)
    assert m["error_counts"] == {"cut off at --max-duration": 3}


def test_api_key_reaches_bench_eval_and_report(tmp_path, isolated_home, monkeypatch, capsys):
    """VLLM_API_KEY (auth.py) goes out as `Authorization: Bearer` from bench, eval and report."""
    from deploy_kit.verify.report import server_version

    with MockServer(MockConfig(api_key="sk-test", ttft_s=0.001, itl_s=0.001)) as srv:
        monkeypatch.setenv("VLLM_API_KEY", "  ")      # blank: sends nothing, the server refuses
        assert main(["bench", srv.url, "--num-prompts", "1", "--out", str(tmp_path / "b0")]) == 4
        assert _err_lines(capsys) == [f"error: {srv.url}/v1/models returned HTTP 401 "
                                      "(401: set VLLM_API_KEY to the server's key)"]
        assert "authorization" not in srv.headers[-1]
        monkeypatch.setenv("VLLM_API_KEY", "sk-test")
        n0 = len(srv.headers)
        assert main(["bench", srv.url, "--num-prompts", "2", "--output-len", "3",
                     "--out", str(tmp_path / "b")]) == 0
        assert main(["eval", srv.url, "--reference", srv.url, "--out", str(tmp_path / "e.json")]) == 0
        assert server_version(srv.url) == "mock-0.1"
    sent = srv.headers[n0:]
    # bench: /v1/models, 2 pool-opening GETs, 1 warm-up, 2 streams; eval: /v1/models and the 5 fixed
    # prompts to both sides (the same server); report: /version
    assert len(sent) == (1 + 2 + 1 + 2) + (1 + 5 * 2) + 1
    assert {h.get("authorization") for h in sent} == {"Bearer sk-test"}


def test_cli_eval_pass_and_fail(tmp_path, isolated_home):
    with MockServer(MockConfig(tokens=[" A", " B"])) as a, MockServer(MockConfig(tokens=[" A", " B"])) as b, \
         MockServer(MockConfig(tokens=[" Z", " B"])) as c:
        assert main(["eval", a.url, "--model", "mock-model", "--reference", b.url,
                     "--out", str(tmp_path / "e1.json")]) == 0
        assert main(["eval", a.url, "--model", "mock-model", "--reference", c.url,
                     "--out", str(tmp_path / "e2.json")]) == 5
    bad = json.loads((tmp_path / "e2.json").read_text())
    assert not bad["ok"] and bad["results"][0]["first_divergence"]["position"] == 0


def test_report_eval_section(tmp_path, isolated_home):
    out = tmp_path / "r"
    out.mkdir()
    (out / "eval.json").write_text(json.dumps({"ok": False, "k": 5, "max_tokens": 4, "reference": "hf", "results": [
        {"prompt": "p", "ok": False, "compared": 1, "deployment_text": "", "reference_text": "",
         "first_divergence": {"position": 0, "deployment_token": "a", "reference_token": "b",
                              "deployment_token_in_reference_topk": False,
                              "reference_token_in_deployment_topk": False}}]}))
    assert main(["report", "demo", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "**FAIL**" in md and "pos 0: 'a' vs 'b'" in md and "## Performance\n\nnot measured" in md


def test_cpu_bandwidth_is_positive():
    from deploy_kit.verify.report import cpu_bandwidth

    assert cpu_bandwidth(size_mb=16, repeats=2) > 1e8


def test_served_dtype_bytes_from_plan_argv():
    """Roofline weight bytes follow the served --dtype (vLLM casts a bf16 file to float32)."""
    from deploy_kit.verify.report import served_dtype_bytes

    assert served_dtype_bytes(["--model", "/m", "--dtype", "float32", "--enforce-eager"]) == (4.0, "--dtype float32")
    assert served_dtype_bytes(["--dtype=bfloat16"])[0] == 2.0
    assert served_dtype_bytes(["--dtype", "auto"])[0] is None and served_dtype_bytes(None)[0] is None


@pytest.mark.parametrize("module,extra", [("matplotlib", "plots"), ("numpy", None), ("aiohttp", None)])
def test_missing_parts_exit_2_before_anything_is_sent_or_written(tmp_path, isolated_home, monkeypatch, capsys,
                                                                 module, extra):
    import sys

    out = tmp_path / "r"
    if module == "matplotlib":   # the report needs plots only when there is bench evidence
        (out / "bench").mkdir(parents=True)
        (out / "bench" / "bench-c1-rinf.json").write_text(json.dumps({"config": {"concurrency": 1}, "metrics": {}}))
    monkeypatch.setitem(sys.modules, module, None)      # `import module` now raises ImportError
    with MockServer() as srv:
        argv = ["report", "demo", "--out", str(out)] if module == "matplotlib" else \
            ["bench", srv.url, "--num-prompts", "1", "--out", str(out)]
        assert main(argv) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "which is not installed" in err[0]
    if extra:
        assert err[0].endswith(f"(pip install 'deploykit[{extra}]')")
        assert not (out / "report.md").exists()
    else:
        assert f"pip install '{module}>=" in err[0]
        assert srv.requests == [] and not out.exists()    # not even GET /v1/models


def test_missing_lm_eval_and_torch_name_their_extras(monkeypatch):
    import sys

    from deploy_kit.errors import BadInput
    from deploy_kit.verify.evaluate import HFReference, run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BadInput) as exc:
        run_lm_eval("http://127.0.0.1:9", "m", "capitals_mini", "exact_match", 0.5, 0.1)
    assert exc.value.one_line() == "task accuracy needs lm-eval, which is not installed (pip install 'deploykit[eval]')"
    with pytest.raises(BadInput) as exc:
        HFReference("/nonexistent")
    assert exc.value.hint == "pip install 'deploykit[demo]'"
