"""Mock OpenAI-compatible streaming server on 127.0.0.1 (asyncio, no dependencies).

Known delays: the first content chunk is sent `ttft_s` after the request is read, each further
chunk `itl_s` after the previous one, so a correct client measures TTFT = ttft_s and
TPOT = ITL = itl_s. Every streamed request is also logged with the server's own clock
(`time.perf_counter`, CLOCK_MONOTONIC on Linux, so it is comparable with the client's in another
process): when its body was read and when each content chunk was written; GET /mock/log returns
that log, so tests can compare the client's metrics with what the server really did even when a
loaded host makes the sleeps late. The last content chunk carries finish_reason "length" (as
vLLM's does), then the usage chunk, then `data: [DONE]`.

Error injection via `error`: "http500", "midstream" (error event after 2 chunks), "empty" (no
content chunks), "drop" (connection closed mid-stream). Misbehaving servers (bench must stay
bounded and count honestly): "keepalive" (only `: keep-alive` comments, forever), "endless_line"
(one `data:` line that never ends), "silence" (reads the request, never answers), "malformed"
(a chunk that is not JSON after 2 chunks), "no_done" (the body ends without [DONE] or a
finish_reason), "finish_only" (finish_reason but no [DONE]: a proper end), "abort" (finish_reason
"abort"), "models_garbage" / "models_shape" / "models_endless" (GET /v1/models answers non-JSON,
a list without ids, or a body that never ends). `api_key`: every route but /mock/log answers 401
without `Authorization: Bearer <api_key>`; the headers of every request are kept in `headers`.
Non-streaming /v1/completions returns `tokens` with per-token top_logprobs (for eval tests).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field


@dataclass
class MockConfig:
    model: str = "mock-model"
    ttft_s: float = 0.05
    itl_s: float = 0.01
    error: str = ""
    usage: bool = True
    api_key: str = ""
    # eval: fixed greedy output and its top-k alternatives per position
    tokens: list[str] = field(default_factory=lambda: [" Paris", ".", " It", " is"])
    alternatives: dict[int, str] = field(default_factory=dict)


class MockServer:
    def __init__(self, cfg: MockConfig | None = None) -> None:
        self.cfg = cfg or MockConfig()
        self.port = 0
        self.requests: list[dict] = []
        self.headers: list[dict] = []   # lower-cased request headers, one dict per request
        self.log: list[dict] = []       # streamed requests: {"prompt", "t_read", "sent": [...]}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "MockServer":
        threading.Thread(target=self._run, daemon=True).start()
        # A loaded 2-core host can take seconds to start a process's event loop; never hand out
        # port 0 (every request would then be "connection refused").
        if not self._ready.wait(60) or not self.port:
            raise RuntimeError("mock OpenAI server did not start within 60 s")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop:
            self._loop.call_soon_threadsafe(self._server.close)


    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:   # keep-alive loop
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdrs = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:] if ":" in h)}
                body = await reader.readexactly(int(hdrs.get("content-length", 0)))
                t_read = time.perf_counter()
                req = json.loads(body) if body else {}
                self.requests.append(req)
                self.headers.append(hdrs)
                if self.cfg.api_key and path != "/mock/log" and \
                        hdrs.get("authorization") != f"Bearer {self.cfg.api_key}":
                    self._plain(writer, 401, {"error": {"message": "Unauthorized"}})
                    continue
                if not await self._respond(reader, writer, method, path, req, t_read):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _plain(writer, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)

    async def _models(self, writer) -> bool:
        cfg = self.cfg
        if cfg.error in ("models_garbage", "models_shape"):
            data = b"<html>oops" if cfg.error == "models_garbage" else b'{"data": [1, 2]}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(data) + data)
            return True
        if cfg.error == "models_endless":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b'{"data": [' + b" " * 65536
            while not writer.is_closing():
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            return False
        self._plain(writer, 200, {"object": "list", "data": [{"id": cfg.model}]})
        return True

    async def _respond(self, reader, writer, method, path, req, t_read) -> bool:
        cfg = self.cfg
        if method == "GET" and path == "/mock/log":
            self._plain(writer, 200, {"log": self.log})
            return True
        if method == "GET" and path == "/v1/models":
            return await self._models(writer)
        if method == "GET" and path == "/version":
            self._plain(writer, 200, {"version": "mock-0.1"})
            return True
        if cfg.error == "http500":
            self._plain(writer, 500, {"error": {"message": "injected"}})
            return True
        if req.get("model") != cfg.model:
            self._plain(writer, 404, {"error": {"message": f"model {req.get('model')} not found"}})
            return True
        chat = path.endswith("/chat/completions")
        n = int(req.get("max_tokens") or 16)
        if not req.get("stream"):
            body = self._nonstream(req, n)
            if chat:   # chat.completion shape (what proxies such as LiteLLM parse)
                ch = body["choices"][0]
                body = {"id": "x", "object": "chat.completion", "model": cfg.model, "usage": body["usage"],
                        "choices": [{"index": 0, "finish_reason": ch["finish_reason"],
                                     "message": {"role": "assistant", "content": ch["text"]}}]}
            self._plain(writer, 200, body)
            return True
        if cfg.error == "silence":       # read the request, never answer; end when the client goes
            await reader.read()
            return False
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        if cfg.error in ("keepalive", "endless_line"):
            await self._misbehave(writer)
            return False
        return await self._stream(writer, req, chat, n, t_read)

    async def _misbehave(self, writer) -> None:
        """Send forever (until the client closes): comments only, or one line with no newline."""
        def raw(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        if self.cfg.error == "endless_line":
            raw(b'data: {"choices": [{"text": "')
        while not writer.is_closing():
            if self.cfg.error == "keepalive":
                raw(b": keep-alive\n\n")
                await asyncio.sleep(0.02)
            else:
                raw(b"a" * 65536)
            await writer.drain()

    async def _stream(self, writer, req, chat, n, t_read) -> bool:
        cfg = self.cfg

        def send(obj) -> None:
            data = (f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n").encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        n_sent = 0
        prompt = req["messages"][-1]["content"] if chat else req.get("prompt")
        entry = {"prompt": prompt, "t_read": t_read, "sent": []}
        self.log.append(entry)
        for i in range(0 if cfg.error == "empty" else n):
            # absolute schedule: chunk i is due at t_read + ttft + i*itl (no drift)
            due = t_read + cfg.ttft_s + i * cfg.itl_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if i == 2 and cfg.error in ("midstream", "malformed", "drop"):
                if cfg.error == "drop":
                    await writer.drain()
                    return False
                send({"error": {"message": "injected mid-stream error", "code": 500}}
                     if cfg.error == "midstream" else '{"choices": [{"text": "t2"')
                break
            piece = f" t{i}"
            ch: dict = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            if cfg.error == "abort" and i == 1:
                ch["finish_reason"] = "abort"
            elif i == n - 1 and cfg.error != "no_done":
                ch["finish_reason"] = "length"
            # stamped just before write() hands the chunk to the socket, so a client that
            # receives it can never see it "before" it was sent on the shared clock
            entry["sent"].append(time.perf_counter())
            send({"id": "x", "object": "chunk", "model": cfg.model, "choices": [ch]})
            await writer.drain()
            n_sent += 1
            if "finish_reason" in ch:
                break
        if cfg.usage and req.get("stream_options", {}).get("include_usage"):
            send({"id": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n_sent,
                                                     "total_tokens": 7 + n_sent}})
        if cfg.error not in ("no_done", "finish_only"):
            send("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def _nonstream(self, req: dict, n: int) -> dict:
        toks = self.cfg.tokens[:n]
        stops = req.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        for i in range(len(toks)):   # like vLLM: output ends before the first stop string
            text = "".join(toks[:i + 1])
            cut = min((text.find(st) for st in stops if st in text), default=-1)
            if cut >= 0:
                toks = toks[:i] + ([text[len("".join(toks[:i])):cut]] if cut > len("".join(toks[:i])) else [])
                break
        k = int(req.get("logprobs") or 0)
        top = []
        for i, t in enumerate(toks):
            d = {t: -0.1}
            if i in self.cfg.alternatives:
                d[self.cfg.alternatives[i]] = -2.5
            top.append(dict(list(d.items())[:max(k, 1)]))
        return {"id": "x", "object": "text_completion", "model": self.cfg.model,
                "choices": [{"index": 0, "text": "".join(toks), "finish_reason": "length",
                             "logprobs": {"tokens": toks, "token_logprobs": [-0.1] * len(toks),
                                          "top_logprobs": top}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": len(toks)}}


class MockProcess:
    """The same server in a child process, so it does not share the client's GIL/event loop
    (needed at high concurrency: in-process, 64 streams' server work delays the client)."""

    def __init__(self, cfg: MockConfig | None = None) -> None:
        self.cfg = cfg or MockConfig()
        self.proc = None
        self.url = ""

    def __enter__(self) -> "MockProcess":
        import subprocess
        import sys
        from dataclasses import asdict

        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(asdict(self.cfg))],
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        return self

    def server_log(self) -> list[dict]:
        import urllib.request

        # A private opener with no proxy: urlopen's global opener caches the proxies of the
        # environment it first saw (a test that set HTTP_PROXY would route this through it).
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(self.url + "/mock/log", timeout=10) as r:
            return json.loads(r.read())["log"]

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


if __name__ == "__main__":  # python tests/mock_openai.py '{"ttft_s": 0.1, "itl_s": 0.02}'
    import sys

    raw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    raw["alternatives"] = {int(k): v for k, v in raw.get("alternatives", {}).items()}
    c = MockConfig(**raw)
    with MockServer(c) as s:
        print(s.url, flush=True)
        threading.Event().wait()
