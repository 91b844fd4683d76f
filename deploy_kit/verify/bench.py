"""Streaming OpenAI-compatible load generator (chat and completions), vLLM-style metrics.

Client choice: raw httpx async streaming with hand-parsed SSE lines. The openai package builds a
pydantic object per chunk (several allocations and validation per token); at 64+ concurrent
streams on one event loop that parsing is what makes a client the bottleneck. httpx + json.loads
keeps per-chunk work to one small dict; benchmarks/client_overhead.py measures the result.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..errors import BadInput, RuntimeFailure
from .metrics import RequestRecord, aggregate


@dataclass
class BenchConfig:
    url: str                          # base URL, e.g. http://127.0.0.1:8000
    model: str = ""                   # served model name; "" -> the server's only model
    api: str = "completions"          # completions | chat
    input_len: int = 128
    output_len: int = 64
    num_prompts: int = 32
    concurrency: int | None = None    # max in-flight requests (None = unbounded)
    request_rate: float = float("inf")  # req/s; inf = all at once
    burstiness: float = 1.0           # gamma shape; 1.0 = Poisson arrivals
    warmup: int = 1                   # requests excluded from metrics
    max_duration_s: float = 600.0     # stop issuing after this; in-flight finish
    request_timeout_s: float = 300.0
    random_prompts: bool = False
    seed: int = 0
    tokenizer_dir: str | None = None  # weights dir with tokenizer.json
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    ignore_eos: bool = True


# ---------------------------------------------------------------- prompts
def load_tokenizer(weights_dir: str | None):
    """`tokenizers` Tokenizer from <dir>/tokenizer.json, or None (fallback documented below)."""
    if not weights_dir:
        return None
    p = Path(weights_dir) / "tokenizer.json"
    if not p.is_file():
        return None
    try:
        from tokenizers import Tokenizer  # lazy: optional
    except ImportError:
        return None
    return Tokenizer.from_file(str(p))


def make_prompts(n: int, input_len: int, *, tokenizer=None, random_prompts: bool = False,
                 seed: int = 0) -> list[tuple[str, int]]:
    """(prompt, intended token count). With a tokenizer: exact length by encode/decode.

    Fallback without a tokenizer: space-separated common English words, which BPE tokenizers
    (GPT-2/Llama/SmolLM families) encode as ~1 token each; the real count is then taken from the
    server's usage.prompt_tokens, so metrics stay exact even if the prompt length is approximate.
    """
    rng = random.Random(seed)
    words = ("the of and to in is you that it he was for on are as with his they at be this "
             "have from or one had by word but not what all were we when your can said").split()
    out = []
    for i in range(n):
        # fixed prompts rotate the word list by i: same length, but no two share a prefix, so
        # the server's prefix cache does not turn prefill into a cache hit
        if tokenizer is not None:
            vocab = tokenizer.get_vocab_size()
            if random_prompts:
                ids = [rng.randrange(100, max(101, vocab - 100)) for _ in range(input_len)]
            else:
                base = tokenizer.encode(" ".join(words[i % len(words):] + words[:i % len(words)])).ids
                ids = (base * (input_len // max(1, len(base)) + 1))[:input_len]
            text = tokenizer.decode(ids)
            # decode->encode is not an identity for random ids; one truncation pass gets close
            ids = tokenizer.encode(text).ids[:input_len]
            text = tokenizer.decode(ids)
            out.append((text, len(tokenizer.encode(text).ids)))
        else:
            seq = [rng.choice(words) for _ in range(input_len)] if random_prompts else \
                [words[(i + j) % len(words)] for j in range(input_len)]
            out.append((" ".join(seq), input_len))
    return out


# ---------------------------------------------------------------- server checks
def resolve_model(url: str, model: str, timeout: float = 10.0) -> str:
    """GET /v1/models: unreachable -> RuntimeFailure, unknown name -> BadInput."""
    try:
        r = httpx.get(url.rstrip("/") + "/v1/models", timeout=timeout)
    except httpx.HTTPError as exc:
        raise RuntimeFailure(f"cannot reach {url}: {type(exc).__name__}: {exc}",
                             hint="is the server up? see `deploykit status`") from None
    if r.status_code != 200:
        raise RuntimeFailure(f"{url}/v1/models returned HTTP {r.status_code}")
    ids = [m.get("id") for m in r.json().get("data", [])]
    if not model:
        if len(ids) != 1:
            raise BadInput(f"server serves {ids}; pass --model", field="model")
        return ids[0]
    if model not in ids:
        raise BadInput(f"model {model!r} is not served by {url}", field="model",
                       hint=f"served: {', '.join(map(str, ids))}")
    return model


# ---------------------------------------------------------------- one request
def _payload(cfg: BenchConfig, prompt: str) -> tuple[str, dict]:
    body: dict = {"model": cfg.model, "max_tokens": cfg.output_len, "temperature": 0.0,
                  "stream": True, "stream_options": {"include_usage": True}}
    if cfg.ignore_eos:
        body["ignore_eos"] = True      # vLLM extension; keeps output length fixed
    if cfg.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/v1/chat/completions", body
    body["prompt"] = prompt
    return "/v1/completions", body


async def one_request(client: httpx.AsyncClient, cfg: BenchConfig, idx: int, prompt: str,
                      prompt_len: int) -> RequestRecord:
    path, body = _payload(cfg, prompt)
    rec = RequestRecord(index=idx, prompt_len=prompt_len)
    pc = time.perf_counter
    rec.start = st = pc()
    last = st
    chunks = 0
    parts: list[str] = []
    usage = None
    try:
        async with client.stream("POST", path, json=body, timeout=cfg.request_timeout_s) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:200]
                rec.error = f"HTTP {resp.status_code}: {text}"
                return rec
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if "error" in obj and not obj.get("choices"):
                    err = obj["error"]
                    rec.error = "stream error: " + str(err.get("message", err) if isinstance(err, dict) else err)
                    return rec
                if obj.get("usage"):
                    usage = obj["usage"]
                ch = obj.get("choices") or []
                if not ch:
                    continue
                c0 = ch[0]
                piece = (c0.get("delta") or {}).get("content") if cfg.api == "chat" else c0.get("text")
                if piece:
                    now = pc()
                    if chunks == 0:
                        rec.ttft = now - st
                    else:
                        rec.itl.append(now - last)
                    last = now
                    chunks += 1
                    parts.append(piece)
        rec.latency = last - st if chunks else pc() - st
        rec.text = "".join(parts)
        if usage:
            rec.output_len = int(usage.get("completion_tokens") or 0)
            rec.prompt_len = int(usage.get("prompt_tokens") or prompt_len)
            rec.usage_from_server = True
        else:
            rec.output_len = chunks
        if chunks == 0 or rec.output_len == 0:
            rec.error = "zero-length output"
            return rec
        rec.success = True
    except (httpx.HTTPError, json.JSONDecodeError, asyncio.TimeoutError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
    return rec


# ---------------------------------------------------------------- load generation
def arrival_delays(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Inter-arrival gaps like vllm bench serve: gamma(shape=burstiness, scale=1/(rate*burstiness))."""
    if rate == float("inf") or rate <= 0:
        return [0.0] * n
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


async def run_async(cfg: BenchConfig, prompts: list[tuple[str, int]]) -> tuple[list[RequestRecord], float]:
    limits = httpx.Limits(max_connections=max(cfg.concurrency or len(prompts), 1) + 4,
                          max_keepalive_connections=max(cfg.concurrency or len(prompts), 1) + 4)
    async with httpx.AsyncClient(base_url=cfg.url.rstrip("/"), limits=limits, timeout=None) as client:
        for w in range(cfg.warmup):   # warm-up: connection + server caches; never measured
            await one_request(client, cfg, -1 - w, prompts[0][0], prompts[0][1])
        sem = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None

        async def guarded(i, p, n):
            if sem is None:
                return await one_request(client, cfg, i, p, n)
            async with sem:
                return await one_request(client, cfg, i, p, n)

        delays = arrival_delays(len(prompts), cfg.request_rate, cfg.burstiness, cfg.seed)
        tasks = []
        t0 = time.perf_counter()
        for i, ((p, n), d) in enumerate(zip(prompts, delays)):
            if time.perf_counter() - t0 > cfg.max_duration_s:
                break
            if d:
                await asyncio.sleep(d)
            tasks.append(asyncio.create_task(guarded(i, p, n)))
        records = list(await asyncio.gather(*tasks))
        return records, time.perf_counter() - t0


def run_bench(cfg: BenchConfig, *, check_model: bool = True) -> dict:
    """One load level. Returns {"config", "metrics" (vllm keys), "records" (raw per request)}."""
    if check_model:
        cfg.model = resolve_model(cfg.url, cfg.model)
    tok = load_tokenizer(cfg.tokenizer_dir)
    prompts = make_prompts(cfg.num_prompts, cfg.input_len, tokenizer=tok,
                           random_prompts=cfg.random_prompts, seed=cfg.seed)
    records, duration = asyncio.run(run_async(cfg, prompts))
    metrics = aggregate(records, duration, slo_ttft_ms=cfg.slo_ttft_ms, slo_tpot_ms=cfg.slo_tpot_ms)
    metrics["max_concurrency"] = cfg.concurrency
    metrics["request_rate"] = None if cfg.request_rate == float("inf") else cfg.request_rate
    metrics["tokenizer"] = "tokenizer.json" if tok is not None else "fallback: ~1 token/word"
    cfgd = {k: (None if v == float("inf") else v) for k, v in cfg.__dict__.items()}
    return {"config": cfgd, "metrics": metrics, "records": [r.to_dict() for r in records]}


def sweep(cfg: BenchConfig, concurrencies: list[int]) -> list[dict]:
    """Concurrency sweep; each level is an independent run (its own warm-up)."""
    cfg.model = resolve_model(cfg.url, cfg.model)
    out = []
    for c in concurrencies:
        c_cfg = BenchConfig(**{**cfg.__dict__, "concurrency": c})
        out.append(run_bench(c_cfg, check_model=False))
    return out


def save_results(results: list[dict], out_dir: Path) -> list[Path]:
    """bench-c<N>.json (config + metrics) and records-c<N>.jsonl (raw) per level."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for res in results:
        tag = f"c{res['config'].get('concurrency') or 'inf'}-r{res['config'].get('request_rate') or 'inf'}"
        rec_path = out_dir / f"records-{tag}.jsonl"
        rec_path.write_text("".join(json.dumps(r) + "\n" for r in res["records"]))
        js = out_dir / f"bench-{tag}.json"
        js.write_text(json.dumps({"config": res["config"], "metrics": res["metrics"],
                                  "records_file": rec_path.name}, indent=2))
        paths += [js, rec_path]
    return paths
