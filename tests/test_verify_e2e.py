"""Real tier of bench/eval/report: against the running CPU demo deployment (vLLM in Docker).

The `demo` fixture (tests/conftest_e2e.py) brings `deploykit up smollm2-135m-instruct --target cpu`
up once per session. The cpu target serves float32 with --enforce-eager; the transformers
reference (`--reference hf`) loads the same weights in float32 on CPU, so the greedy outputs
must agree by the top-k containment rule (vLLM's check_logprobs_close).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import REPO, require

pytestmark = pytest.mark.e2e


def _ok(res, what: str) -> None:
    assert res.returncode == 0, f"{what} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def test_bench_real_server(demo, tmp_path):  # noqa: F811
    out = tmp_path / "bench"
    t0 = time.monotonic()
    res = demo.cli("bench", demo.url, "--model", demo.model, "--concurrency", "1,4", "--input-len", "64",
                   "--output-len", "32", "--num-prompts", "6", "--tokenizer-dir", str(demo.weights_dir),
                   "--out", str(out),
                   timeout=180)
    took = time.monotonic() - t0
    _ok(res, "bench")
    # expected ~27 s from the measured TTFT/TPOT above (c=1: 6 x 2.3 s, c=4: 2 waves x 2.6 s, two
    # warm-ups, CLI start): 90 s is ~3x that
    assert took < 90, f"bench took {took:.0f} s"
    levels = {}
    for c in (1, 4):
        d = json.loads((out / f"bench-c{c}-rinf.json").read_text())
        m = levels[c] = d["metrics"]
        assert m["completed"] == 6 and m["failed"] == 0, m.get("errors")
        # output length is fixed by ignore_eos: every request produced exactly 32 tokens
        assert m["total_output_tokens"] == 6 * 32
        # the real tokenizer (weights dir of the card) sized the prompts; counts come from usage
        assert m["tokenizer"] == "tokenizer.json" and 6 * 60 <= m["total_input_tokens"] <= 6 * 66
        # measured on this host kind (docs/measurements/bench_vs_vllm/summary.json): median TTFT
        # 190 ms at c=1 and 470 ms at c=4, mean TPOT 64-71 ms; bounds a few times those
        assert 0 < m["median_ttft_ms"] < 2_000 and 0 < m["mean_tpot_ms"] < 300
        assert m["median_e2el_ms"] > m["median_ttft_ms"]
        recs = [json.loads(line) for line in (out / d["records_file"]).read_text().splitlines()]
        assert len(recs) == 6 and all(r["success"] for r in recs)
    # batching: 4 concurrent streams give more output tokens/s than one (even on 2 CPU cores)
    assert levels[4]["output_throughput"] > 1.3 * levels[1]["output_throughput"], levels


def test_bench_unknown_model_is_bad_input(demo):  # noqa: F811
    res = demo.cli("bench", demo.url, "--model", "no-such-model", "--num-prompts", "1", timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    err = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert "no-such-model" in err[0] and "not served" in err[0], res.stderr
    assert "Traceback" not in res.stderr


def test_eval_by_card_name_and_report(demo, tmp_path):  # noqa: F811
    """`eval NAME` resolves the deployment (and its weights, for the transformers reference) from the
    state; `report NAME` picks up smoke + plan. One eval serves the equivalence and task checks."""
    require(_have("torch") and _have("transformers"), "torch/transformers missing: pip install 'deploykit[demo]'")
    rep = tmp_path / "rep"
    _ok(demo.cli("bench", demo.name, "--concurrency", "1,2", "--input-len", "32", "--output-len", "16",
                 "--num-prompts", "4", "--out", str(rep / "bench"), timeout=180), "bench")
    # --task: the card's lm-eval baseline (local task capitals_mini, measured on transformers)
    _ok(demo.cli("eval", demo.name, "--reference", "hf", "--max-tokens", "8", "--task",
                 "--out", str(rep / "eval.json"), timeout=900), "eval by name with --task")
    # greedy equivalence with transformers (float32 on both sides, the card's weights resolved from
    # the deployment): most prompts agree token for token over the whole continuation
    ev = json.loads((rep / "eval.json").read_text())
    assert ev["ok"] and ev["reference"] == "hf" and ev["k"] == 5 and len(ev["results"]) >= 5
    for r in ev["results"]:
        assert r["compared"] > 0 and r["deployment_text"] and r["reference_text"]
    identical = sum(r["first_divergence"] is None for r in ev["results"])
    assert identical >= len(ev["results"]) - 1, ev["results"]
    paris = next(r for r in ev["results"] if r["prompt"] == "The capital of France is")
    assert "Paris" in paris["deployment_text"] and "Paris" in paris["reference_text"]
    acc = json.loads((rep / "accuracy.json").read_text())
    assert acc["ok"] and acc["task"] == "capitals_mini" and len(acc["samples"]) == 40
    france = next(x for x in acc["samples"] if x["doc"]["country"] == "France")
    assert france["response"].strip() == "Paris" and france["exact_match"] == 1.0
    _ok(demo.cli("report", demo.name, "--out", str(rep), "--measure-cpu-bandwidth", timeout=300), "report")
    data = json.loads((rep / "report.json").read_text())
    md = (rep / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all((rep / t).exists() for t in links), [t for t in links if not (rep / t).exists()]
    # the runtime's real evidence: smoke results and the rendered plan
    assert data["smoke_file"] == "evidence/smoke.json" and data["plan_file"] == "evidence/plan.json"
    smoke = json.loads((rep / "evidence" / "smoke.json").read_text())
    assert smoke["model"] == demo.model
    assert json.loads((rep / "evidence" / "plan.json").read_text())["target"] == "cpu"
    assert "Smoke\n\nnot measured" not in md and "Greedy equivalence vs `hf`" in md and "**PASS**" in md
    assert re.search(r"Task accuracy capitals_mini exact_match,none: "
                     r"\[0\.\d+\]\(evidence/accuracy\.json\) .*PASS", md), md
    assert [p["config"]["concurrency"] for p in data["performance"]] == [1, 2]
    assert data["plots"] and all((rep / p).read_bytes()[:4] == b"\x89PNG" for p in data["plots"])
    env = data["environment"]
    assert re.match(r"\d+\.\d+", env["vllm_server"]), env["vllm_server"]
    assert env["image"].startswith("deploykit/vllm-cpu:")
    roof = data["roofline"]
    assert roof["bandwidth_bytes_s"] > 1e8 and roof["bound_tok_s"] > 0
    # served float32: 4 bytes per parameter are read per decoded token
    assert roof["weight_bytes"] == pytest.approx(0.135e9 * 4, rel=0.05)
    assert 0 < roof["fraction_of_bound"] < 1.5


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None



def test_eval_task_off_baseline_is_exit_5(demo, tmp_path):  # noqa: F811
    """A card whose lm-eval baseline the deployment misses: exit 5, one line, the numbers kept.
    The reference is the deployment itself (greedy equivalence passes), so only the task fails."""
    import yaml

    raw = yaml.safe_load((REPO / "models" / "smollm2-135m-instruct.yaml").read_text())
    raw["eval"]["value"] = 0.30          # the real score is 0.75 (1.0 on the first 8): far outside rel_tol 0.1
    raw["eval"]["limit"] = 8             # the card's `limit`: 8 of the task's 40 samples (the test ~15 s sooner)
    card = tmp_path / "smollm2-off.yaml"
    card.write_text(yaml.safe_dump(raw))
    out = tmp_path / "eval.json"
    res = demo.cli("eval", demo.url, "--model", demo.model, "--card", str(card), "--task",
                   "--reference", demo.url, "--reference-model", demo.model, "--max-tokens", "4",
                   "--out", str(out), timeout=900)
    assert res.returncode == 5, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "capitals_mini" in res.stdout and "FAIL" in res.stdout
    assert json.loads(out.read_text())["ok"]            # equivalence passed ...
    acc = json.loads(out.with_name("accuracy.json").read_text())
    assert not acc["ok"] and acc["baseline"] == 0.30 and acc["value"] > 0.5   # ... the task did not
    assert acc["limit"] == 8 and len(acc["samples"]) == 8
