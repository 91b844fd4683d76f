"""A tiny Hugging Face Hub on 127.0.0.1 for pull tests (stdlib http.server in a thread).

Speaks exactly what huggingface_hub 1.x/2.x calls (read from its source):
GET /api/models/{repo}/revision/{rev}[?blobs=true]  -> {sha, siblings[{rfilename,size,blobId,lfs}]}
GET /api/models/{repo}/tree/{rev}?recursive=...      -> [{type,path,size,oid,lfs{oid,size,pointerSize}}]
HEAD|GET /{repo}/resolve/{rev}/{file}                -> X-Repo-Commit, ETag/X-Linked-Etag,
                                                        X-Linked-Size, Content-Length, Range (206)
History: `push(files)` moves main to a new commit; older commits stay fetchable by sha, and
an unknown revision answers 404 with X-Error-Code: RevisionNotFound, as the real hub does.
Faults for tests: drop_once[file]=n (close after n bytes, first GET only), corrupt_once={file},
stall[file]=n (send n bytes, then hold the connection until `release()`: a download to kill;
both hubs), listing_body=bytes (the model_info answer replaced by these bytes: a garbage listing).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

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


def write_card(path: Path, *, source: str = "huggingface", repo: str = "org/tiny", name: str = "tiny",
               trust_remote_code: bool = False, revision: str | None = None) -> Path:
    """A card for the tiny fixture model (its facts are CARD_FACTS), for CLI tests."""
    rev = f"\n  revision: {revision}" if revision else ""
    path.write_text(f"""name: {name}
description: a tiny model served by a fixture hub
model:
  id: {repo}
  source: {source}{rev}
  trust_remote_code: {str(trust_remote_code).lower()}
  architecture: LlamaForCausalLM
  params_b: 0.001
  dtype: float32
  context_length: 512
  modalities: [text]
  weights_format: safetensors
  config: {{num_layers: 2, hidden_size: 64, num_attention_heads: 4, num_kv_heads: 2, head_dim: 16,
            vocab_size: 128}}
serve:
  max_model_len: 512
smoke:
  prompts:
    - {{prompt: "hi", expect: "(?i).", api: chat, max_tokens: 4}}
sources:
  - {{fact: "test fixture", url: "https://example.invalid/"}}
""")
    return path


def send_json(h: BaseHTTPRequestHandler, obj, status: int = 200, head: bool = False) -> None:
    """A JSON response from a stdlib handler (HEAD: headers only)."""
    send_body(h, json.dumps(obj).encode(), status, head)


def send_body(h: BaseHTTPRequestHandler, body: bytes, status: int = 200, head: bool = False) -> None:
    """Raw bytes served as JSON (also a deliberately broken listing) from a stdlib handler."""
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
        self.stall: dict[str, int] = {}       # file -> send n bytes, then hold until release()
        self._released = threading.Event()
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
        rng = re.match(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if rng and not head:
            start, status = int(rng.group(1)), 206
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
        held = self.stall.pop(rel, None)
        if held is not None:  # a download to kill mid-file: bytes sent, the rest never comes
            h.wfile.write(body[:held])
            h.wfile.flush()
            self._released.wait(120)
            h.close_connection = True
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

    def release(self) -> None:
        """Let stalled responses end (their connections close)."""
        self._released.set()

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


class FixtureHub(LocalHTTPServer):
    def __init__(self, repo: str, files: dict[str, bytes]) -> None:
        super().__init__()
        self.repo, self.files = repo, files
        self.corrupt_once: set[str] = set()
        self.head = COMMIT                       # what main resolves to
        self.history: dict[str, dict[str, bytes]] = {}  # older commits: sha -> files
        self.listing_body: bytes | None = None

    def push(self, files: dict[str, bytes]) -> str:
        """A new commit on main holding `files`; returns its sha."""
        self.history[self.head] = dict(self.files)
        self.files = dict(files)
        self.head = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        return self.head

    def _at(self, rev: str) -> tuple[str, dict[str, bytes]] | None:
        if rev in ("main", self.head):
            return self.head, self.files
        if rev in self.history:
            return rev, self.history[rev]
        return None

    def _revision_not_found(self, h) -> None:
        body = b'{"error": "Invalid rev id"}'
        h.send_response(404)
        h.send_header("X-Error-Code", "RevisionNotFound")
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def file_gets(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and "/resolve/" in p]

    # ---- responses -------------------------------------------------------------------------
    def _meta(self, data: bytes, rel: str) -> dict:
        sha = hashlib.sha256(data).hexdigest()
        lfs = rel.endswith(".safetensors")
        return {"size": len(data), "oid": hashlib.sha1(data).hexdigest(), "sha": sha, "lfs": lfs}

    def _info(self, h, rev: str) -> None:
        at = self._at(rev)
        if at is None:
            return self._revision_not_found(h)
        if self.listing_body is not None:
            return send_body(h, self.listing_body)
        sha, files = at
        sib = []
        for rel, data in files.items():
            m = self._meta(data, rel)
            sib.append({"rfilename": rel, "size": m["size"], "blobId": m["oid"],
                        **({"lfs": {"size": m["size"], "sha256": m["sha"], "pointerSize": 134}}
                           if m["lfs"] else {})})
        return send_json(h, {"id": self.repo, "modelId": self.repo, "sha": sha, "siblings": sib})

    def _handle(self, h, head: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append(("HEAD" if head else "GET", h.path, dict(h.headers)))
        api = f"/api/models/{self.repo}"
        if path == api:
            return self._info(h, "main")
        if path.startswith(api + "/revision/"):
            return self._info(h, path[len(api + "/revision/"):])
        if path.startswith(api + "/tree/"):
            out = []
            for rel, data in self.files.items():
                m = self._meta(data, rel)
                out.append({"type": "file", "path": rel, "size": m["size"], "oid": m["oid"],
                            **({"lfs": {"oid": m["sha"], "size": m["size"], "pointerSize": 134}}
                               if m["lfs"] else {})})
            return send_json(h, out)
        mt = re.match(rf"^/{re.escape(self.repo)}/resolve/([^/]+)/(.+)$", path)
        at = self._at(mt.group(1)) if mt else None
        if not mt or at is None or mt.group(2) not in at[1]:
            return send_json(h, {"error": "not found"}, 404)
        return self._resolve(h, mt.group(2), at[0], at[1][mt.group(2)], head)

    def _resolve(self, h, rel: str, sha: str, data: bytes, head: bool) -> None:
        m = self._meta(data, rel)
        hdrs = {"X-Repo-Commit": sha, "ETag": f'"{m["sha"] if m["lfs"] else m["oid"]}"'}
        if m["lfs"]:
            hdrs.update({"X-Linked-Etag": f'"{m["sha"]}"', "X-Linked-Size": str(m["size"])})
        corrupt = not head and rel in self.corrupt_once
        if corrupt:
            self.corrupt_once.discard(rel)
        self.send_file(h, rel, data, head, hdrs, corrupt=corrupt)


@contextmanager
def serve_hf(tmp_path: Path, monkeypatch, repo: str = "org/tiny",
             extra: dict[str, bytes] | None = None) -> Iterator[FixtureHub]:
    """The fixture hub with the real huggingface_hub pointed at it: isolated HF_HOME and
    DEPLOYKIT_CACHE under tmp_path, a token in the environment, telemetry and Xet off."""
    from tests.conftest import require

    try:
        import huggingface_hub.constants as C
    except ImportError:
        require(False, "huggingface_hub not installed (pip install deploykit[hub])")
    files = make_model_files(tmp_path / "src")
    files.update(extra or {})
    with FixtureHub(repo, files) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("DEPLOYKIT_REQUIRE_PINNED", raising=False)
        for k, v in {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                     "HF_HOME": str(tmp_path / "hfhome"), "HF_TOKEN": "secret-xyz",
                     "DEPLOYKIT_CACHE": str(tmp_path / "cache")}.items():
            monkeypatch.setenv(k, v)
        yield h
