"""A tiny Hugging Face Hub on 127.0.0.1 for pull tests (stdlib http.server in a thread).

Speaks exactly what huggingface_hub 1.x/2.x calls (read from its source):
GET /api/models/{repo}/revision/{rev}[?blobs=true]  -> {sha, siblings[{rfilename,size,blobId,lfs}]}
GET /api/models/{repo}/tree/{rev}?recursive=...      -> [{type,path,size,oid,lfs{oid,size,pointerSize}}]
HEAD|GET /{repo}/resolve/{rev}/{file}                -> X-Repo-Commit, ETag/X-Linked-Etag,
                                                        X-Linked-Size, Content-Length, Range (206)
Faults for tests: drop_once[file]=n (close after n bytes, first GET only), corrupt_once={file}.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 128, "torch_dtype": "float32",
}
CARD_FACTS = {"architecture": "LlamaForCausalLM", "num_layers": 2, "num_attention_heads": 4,
              "num_kv_heads": 2, "vocab_size": 128, "hidden_size": 64}


def make_model_files(d: Path, config: dict | None = None) -> dict[str, bytes]:
    """Write a tiny valid checkpoint into d and return {relpath: bytes}."""
    import numpy as np
    from safetensors.numpy import save

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((128, 64)).astype("float32"),
               "model.norm.weight": np.ones(64, dtype="float32")}
    files = {
        "config.json": json.dumps(config or LLAMA_CONFIG).encode(),
        "generation_config.json": b'{"eos_token_id": 2}',
        "model.safetensors": save(tensors),
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}}}',
        "tokenizer_config.json": b'{"model_max_length": 512}',
        "pytorch_model.bin": b"duplicate weights that must never be fetched",
        "original/consolidated.pth": b"also a duplicate",
        "README.md": b"# tiny",
    }
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return files


def send_json(h: BaseHTTPRequestHandler, obj, status: int = 200, head: bool = False) -> None:
    """A JSON response from a stdlib handler (HEAD: headers only)."""
    body = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if not head:
        h.wfile.write(body)


class LocalHTTPServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 whose GET/HEAD go to self._handle(handler, head).

    Shared by the Hugging Face and ModelScope fixture hubs; subclasses keep `requests` and answer.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.drop_once: dict[str, int] = {}   # file -> close the first body after n bytes
        hub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:  # pragma: no cover
        raise NotImplementedError

    def send_file(self, h: BaseHTTPRequestHandler, rel: str, data: bytes, head: bool,
                  headers: dict[str, str] | None = None, corrupt: bool = False) -> None:
        """Serve data honouring `Range: bytes=N-` (206 + Content-Range), the way both hubs' file
        endpoints do. Faults: `corrupt` flips the first 16 bytes; self.drop_once[rel] = n closes
        the connection after n body bytes, once (a dropped download the clients must resume)."""
        start, status = 0, 200
        rng = h.headers.get("Range")
        if rng and not head:
            start, status = int(re.match(r"bytes=(\d+)-", rng).group(1)), 206
        body = data[start:]
        if corrupt and not head:
            body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(body)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        cut = self.drop_once.pop(rel, None)
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(body)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FixtureHub(LocalHTTPServer):
    def __init__(self, repo: str, files: dict[str, bytes]) -> None:
        super().__init__()
        self.repo, self.files = repo, files
        self.corrupt_once: set[str] = set()

    def file_gets(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and "/resolve/" in p]

    # ---- responses -------------------------------------------------------------------------
    def _meta(self, rel: str) -> dict:
        data = self.files[rel]
        sha = hashlib.sha256(data).hexdigest()
        lfs = rel.endswith(".safetensors")
        return {"size": len(data), "oid": hashlib.sha1(data).hexdigest(), "sha": sha, "lfs": lfs}

    def _handle(self, h, head: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append(("HEAD" if head else "GET", h.path, dict(h.headers)))
        api = f"/api/models/{self.repo}/"
        if path.startswith(api + "revision/") or path == api.rstrip("/"):
            sib = []
            for rel in self.files:
                m = self._meta(rel)
                sib.append({"rfilename": rel, "size": m["size"], "blobId": m["oid"],
                            **({"lfs": {"size": m["size"], "sha256": m["sha"], "pointerSize": 134}}
                               if m["lfs"] else {})})
            return send_json(h, {"id": self.repo, "modelId": self.repo, "sha": COMMIT, "siblings": sib})
        if path.startswith(api + "tree/"):
            out = []
            for rel in self.files:
                m = self._meta(rel)
                out.append({"type": "file", "path": rel, "size": m["size"], "oid": m["oid"],
                            **({"lfs": {"oid": m["sha"], "size": m["size"], "pointerSize": 134}}
                               if m["lfs"] else {})})
            return send_json(h, out)
        mt = re.match(rf"^/{re.escape(self.repo)}/resolve/([^/]+)/(.+)$", path)
        if not mt or mt.group(2) not in self.files:
            return send_json(h, {"error": "not found"}, 404)
        rel = mt.group(2)
        data, m = self.files[rel], self._meta(rel)
        hdrs = {"X-Repo-Commit": COMMIT, "ETag": f'"{m["sha"] if m["lfs"] else m["oid"]}"'}
        if m["lfs"]:
            hdrs.update({"X-Linked-Etag": f'"{m["sha"]}"', "X-Linked-Size": str(m["size"])})
        corrupt = not head and rel in self.corrupt_once
        if corrupt:
            self.corrupt_once.discard(rel)
        self.send_file(h, rel, data, head, hdrs, corrupt=corrupt)
