"""Wait until a vLLM server is proven up: /health answers 200 and /v1/models lists the model.

The container's log lines drive a phase display (loading weights, compiling, ready) and are kept
for the failure report. A dead container or a passed deadline raises RuntimeFailure (exit 4)
with the last log lines and, when known, the cause (deploy_kit.doctor.triage).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import httpx

from ..errors import RuntimeFailure

# First match wins, checked per log line; order follows vLLM's startup.
PHASES: list[tuple[str, re.Pattern]] = [
    ("ready", re.compile(r"Application startup complete|Uvicorn running on", re.I)),
    ("starting API server", re.compile(r"Starting vLLM API server|Available routes|init engine.*took", re.I)),
    ("allocating KV cache", re.compile(r"KV cache|# CPU blocks|num_cpu_blocks|GPU KV cache size", re.I)),
    ("compiling", re.compile(r"Warming up model|Compiling a graph|torch\.compile takes|Dynamo bytecode|"
                            r"Capturing (CUDA|ACL)? ?graph", re.I)),
    ("loading weights", re.compile(r"Loading (weights|safetensors|model)|load_weights|Starting to load model|Model loading took", re.I)),
    ("initialising engine", re.compile(r"Initializing a V\d|EngineCore|vLLM API server version|non-default args", re.I)),
]
LOG_TAIL = 40


def phase_of(line: str) -> str | None:
    for name, pat in PHASES:
        if pat.search(line):
            return name
    return None


def deadline_for(weights_gib: float | None, override_s: float | None = None) -> float:
    """Readiness deadline: the card/plan override, else 300 s + 60 s per GiB of weights.

    300 s: torch.compile warm-up alone takes ~60 s for a 135M model on 2 busy CPU cores."""
    if override_s:
        return float(override_s)
    return 300.0 + 60.0 * max(0.0, weights_gib or 0.0)


@dataclass
class ReadyResult:
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)   # phase -> seconds since start
    log_tail: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def probe(base_url: str, served_name: str, timeout: float = 3.0) -> tuple[bool, str, list[str]]:
    """(ready, why-not, model ids). Ready only when /health is 200 AND /v1/models lists the model."""
    try:
        h = httpx.get(f"{base_url}/health", timeout=timeout)
        if h.status_code != 200:
            return False, f"/health answered {h.status_code}", []
        m = httpx.get(f"{base_url}/v1/models", timeout=timeout)
        if m.status_code != 200:
            return False, f"/v1/models answered {m.status_code}", []
        ids = [d.get("id") for d in m.json().get("data", [])]
    except (httpx.HTTPError, ValueError) as exc:
        return False, f"{type(exc).__name__}", []
    if served_name not in ids:
        return False, f"/v1/models lists {ids}, not {served_name!r}", ids
    return True, "", ids


def _pump(lines: Iterable[str], q: "queue.Queue[str | None]") -> None:
    try:
        for ln in lines:
            q.put(ln)
    except Exception:  # the stream ends when the container goes away; that is reported elsewhere
        pass
    q.put(None)


_FALLBACK = [
    (r"address already in use|port is already allocated", "port busy", "pick another --port"),
    (r"OOMKilled|out of memory|Cannot allocate memory", "out of memory",
     "lower max_model_len / VLLM_CPU_KVCACHE_SPACE or give the container more memory"),
    (r"graph capture|Capturing .*failed", "graph capture failure", "set serve.enforce_eager=true"),
    (r"HCCL.*timeout|hccl.*timed out", "HCCL timeout", "check the devices and HCCL_CONNECT_TIMEOUT"),
    (r"Bus error|No space left on device.*shm|/dev/shm", "shared memory too small", "raise shm_size"),
    (r"trust_remote_code", "missing trust_remote_code", "set model.trust_remote_code=true"),
    (r"unrecognized arguments|error: argument", "vLLM rejected a command-line argument",
     "check serve.extra_args and the card's serve fields against this vLLM version"),
]


def failure_hint(log_text: str) -> tuple[str | None, str]:
    """(cause, fix): the triage helper's signatures first, then a small built-in table."""
    fix = "read the last log lines (`deploykit logs NAME`)"
    try:
        from ..doctor.triage import triage_text

        r = triage_text(log_text)
        if r.cause:
            return r.cause, r.fix
        fix = r.fix
    except ImportError:
        pass
    for pat, cause, fx in _FALLBACK:
        if re.search(pat, log_text, re.I):
            return cause, fx
    return None, fix


def runtime_failure(message: str, log_lines: list[str], extra_hint: str = "") -> RuntimeFailure:
    text = "\n".join(log_lines)
    cause, fix = failure_hint(text + ("\n" + extra_hint if extra_hint else ""))
    tail = "\n".join(log_lines[-LOG_TAIL:])
    hint = (f"cause: {cause}; fix: {fix}" if cause else fix)
    exc = RuntimeFailure(f"{message}" + (f" [{cause}]" if cause else ""), hint=hint)
    exc.log_tail = tail  # printed by the CLI below the one-line error
    exc.cause = cause
    return exc


def wait_ready(base_url: str, served_name: str, deadline_s: float,
               container_dead: Callable[[], str | None],
               log_stream: Iterable[str] | None = None,
               on_event: Callable[[str, str], None] | None = None,
               poll_s: float = 1.0, probe_fn=probe) -> ReadyResult:
    """Poll until ready; raise RuntimeFailure if the container dies or the deadline passes.

    container_dead() returns None while the container runs, else a description (exit code...).
    on_event(kind, text) gets ('log', line) and ('phase', name) for the progress display.
    """
    start = time.monotonic()
    q: "queue.Queue[str | None]" = queue.Queue()
    if log_stream is not None:
        threading.Thread(target=_pump, args=(log_stream, q), daemon=True).start()
    lines: list[str] = []
    phases: dict[str, float] = {}

    def drain() -> None:
        while True:
            try:
                ln = q.get_nowait()
            except queue.Empty:
                return
            if ln is None:
                continue
            lines.append(ln)
            if on_event:
                on_event("log", ln)
            ph = phase_of(ln)
            if ph and ph not in phases:
                phases[ph] = round(time.monotonic() - start, 2)
                if on_event:
                    on_event("phase", ph)

    why = "not started"
    while True:
        drain()
        ok, why, ids = probe_fn(base_url, served_name)
        if ok:
            drain()
            if "ready" not in phases:
                phases["ready"] = round(time.monotonic() - start, 2)
                if on_event:
                    on_event("phase", "ready")
            return ReadyResult(seconds=round(time.monotonic() - start, 2), phases=phases,
                               log_tail=lines[-LOG_TAIL:], models=ids)
        dead = container_dead()
        if dead:
            time.sleep(0.5)  # let the last log lines arrive
            drain()
            raise runtime_failure(f"container exited before the server was ready ({dead})", lines, dead)
        if time.monotonic() - start > deadline_s:
            raise runtime_failure(f"server not ready after {deadline_s:.0f} s (last probe: {why})",
                                  lines)
        time.sleep(poll_s)
