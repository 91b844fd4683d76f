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


def test_cli_errors_exit_codes(isolated_home, capsys):
    assert main(["bench", "http://127.0.0.1:9", "--model", "x"]) == 4
    assert "cannot reach" in capsys.readouterr().err
    with MockServer() as srv:
        assert main(["bench", srv.url, "--model", "nope"]) == 2
    assert "not served" in capsys.readouterr().err
    assert main(["bench", "no-such-deployment"]) == 2
    assert main(["bench", "http://127.0.0.1:9", "--concurrency", "1,x"]) == 2


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
