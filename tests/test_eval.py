"""eval: the check_logprobs_close rule, the endpoint client (mock) and the transformers reference."""

from __future__ import annotations

import pytest

from deploy_kit.errors import BadInput, RuntimeFailure
from deploy_kit.verify.evaluate import Greedy, compare, endpoint_greedy, lm_eval_args, run_equivalence
from tests.conftest import require
from tests.mock_openai import MockConfig, MockServer

pytestmark = pytest.mark.integration


def g(tokens, alts=None):
    alts = alts or {}
    return Greedy(tokens, [{t: -0.1, **({alts[i]: -2.0} if i in alts else {})} for i, t in enumerate(tokens)])


def test_identical_outputs_pass():
    r = compare("p", g(["a", "b", "c"]), g(["a", "b", "c"]))
    assert r.ok and r.first_divergence is None and r.compared == 3


def test_divergence_inside_topk_passes_and_is_reported():
    a = g(["a", "x", "q"], {1: "b"})
    b = g(["a", "b", "z"], {1: "x"})
    r = compare("p", a, b)
    assert r.ok and r.first_divergence["position"] == 1 and r.compared == 2


def test_divergence_outside_topk_fails():
    r = compare("p", g(["a", "x"], {1: "b"}), g(["a", "b"]))   # x not in reference top-k
    assert not r.ok
    assert r.first_divergence == {"position": 1, "deployment_token": "x", "reference_token": "b",
                                  "deployment_token_in_reference_topk": False,
                                  "reference_token_in_deployment_topk": True}


def test_early_eos_is_not_a_divergence():
    assert compare("p", g(["a"]), g(["a", "b"])).ok


def test_endpoint_vs_endpoint_with_mock():
    with MockServer(MockConfig(tokens=[" A", " B", " C"])) as dep, \
         MockServer(MockConfig(tokens=[" A", " X", " C"], alternatives={1: " B"})) as ref_ok, \
         MockServer(MockConfig(tokens=[" A", " X", " C"])) as ref_bad, \
         MockServer(MockConfig(tokens=[" A", " B", " C"], alternatives={1: " X"})) as dep2:
        gd = endpoint_greedy(dep.url, "mock-model", "hi", 5, 3)
        assert gd.tokens == [" A", " B", " C"]
        assert dep.requests[-1]["logprobs"] == 5 and dep.requests[-1]["temperature"] == 0.0
        # deployment top-k has only its own token, so " X" is not in it -> fail either way
        bad = run_equivalence(dep.url, "mock-model", ["hi"], ref_bad.url, k=5, max_tokens=3)
        assert not bad.ok and bad.results[0].first_divergence["position"] == 1
        ok = run_equivalence(dep2.url, "mock-model", ["hi"], ref_ok.url, k=5, max_tokens=3)
        assert ok.ok and ok.results[0].first_divergence["position"] == 1


def test_errors():
    with pytest.raises(RuntimeFailure) as exc:
        endpoint_greedy("http://127.0.0.1:9", "m", "p", 5, 3)
    assert exc.value.one_line().startswith("cannot reach http://127.0.0.1:9/v1/completions: ConnectError")
    with MockServer() as s, pytest.raises(BadInput, match="not served"):
        endpoint_greedy(s.url, "nope", "p", 5, 3)
    with pytest.raises(BadInput, match="--reference"):
        run_equivalence("http://127.0.0.1:9", "m", ["p"], "gpu-box")


def test_lm_eval_args_local_completions():
    a = lm_eval_args("http://h:8000/", "m", "gsm8k", limit=50, chat=False, tokenizer=None)
    assert a["model"] == "local-completions"
    assert "base_url=http://h:8000/v1/completions" in a["model_args"]
    assert "tokenizer_backend=none" in a["model_args"] and a["limit"] == 50


def test_transformers_reference_against_itself(demo_weights):
    """Real tier without a vLLM server: transformers on both sides must agree exactly.
    The comparison against the real vLLM demo deployment (run_equivalence via `deploykit eval
    ... --reference hf`) is tests/test_verify_e2e.py::test_eval_by_card_name_and_report."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        require(False, "torch/transformers not installed")
    d = demo_weights
    from deploy_kit.verify.evaluate import HFReference

    ref = HFReference(d)
    a = ref.greedy("The capital of France is", 5, 8)
    b = ref.greedy("The capital of France is", 5, 8)
    assert len(a.tokens) > 0 and all(len(t) == 5 for t in a.top)
    assert a.tokens[0] in a.top[0]   # greedy token is the argmax, so in its own top-k
    assert compare("p", a, b).ok and compare("p", a, b).first_divergence is None


def test_lm_eval_local_task_against_mock(monkeypatch):
    """The real lm-eval (local-completions backend) runs the shipped local task against the mock:
    the mock answers " Paris. It is" to everything, so exactly the France question matches. The
    mock requires an API key: lm-eval's requests carry VLLM_API_KEY, and only for the call."""
    import importlib.util
    import os

    require(importlib.util.find_spec("lm_eval") is not None, "lm-eval missing: pip install 'deploykit[eval]'")
    from deploy_kit.paths import data_dir
    from deploy_kit.verify.evaluate import run_lm_eval

    monkeypatch.setenv("VLLM_API_KEY", "sk-eval")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with MockServer(MockConfig(tokens=[" Paris", ".", " It", " is"], api_key="sk-eval")) as s:
        acc = run_lm_eval(s.url, "mock-model", "capitals_mini", "exact_match", 1 / 40, 0.1,
                          include_path=str(data_dir("evals")))
    assert acc["metric"].startswith("exact_match") and acc["value"] == pytest.approx(1 / 40)
    assert acc["ok"] and acc["raw"] and len(acc["samples"]) == 40
    france = next(x for x in acc["samples"] if x["doc"]["country"] == "France")
    assert france["response"].strip() == "Paris" and france["exact_match"] == 1.0
    # every question reached the server as a greedy completion with the task's stop sequences
    reqs = [r for r in s.requests if "prompt" in r]
    assert len(reqs) == 40 and all(r.get("temperature", 0) == 0 for r in reqs)
    assert {h.get("authorization") for h in s.headers} == {"Bearer sk-eval"}
    assert "OPENAI_API_KEY" not in os.environ and "sk-eval" not in str(acc["lm_eval_args"])
    assert any("capital of France?\nA:" in str(r["prompt"]) for r in reqs)
