"""Streaming OpenAI-compatible load generator (chat and completions), vLLM-style metrics.

Client: aiohttp, the library `vllm bench serve` uses, with the same connection handling: one
session per load level whose TCPConnector keeps `concurrency` keep-alive connections, opened
before the clock starts. httpx was measured against aiohttp on the mock server (TTFT 300 ms, 25 ms
per token, 2-core host): median TTFT error 6-10 ms vs 3 ms at c=1, 47-100 ms vs 4-10 ms at c=32,
120-1100 ms vs 16-23 ms at c=64 (its connection pool, not the parsing). The SSE parsing lives in
stream.py (one json.loads per chunk, no per-chunk objects).

Bounds whatever the server does: `max_duration_s` covers the whole run (warm-up included; requests
still in flight then are cut and counted failed), a connect timeout and a read timeout (longest
silence between bytes), and a cap on the length of one SSE line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, RuntimeFailure
from .auth import auth_headers
from .http import fetch, parse_json
from .metrics import RequestRecord, aggregate, require_numpy
from .stream import MAX_LINE_BYTES, StreamError, StreamState

if TYPE_CHECKING:
    import aiohttp

MAX_POOL = 256          # connections opened ahead of an unbounded-concurrency run
CUT_REASON = "cut off at --max-duration"


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
    max_duration_s: float = 600.0     # the whole run ends by then; in-flight requests are cut
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0     # longest silence between two reads of one answer
    max_line_bytes: int = MAX_LINE_BYTES
    random_prompts: bool = False
    seed: int = 0
    tokenizer_dir: str | None = None  # weights dir with tokenizer.json
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    ignore_eos: bool = True


def check_config(cfg: BenchConfig) -> None:
    """Refuse (exit 2) numbers that would unbound or break the run: NaN anywhere, a rate that is not
    positive, durations and timeouts that are not positive and finite."""
    import math

    for name in ("max_duration_s", "connect_timeout_s", "read_timeout_s", "burstiness"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise BadInput(f"{name} must be a positive finite number, not {v!r}", field=name)
    if math.isnan(cfg.request_rate) or cfg.request_rate <= 0:
        raise BadInput(f"request_rate must be > 0 (inf = all at once), not {cfg.request_rate!r}",
                       field="request_rate")


# ---------------------------------------------------------------- prompts
def load_tokenizer(weights_dir: str | None) -> Any:
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


WORDS = ("the of and to in is you that it he was for on are as with his they at be this "
         "have from or one had by word but not what all were we when your can said").split()


def _tokenizer_prompt(tokenizer: Any, i: int, input_len: int, rng: random.Random,
                      random_prompts: bool) -> tuple[str, int]:
    if random_prompts:
        vocab = tokenizer.get_vocab_size()
        ids = [rng.randrange(100, max(101, vocab - 100)) for _ in range(input_len)]
    else:
        base = tokenizer.encode(" ".join(WORDS[i % len(WORDS):] + WORDS[:i % len(WORDS)])).ids
        ids = (base * (input_len // max(1, len(base)) + 1))[:input_len]
    text = tokenizer.decode(ids)
    # decode->encode is not an identity for random ids; one truncation pass gets close
    ids = tokenizer.encode(text).ids[:input_len]
    text = tokenizer.decode(ids)
    return text, len(tokenizer.encode(text).ids)


def make_prompts(n: int, input_len: int, *, tokenizer: Any = None, random_prompts: bool = False,
                 seed: int = 0) -> list[tuple[str, int]]:
    """(prompt, intended token count). With a tokenizer: exact length by encode/decode.

    Fallback without a tokenizer: space-separated common English words, which BPE tokenizers
    (GPT-2/Llama/SmolLM families) encode as ~1 token each; the real count is then taken from the
    server's usage.prompt_tokens, so metrics stay exact even if the prompt length is approximate.
    Fixed prompts rotate the word list by i: same length, but no two share a prefix, so the
    server's prefix cache does not turn prefill into a cache hit.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if tokenizer is not None:
            out.append(_tokenizer_prompt(tokenizer, i, input_len, rng, random_prompts))
        else:
            seq = [rng.choice(WORDS) for _ in range(input_len)] if random_prompts else \
                [WORDS[(i + j) % len(WORDS)] for j in range(input_len)]
            out.append((" ".join(seq), input_len))
    return out


# ---------------------------------------------------------------- server checks
def served_models(url: str, *, connect_timeout: float = 10.0, read_timeout: float = 30.0,
                  total_timeout: float | None = None) -> list[str]:
    """Model ids from GET /v1/models. Unreachable, slow, HTTP error or malformed: RuntimeFailure."""
    where = url.rstrip("/") + "/v1/models"
    status, data = fetch("GET", where, connect_timeout=connect_timeout, read_timeout=read_timeout,
                         total_timeout=total_timeout)
    if status != 200:
        raise RuntimeFailure(f"{where} returned HTTP {status}",
                             hint="401: set VLLM_API_KEY to the server's key" if status == 401 else None)
    doc = parse_json(data, f"GET {where}")
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str)
                                                for m in entries):
        raise RuntimeFailure(f"GET {where}: malformed model list (expected {{\"data\": [{{\"id\": ...}}]}}): "
                             f"{data[:80].decode('utf-8', errors='replace')!r}")
    return [m["id"] for m in entries]


def resolve_model(url: str, model: str, *, connect_timeout: float = 10.0, read_timeout: float = 30.0,
                  total_timeout: float | None = None) -> str:
    """The served model to use: unreachable -> RuntimeFailure, unknown name -> BadInput."""
    ids = served_models(url, connect_timeout=connect_timeout, read_timeout=read_timeout,
                        total_timeout=total_timeout)
    if not model:
        if len(ids) != 1:
            raise BadInput(f"server serves {ids}; pass --model", field="model")
        return ids[0]
    if model not in ids:
        raise BadInput(f"model {model!r} is not served by {url}", field="model",
                       hint=f"served: {', '.join(ids)}")
    return model


# ---------------------------------------------------------------- one request
def require_client() -> None:
    """aiohttp (a core dependency, imported lazily) or BadInput (exit 2) naming it."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise BadInput("the bench client needs aiohttp, which is not installed",
                       hint="aiohttp is part of deploykit's core install: pip install 'aiohttp>=3.10'") from None


def _payload(cfg: BenchConfig, prompt: str) -> tuple[str, bytes]:
    body: dict = {"model": cfg.model, "max_tokens": cfg.output_len, "temperature": 0.0,
                  "stream": True, "stream_options": {"include_usage": True}}
    if cfg.ignore_eos:
        body["ignore_eos"] = True      # vLLM extension; keeps output length fixed
    if cfg.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/v1/chat/completions", json.dumps(body).encode()
    body["prompt"] = prompt
    return "/v1/completions", json.dumps(body).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


def _transport_reason(exc: BaseException, cfg: BenchConfig) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timeout ({cfg.connect_timeout_s:g} s, --connect-timeout)"
    if isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return f"no data for {cfg.read_timeout_s:g} s (--read-timeout)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"connection closed mid-stream ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"[:300]


async def one_request(session: aiohttp.ClientSession, cfg: BenchConfig, rec: RequestRecord,
                      prompt: str) -> RequestRecord:
    """Send one streamed request and fill `rec`; a failure is recorded, never raised."""
    import aiohttp

    path, data = _payload(cfg, prompt)
    url = cfg.url.rstrip("/") + path
    pc = time.perf_counter
    rec.start = pc()
    state = StreamState(rec, cfg.api == "chat", rec.start, cfg.max_line_bytes)
    try:
        async with session.post(url, data=data, headers=JSON_HEADERS) as resp:
            if resp.status != 200:
                text = (await resp.content.read(300)).decode("utf-8", errors="replace")
                rec.error = f"HTTP {resp.status}: {text[:200]}"
                return rec
            async for chunk in resp.content.iter_any():
                if state.feed(chunk, pc()):
                    break
            state.finish(pc())
            # read on to the end of the body (bounded by the same timeouts), so the connection
            # goes back to the pool instead of being closed
            async for _rest in resp.content.iter_any():
                pass
    except StreamError as exc:
        rec.success, rec.error = False, str(exc)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        if not rec.success:
            rec.error = _transport_reason(exc, cfg)
    return rec


# ---------------------------------------------------------------- load generation
def arrival_delays(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Inter-arrival gaps like vllm bench serve: gamma(shape=burstiness, scale=1/(rate*burstiness))."""
    if rate == float("inf") or rate <= 0:
        return [0.0] * n
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)
    return [rng.gammavariate(burstiness, theta) for _ in range(n)]


def _session(cfg: BenchConfig, pool: int) -> aiohttp.ClientSession:
    """One keep-alive pool per load level, sized like vllm bench serve's TCPConnector."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=cfg.concurrency or 0, limit_per_host=cfg.concurrency or 0,
                                     keepalive_timeout=60, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=auth_headers(),
                                 trust_env=True)


async def _open_connections(session: aiohttp.ClientSession, cfg: BenchConfig, n: int,
                            deadline: float) -> None:
    """Open `n` pooled connections before the clock starts: n concurrent GET /v1/models.

    Each answer is read to its end (at most 1 MiB, else the connection is dropped), so the
    connection returns to the pool; a failure here only means fewer warm connections.
    """
    url = cfg.url.rstrip("/") + "/v1/models"

    async def touch() -> None:
        async with session.get(url) as resp:
            got = 0
            async for chunk in resp.content.iter_any():
                got += len(chunk)
                if got > 2**20:
                    resp.close()
                    return

    left = deadline - time.monotonic()
    if left > 0:
        try:
            await asyncio.wait_for(asyncio.gather(*(touch() for _ in range(n)), return_exceptions=True), left)
        except asyncio.TimeoutError:
            pass


async def _warmup(session: aiohttp.ClientSession, cfg: BenchConfig, prompt: str, deadline: float) -> list[str]:
    """Warm-up requests (never measured), each bounded by the run's deadline; their errors."""
    errors = []
    for w in range(cfg.warmup):
        rec = RequestRecord(index=-1 - w)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            await asyncio.wait_for(one_request(session, cfg, rec, prompt), left)
        except asyncio.TimeoutError:
            rec.error = CUT_REASON
        if not rec.success:
            errors.append(rec.error)
    return errors


async def _issue(session: aiohttp.ClientSession, cfg: BenchConfig, prompts: list[tuple[str, int]],
                 deadline: float) -> list[RequestRecord]:
    """Issue the measured requests on schedule until the deadline; cut what is still running then."""
    sem = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None

    async def guarded(rec: RequestRecord, prompt: str) -> RequestRecord:
        if sem is None:
            return await one_request(session, cfg, rec, prompt)
        async with sem:
            return await one_request(session, cfg, rec, prompt)

    records: list[RequestRecord] = []
    tasks = []
    delays = arrival_delays(len(prompts), cfg.request_rate, cfg.burstiness, cfg.seed)
    due = time.monotonic()
    for i, ((p, n), d) in enumerate(zip(prompts, delays, strict=True)):
        if d:   # absolute schedule (as vllm bench serve): a late wake-up does not delay the rest
            due += d
            await asyncio.sleep(max(0.0, min(due, deadline) - time.monotonic()))
        if time.monotonic() >= deadline:
            break
        records.append(RequestRecord(index=i, prompt_len=n))
        tasks.append(asyncio.create_task(guarded(records[-1], p)))
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            t.result()     # a bug in the client must not pass silently
    for rec in records:
        if rec.start and not rec.success and not rec.error:
            rec.error = CUT_REASON
    return records


async def run_async(cfg: BenchConfig, prompts: list[tuple[str, int]],
                    deadline: float) -> tuple[list[RequestRecord], float, list[str]]:
    """(records of the requests sent, measured duration s, warm-up errors); ends by `deadline`
    (time.monotonic()) plus the time to cancel what is in flight."""
    pool = max(1, min(cfg.concurrency or len(prompts), len(prompts), MAX_POOL))
    async with _session(cfg, pool) as session:
        await _open_connections(session, cfg, pool, deadline)
        warm_errors = await _warmup(session, cfg, prompts[0][0], deadline)
        # Everything allocated so far (imports, prompts, the pool) is moved out of the garbage
        # collector's view: a full collection over the CLI's ~50k objects took up to 140 ms on the
        # shared 2-core host, a pause that would land in some requests' TTFT.
        gc.collect()
        gc.freeze()
        t0 = time.perf_counter()
        try:
            records = await _issue(session, cfg, prompts, deadline)
        finally:
            gc.unfreeze()
        duration = time.perf_counter() - t0
    return records, duration, warm_errors


def run_bench(cfg: BenchConfig, *, check_model: bool = True, deadline: float | None = None) -> dict:
    """One load level. Returns {"config", "metrics" (vllm keys), "records" (raw per request)}.

    deadline: time.monotonic() by which the level ends; default now + cfg.max_duration_s.
    """
    check_config(cfg)
    require_numpy()   # before any request is sent: never measure and then fail on a missing part
    require_client()
    deadline = deadline if deadline is not None else time.monotonic() + cfg.max_duration_s
    if check_model:
        cfg.model = resolve_model(cfg.url, cfg.model, connect_timeout=cfg.connect_timeout_s,
                                  read_timeout=min(cfg.read_timeout_s, 30.0),
                                  total_timeout=max(0.1, deadline - time.monotonic()))
    tok = load_tokenizer(cfg.tokenizer_dir)
    prompts = make_prompts(cfg.num_prompts, cfg.input_len, tokenizer=tok,
                           random_prompts=cfg.random_prompts, seed=cfg.seed)
    records, duration, warm_errors = asyncio.run(run_async(cfg, prompts, deadline))
    sent = [r for r in records if r.start]
    metrics = aggregate(sent, duration, slo_ttft_ms=cfg.slo_ttft_ms, slo_tpot_ms=cfg.slo_tpot_ms)
    metrics["not_sent"] = cfg.num_prompts - len(sent)
    metrics["warmup_errors"] = warm_errors
    metrics["max_concurrency"] = cfg.concurrency
    metrics["request_rate"] = None if cfg.request_rate == float("inf") else cfg.request_rate
    metrics["tokenizer"] = "tokenizer.json" if tok is not None else "fallback: ~1 token/word"
    cfgd = {k: (None if v == float("inf") else v) for k, v in cfg.__dict__.items()}
    return {"config": cfgd, "metrics": metrics, "records": [r.to_dict() for r in sent]}


def sweep(cfg: BenchConfig, concurrencies: list[int]) -> list[dict]:
    """Concurrency sweep; each level is an independent run (its own pool and warm-up). The levels
    share one deadline: the whole sweep ends within cfg.max_duration_s; a level that would start
    after it is skipped."""
    check_config(cfg)
    require_numpy()
    require_client()
    deadline = time.monotonic() + cfg.max_duration_s
    cfg.model = resolve_model(cfg.url, cfg.model, connect_timeout=cfg.connect_timeout_s,
                              read_timeout=min(cfg.read_timeout_s, 30.0), total_timeout=cfg.max_duration_s)
    out = []
    for c in concurrencies:
        if time.monotonic() >= deadline:
            break
        c_cfg = BenchConfig(**{**cfg.__dict__, "concurrency": c or None})
        out.append(run_bench(c_cfg, check_model=False, deadline=deadline))
    return out


def bench_failures(results: list[dict]) -> str | None:
    """One line naming how many sent requests failed and the commonest reasons, or None."""
    from collections import Counter

    counts: Counter[str] = Counter()
    sent = 0
    for r in results:
        m = r["metrics"]
        sent += m["completed"] + m["failed"]
        counts.update(m.get("error_counts") or {})
    if not counts:
        return None
    reasons = "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(3))
    return f"{sum(counts.values())} of {sent} requests failed: {reasons}"


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
