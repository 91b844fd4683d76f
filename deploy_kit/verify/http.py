"""Bounded one-shot HTTP exchanges with a server under test (bench's /v1/models, eval, report).

A server under test may misbehave: answer slowly, trickle bytes forever, send a body of any size
or send something that is not JSON. Every exchange here is bounded in time (connect timeout, read
timeout between bytes, and a total deadline checked as bytes arrive) and in memory (a byte cap on
the body), and every failure is a RuntimeFailure with one line naming the URL.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from ..errors import RuntimeFailure
from .auth import auth_headers

MAX_BODY_BYTES = 8 * 2**20   # a /v1/models list or a 32-token answer with top-k logprobs is far below


def fetch(method: str, url: str, *, body: dict | None = None, connect_timeout: float = 10.0,
          read_timeout: float = 60.0, total_timeout: float | None = None,
          max_bytes: int = MAX_BODY_BYTES) -> tuple[int, bytes]:
    """(HTTP status, body bytes). Unreachable, too slow, or over `max_bytes`: RuntimeFailure.

    The whole exchange ends within connect + read timeout (a server that sends one byte just
    inside every read timeout still ends by then), or within total_timeout when that is shorter.
    """
    limit = connect_timeout + read_timeout
    if total_timeout is not None:
        limit = min(limit, total_timeout)
    deadline = time.monotonic() + limit
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    data = bytearray()
    try:
        with httpx.stream(method, url, json=body, timeout=timeout, headers=auth_headers()) as resp:
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise RuntimeFailure(f"{method} {url}: answer larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"{method} {url}: answer not complete after {limit:g} s")
            return resp.status_code, bytes(data)
    except httpx.TimeoutException as exc:
        raise RuntimeFailure(f"{method} {url}: timed out ({type(exc).__name__}; connect timeout "
                             f"{connect_timeout:g} s, read timeout {read_timeout:g} s)",
                             hint="is the server up? see `deploykit status`") from None
    except httpx.HTTPError as exc:
        raise RuntimeFailure(f"cannot reach {url}: {type(exc).__name__}: {exc}",
                             hint="is the server up? see `deploykit status`") from None


def parse_json(data: bytes, what: str) -> Any:
    """JSON from a body, or RuntimeFailure naming `what` and the start of the body."""
    try:
        return json.loads(data)
    except ValueError:
        preview = data[:80].decode("utf-8", errors="replace")
        raise RuntimeFailure(f"{what}: the answer is not JSON: {preview!r}") from None
