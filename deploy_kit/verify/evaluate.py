"""Greedy equivalence (deployment vs reference) and lm-eval task accuracy.

Equivalence follows vLLM's tests/models/utils.py::check_logprobs_close: walk both greedy outputs
token by token; at the first position where they differ, each side's token must appear in the
other side's top-k logprobs (a near-tie flipped by numerics is fine); after a divergence the
sequences are no longer comparable, so the comparison of that prompt stops there.
Token identity is the token's text (vLLM's completions logprobs.tokens are decoded strings; the
transformers reference decodes ids one by one the same way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput, RuntimeFailure
from .auth import api_key
from .http import fetch, parse_json

EVAL_EXTRA = "pip install 'deploykit[eval]'"
DEMO_EXTRA = "pip install 'deploykit[demo]'"

# Fixed prompts, in addition to the card's smoke prompts: short factual/continuation prompts whose
# greedy continuations are stable for instruct models.
FIXED_PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4, 5,",
    "Water boils at a temperature of",
    "def fibonacci(n):",
    "The opposite of hot is",
]


@dataclass
class Greedy:
    tokens: list[str]
    top: list[dict[str, float]]     # per position: token text -> logprob (top-k)


@dataclass
class PromptResult:
    prompt: str
    ok: bool
    compared: int                   # positions compared (up to and including the divergence)
    first_divergence: dict | None = None
    deployment_text: str = ""
    reference_text: str = ""


@dataclass
class EvalResult:
    ok: bool
    k: int
    max_tokens: int
    reference: str
    results: list[PromptResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def compare(prompt: str, a: Greedy, b: Greedy) -> PromptResult:
    """check_logprobs_close rule for one prompt; `a` = deployment, `b` = reference."""
    n = min(len(a.tokens), len(b.tokens))
    for i in range(n):
        ta, tb = a.tokens[i], b.tokens[i]
        if ta == tb:
            continue
        a_in_b, b_in_a = ta in b.top[i], tb in a.top[i]
        div = {"position": i, "deployment_token": ta, "reference_token": tb,
               "deployment_token_in_reference_topk": a_in_b,
               "reference_token_in_deployment_topk": b_in_a}
        return PromptResult(prompt, a_in_b and b_in_a, i + 1, div, "".join(a.tokens), "".join(b.tokens))
    # one output ending early (EOS) is not a divergence of the shared prefix
    return PromptResult(prompt, True, n, None, "".join(a.tokens), "".join(b.tokens))


def endpoint_greedy(url: str, model: str, prompt: str, k: int, max_tokens: int,
                    timeout: float = 120.0) -> Greedy:
    """Completions API, temperature 0, logprobs=k (vLLM returns top-k per generated token)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "logprobs": k}
    where = url.rstrip("/") + "/v1/completions"
    status, data = fetch("POST", where, body=body, read_timeout=timeout)
    if status == 404:
        raise BadInput(f"model {model!r} is not served by {url}", field="model")
    if status != 200:
        hint = "set VLLM_API_KEY to the server's key" if status == 401 else None
        raise RuntimeFailure(f"{where} returned HTTP {status}: "
                             f"{data[:200].decode('utf-8', errors='replace')}", hint=hint)
    doc = parse_json(data, f"POST {where}")
    try:
        lp = doc["choices"][0].get("logprobs") or {}
        tokens, top = list(lp.get("tokens") or []), [dict(t or {}) for t in lp.get("top_logprobs") or []]
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise RuntimeFailure(f"POST {where}: malformed completion: {data[:120]!r}") from None
    if not tokens:
        raise RuntimeFailure(f"{url} returned no logprobs (does the server allow logprobs={k}?)")
    if len(top) != len(tokens) or not all(isinstance(t, str) for t in tokens):
        raise RuntimeFailure(f"POST {where}: logprobs.tokens and top_logprobs do not match")
    return Greedy(tokens=tokens, top=top)


class HFReference:
    """transformers on CPU loading the weights dir; torch/transformers imported lazily."""

    def __init__(self, weights_dir: str | Path) -> None:
        try:
            import torch  # noqa: F401
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BadInput(f"--reference hf needs torch and transformers ({exc})",
                           hint=DEMO_EXTRA) from None
        p = Path(weights_dir)
        if not (p / "config.json").is_file():
            raise BadInput(f"no weights at {p} (config.json missing)", hint="run `deploykit pull` first")
        self.tok = AutoTokenizer.from_pretrained(str(p))
        self.model = AutoModelForCausalLM.from_pretrained(str(p), torch_dtype="float32").eval()

    def greedy(self, prompt: str, k: int, max_tokens: int) -> Greedy:
        import torch

        ids = self.tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                      output_scores=True, return_dict_in_generate=True,
                                      pad_token_id=self.tok.eos_token_id)
        gen = out.sequences[0, ids.shape[1]:].tolist()
        toks: list[str] = []
        top: list[dict[str, float]] = []
        for i, tid in enumerate(gen):
            lp = torch.log_softmax(out.scores[i][0].float(), -1)
            vals, idx = lp.topk(k)
            toks.append(str(self.tok.decode([tid])))
            top.append({str(self.tok.decode([j])): float(v)
                        for v, j in zip(vals.tolist(), idx.tolist(), strict=True)})
            # vLLM's completions logprobs include the stop (EOS) token's text as the last token,
            # so it is compared too (a prompt answered by EOS alone is then one real comparison)
            if tid == self.tok.eos_token_id:
                break
        return Greedy(toks, top)


def run_equivalence(url: str, model: str, prompts: list[str], reference: str, *, k: int = 5,
                    max_tokens: int = 32, weights_dir: str | None = None,
                    reference_model: str | None = None) -> EvalResult:
    """reference: "hf" (transformers on `weights_dir`) or a base URL of another endpoint."""
    if reference == "hf":
        hf = HFReference(weights_dir or "")
        ref = lambda p: hf.greedy(p, k, max_tokens)  # noqa: E731
    elif reference.startswith(("http://", "https://")):
        ref = lambda p: endpoint_greedy(reference, reference_model or model, p, k, max_tokens)  # noqa: E731
    else:
        raise BadInput(f"--reference must be 'hf' or an http(s) URL, not {reference!r}", field="reference")
    res = EvalResult(ok=True, k=k, max_tokens=max_tokens, reference=reference)
    for p in prompts:
        pr = compare(p, endpoint_greedy(url, model, p, k, max_tokens), ref(p))
        res.results.append(pr)
        res.ok &= pr.ok
    return res


def chat_prompt(weights_dir: str | None, user: str) -> str | None:
    """The chat-templated text of a one-turn user message (sent raw to /v1/completions on both
    sides), or None without transformers or a chat template: the raw question alone is answered
    by EOS at once by instruct models, which compares nothing."""
    if not weights_dir or not (Path(weights_dir) / "tokenizer_config.json").is_file():
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        tok = AutoTokenizer.from_pretrained(str(weights_dir))
        text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)
        return text if isinstance(text, str) else None
    except Exception:  # noqa: BLE001 - no template in this tokenizer: fall back to the raw prompt
        return None


# ---------------------------------------------------------------- lm-eval task accuracy
def lm_eval_args(url: str, model: str, task: str, *, limit: int | None, chat: bool,
                 tokenizer: str | None, include_path: str | None = None) -> dict:
    """Arguments for lm_eval.simple_evaluate against an OpenAI-compatible server."""
    backend = "local-chat-completions" if chat else "local-completions"
    endpoint = "/v1/chat/completions" if chat else "/v1/completions"
    margs = {"model": model, "base_url": url.rstrip("/") + endpoint, "num_concurrent": 4,
             "max_retries": 2, "tokenized_requests": False}
    if tokenizer:
        margs["tokenizer"] = tokenizer
    else:
        margs["tokenizer_backend"] = "none"   # no hub download for a tokenizer
    return {"model": backend, "model_args": ",".join(f"{k}={v}" for k, v in margs.items()),
            "tasks": [task], "limit": limit, "include_path": include_path,
            "apply_chat_template": chat}


@contextmanager
def _lm_eval_key() -> Iterator[None]:
    """lm-eval's local-completions backend sends `Bearer $OPENAI_API_KEY`; the deployment's key is
    VLLM_API_KEY (auth.py). Passed through the environment for the call only, not as a `header`
    model argument, because lm-eval logs and stores its model arguments."""
    key = api_key()
    old = os.environ.get("OPENAI_API_KEY")
    if key:
        os.environ["OPENAI_API_KEY"] = key
    try:
        yield
    finally:
        if key and old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        elif key and old is not None:
            os.environ["OPENAI_API_KEY"] = old


def _samples(out: dict, task: str, mname: str) -> list[dict]:
    """The per-question record behind the number: what was asked, expected, answered, scored."""
    samples = [{"doc": sm.get("doc"), "target": sm.get("target"),
                "response": (sm.get("filtered_resps") or [None])[0], mname: sm.get(mname)}
               for sm in (out.get("samples") or {}).get(task, [])]
    return json.loads(json.dumps(samples, default=str))


def run_lm_eval(url: str, model: str, task: str, metric: str, baseline: float, rel_tol: float, *,
                limit: int | None = None, chat: bool = False, tokenizer: str | None = None,
                include_path: str | None = None) -> dict:
    """Task accuracy vs card baseline; pass iff |value - baseline| <= rel_tol * baseline.

    lm-eval downloads task datasets from the HF hub unless the task is local (include_path with a
    YAML task over local files); on a machine without hub access use a local task.
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise BadInput("task accuracy needs lm-eval, which is not installed", hint=EVAL_EXTRA) from None
    a = lm_eval_args(url, model, task, limit=limit, chat=chat, tokenizer=tokenizer,
                     include_path=include_path)
    tm = TaskManager(include_path=a.pop("include_path"))
    try:
        with _lm_eval_key():
            out = lm_eval.simple_evaluate(task_manager=tm, **a)
    except Exception as exc:  # noqa: BLE001 - lm-eval raises many kinds (dataset download, HTTP)
        raise RuntimeFailure(f"lm-eval failed: {type(exc).__name__}: {exc}"[:400]) from None
    results = out["results"][task]
    key = next((k for k in results if k == metric or k.startswith(metric + ",")), None)
    if key is None:
        raise BadInput(f"metric {metric!r} not in lm-eval results for {task}: {sorted(results)}")
    value = float(results[key])
    ok = abs(value - baseline) <= rel_tol * abs(baseline)
    return {"task": task, "metric": key, "value": value, "baseline": baseline, "rel_tol": rel_tol,
            "ok": ok, "limit": limit, "lm_eval_args": a, "raw": json.loads(json.dumps(results, default=str)),
            "samples": _samples(out, task, key.split(",")[0])}


def equivalence_prompts(card: Any, weights_dir: str | None) -> list[str]:
    """The card's smoke prompts (chat ones through the model's chat template, the same text to
    both sides) followed by FIXED_PROMPTS; a prompt given twice is compared once."""
    smoke = []
    for p in (card.smoke.prompts if card is not None else []):
        text = chat_prompt(weights_dir, p.prompt) if getattr(p, "api", "") == "chat" else None
        smoke.append(text or p.prompt)
    return list(dict.fromkeys(smoke + FIXED_PROMPTS))


def run_card_eval(tgt: Any, reference: str, *, card: str | None = None, weights_dir: str | None = None,
                  k: int = 5, max_tokens: int = 32, reference_model: str | None = None, task: bool = False,
                  include_path: str | None = None, out: Path | None = None) -> dict:
    """`deploykit eval`: greedy equivalence of target `tgt` (verify.target.Target) against the
    reference, plus the card's lm-eval baseline with `task`. Writes eval.json (and accuracy.json)
    and returns {"equivalence", "accuracy" (or None), "file", "ok"}."""
    from ..paths import data_dir
    from .bench import resolve_model

    served = resolve_model(tgt.url, tgt.model)
    loaded = None
    if card or tgt.card_name:
        from ..cardload import load_card

        loaded = load_card(card or tgt.card_name)
    baseline = loaded.card.eval if loaded else None
    if task and baseline is None:   # refused before minutes of equivalence, not after
        raise BadInput("--task needs an `eval:` baseline in the card", field="eval")
    wdir = weights_dir or tgt.weights_dir
    res = run_equivalence(tgt.url, served, equivalence_prompts(loaded.card if loaded else None, wdir),
                          reference, k=k, max_tokens=max_tokens, weights_dir=wdir,
                          reference_model=reference_model)
    dest = out or Path("reports") / (tgt.name or served.replace("/", "_")) / "eval.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res.to_dict(), indent=2))
    acc = None
    if task and baseline is not None:
        acc = run_lm_eval(tgt.url, served, baseline.task, baseline.metric, baseline.value, baseline.rel_tol,
                          limit=baseline.limit, tokenizer=wdir,
                          include_path=include_path or str(data_dir("evals")))
        dest.with_name("accuracy.json").write_text(json.dumps(acc, indent=2))
    return {"equivalence": res.to_dict(), "accuracy": acc, "file": dest,
            "ok": res.ok and (acc is None or acc["ok"])}
