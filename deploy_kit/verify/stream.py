"""One streamed OpenAI-style answer, bytes in, RequestRecord out: SSE lines, chunks, honest end.

Per-chunk work is kept small (the bench client must not be the bottleneck at 64 streams): bytes
are split on newlines once per network read, only `data:` lines are parsed, with one json.loads
each, and one timestamp is taken per read (before parsing) for the content chunks it carries.

A request completes only with a proper end of stream: `data: [DONE]` or a choice with a
finish_reason (other than "abort"/"error"). Everything else raises StreamError, whose message
becomes the record's failure reason. A line longer than `max_line` bytes (with or without a
newline) is a failure too, so a server that never sends a newline cannot grow the buffer.
"""

from __future__ import annotations

import json

from .metrics import RequestRecord

MAX_LINE_BYTES = 2**20     # one SSE chunk of one token (with top-k logprobs) is a few KB
FAILED_FINISH = ("abort", "error")


class StreamError(Exception):
    """The stream broke the protocol; str(exc) is the failure reason recorded for the request."""


def _preview(raw: bytes | bytearray) -> str:
    return repr(bytes(raw[:60]).decode("utf-8", errors="replace"))


class StreamState:
    """Parses one response body incrementally into `rec` (ttft, itl, text, counts)."""

    def __init__(self, rec: RequestRecord, chat: bool, start: float, max_line: int = MAX_LINE_BYTES) -> None:
        self.rec = rec
        self.chat = chat
        self.start = self.last = start
        self.max_line = max_line
        self.partial = bytearray()        # an incomplete line carried over to the next read
        self.chunks = 0                   # content chunks seen
        self.parts: list[str] = []
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.done = False                 # saw data: [DONE]

    def feed(self, data: bytes, now: float) -> bool:
        """Consume bytes received at `now`; True once `data: [DONE]` has been seen."""
        if self.partial:
            self.partial += data
            if b"\n" not in data:
                self._check_partial()
                return False
            data = bytes(self.partial)
            self.partial = bytearray()
        elif b"\n" not in data:
            self.partial = bytearray(data)
            self._check_partial()
            return False
        lines = data.split(b"\n")
        rest = lines.pop()
        if rest:
            self.partial = bytearray(rest)
            self._check_partial()
        for line in lines:
            if len(line) > self.max_line:
                raise StreamError(f"SSE line of {len(line)} bytes (limit {self.max_line})")
            if line.startswith(b"data:"):   # comments (": keep-alive"), event:, blank lines: skipped
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                    return True
                self._chunk(payload, now)
        return False

    def _check_partial(self) -> None:
        if len(self.partial) > self.max_line:
            raise StreamError(f"SSE line longer than {self.max_line} bytes without a newline")

    def _chunk(self, payload: bytes, now: float) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:   # JSONDecodeError and UnicodeDecodeError
            raise StreamError(f"malformed SSE chunk (not JSON): {_preview(payload)}") from None
        if not isinstance(obj, dict):
            raise StreamError(f"malformed SSE chunk (not an object): {_preview(payload)}")
        if obj.get("usage"):
            self.usage = obj["usage"]
        choices = obj.get("choices")
        if not choices:
            if obj.get("error") is not None:
                err = obj["error"]
                msg = err.get("message", err) if isinstance(err, dict) else err
                raise StreamError(f"stream error: {str(msg)[:200]}")
            return
        c0 = choices[0] if isinstance(choices, list) else None
        if not isinstance(c0, dict):
            raise StreamError(f"malformed SSE chunk (choices): {_preview(payload)}")
        piece = self._piece(c0, payload)
        if piece:
            rec = self.rec
            if self.chunks == 0:
                rec.ttft = now - self.start
            else:
                rec.itl.append(now - self.last)
            self.last = now
            self.chunks += 1
            self.parts.append(piece)
        if c0.get("finish_reason") is not None:
            self.finish_reason = str(c0["finish_reason"])

    def _piece(self, c0: dict, payload: bytes) -> str:
        if self.chat:
            delta = c0.get("delta") or {}
            if not isinstance(delta, dict):
                raise StreamError(f"malformed SSE chunk (delta): {_preview(payload)}")
            # reasoning models stream their reasoning first; vllm bench serve counts it as output
            piece = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
        else:
            piece = c0.get("text")
        if piece is not None and not isinstance(piece, str):
            raise StreamError(f"malformed SSE chunk (text is not a string): {_preview(payload)}")
        return piece or ""

    def finish(self, now: float) -> None:
        """The stream ended here: fill the record, or raise StreamError with the reason."""
        rec = self.rec
        if self.partial.strip():
            raise StreamError(f"stream ended inside a line: {_preview(self.partial)}")
        if not (self.done or self.finish_reason):
            raise StreamError(f"stream ended without [DONE] or finish_reason after {self.chunks} content chunks")
        if self.finish_reason in FAILED_FINISH:
            raise StreamError(f"server ended the request: finish_reason={self.finish_reason}")
        rec.latency = (self.last if self.chunks else now) - self.start
        rec.text = "".join(self.parts)
        rec.output_len = self.chunks
        if self.usage:
            try:
                rec.output_len = int(self.usage.get("completion_tokens") or 0)
                rec.prompt_len = int(self.usage.get("prompt_tokens") or rec.prompt_len)
            except (TypeError, ValueError, AttributeError):
                raise StreamError(f"malformed usage: {str(self.usage)[:120]}") from None
            rec.usage_from_server = True
        if self.chunks == 0 or rec.output_len <= 0:
            raise StreamError("zero-length output")
        rec.success = True
