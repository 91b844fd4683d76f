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
    ("loading weights", re.compile(r"Loading (weights|safetensors|model)|load_weights|Starting to load model|"
                                   r"Model loading took", re.I)),
    ("initialising engine", re.compile(r"Initializing a V\d|EngineCore|vLLM API server version|non-default args",
                                       re.I)),
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
    from ..verify.auth import auth_headers

    try:
        h = httpx.get(f"{base_url}/health", timeout=timeout)
        if h.status_code != 200:
            return False, f"/health answered {h.status_code}", []
        m = httpx.get(f"{base_url}/v1/models", timeout=timeout, headers=auth_headers())
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


class StartFailed(RuntimeFailure):
    """A server that died or never became ready: the one-line error plus the log evidence."""

    def __init__(self, message: str, *, log_tail: str, cause: str | None, **kw) -> None:
        super().__init__(message, **kw)
        self.log_tail = log_tail   # printed by the CLI below the one-line error
        self.cause = cause


def failure_hint(log_text: str) -> tuple[str | None, str, str | None]:
    """(cause, fix, the log line that shows it): a cause only when its signature is in the log."""
    from ..doctor.triage import triage_text

    r = triage_text(log_text)
    if r.cause:
        return r.cause, r.fix, (r.matched_lines[0] if r.matched_lines else None)
    return None, "read the last log lines (`deploykit logs NAME`, `deploykit triage NAME`)", None


def runtime_failure(message: str, log_lines: list[str]) -> StartFailed:
    cause, fix, line = failure_hint("\n".join(log_lines))
    hint = f"cause: {cause} (log: {line!r}); fix: {fix}" if cause else fix
    return StartFailed(message + (f" [{cause}]" if cause else ""), hint=hint,
                       log_tail="\n".join(log_lines[-LOG_TAIL:]), cause=cause)


class _LogWatch:
    """Log lines from a follower thread, turned into phase events for the progress display."""

    def __init__(self, log_stream: Iterable[str] | None, on_event: Callable[[str, str], None] | None) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.lines: list[str] = []
        self.phases: dict[str, float] = {}
        self.on_event = on_event or (lambda kind, text: None)
        self.start = time.monotonic()
        if log_stream is not None:
            threading.Thread(target=_pump, args=(log_stream, self.q), daemon=True).start()

    def mark(self, phase: str) -> None:
        if phase not in self.phases:
            self.phases[phase] = round(time.monotonic() - self.start, 2)
            self.on_event("phase", phase)

    def drain(self) -> None:
        while True:
            try:
                ln = self.q.get_nowait()
            except queue.Empty:
                return
            if ln is None:
                continue
            self.lines.append(ln)
            self.on_event("log", ln)
            ph = phase_of(ln)
            if ph:
                self.mark(ph)


def wait_ready(base_url: str, served_name: str, deadline_s: float,
               container_dead: Callable[[], str | None],
               log_stream: Iterable[str] | None = None,
               on_event: Callable[[str, str], None] | None = None,
               poll_s: float = 1.0, probe_fn=probe) -> ReadyResult:
    """Poll until ready; raise StartFailed (exit 4) if the container dies or the deadline passes.

    container_dead() returns None while the container runs, else a description (exit code...).
    on_event(kind, text) gets ('log', line) and ('phase', name) for the progress display.
    """
    watch = _LogWatch(log_stream, on_event)
    while True:
        watch.drain()
        ok, why, ids = probe_fn(base_url, served_name)
        if ok:
            watch.drain()
            watch.mark("ready")
            return ReadyResult(seconds=round(time.monotonic() - watch.start, 2), phases=watch.phases,
                               log_tail=watch.lines[-LOG_TAIL:], models=ids)
        dead = container_dead()
        if dead:
            time.sleep(0.5)  # let the last log lines arrive
            watch.drain()
            raise runtime_failure(f"container exited before the server was ready ({dead})", watch.lines)
        if time.monotonic() - watch.start > deadline_s:
            raise runtime_failure(f"server not ready after {deadline_s:.0f} s (last probe: {why})", watch.lines)
        time.sleep(poll_s)
