"""Smoke test a running OpenAI-compatible server with real greedy generations.

Proof, not a ping: the served model name must be listed by /v1/models, and every card prompt
must produce text matching its regex through the API it names (chat or completions; images are
sent as base64 data URLs). A server whose /v1/models answers while the engine is dead fails
here. Every request and response is kept in ``<run dir>/smoke.json`` for the report.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
import time
from pathlib import Path

import httpx

from ..errors import BadInput, VerificationFailed

DEFAULT_PROMPTS = [{"prompt": "What is the capital of France? Answer in one word.",
                    "expect": "(?i)paris", "api": "chat", "max_tokens": 16}]


def prompts_of(smoke: list[dict] | None) -> list[dict]:
    """The plan's smoke prompts (plan.smoke), or the default Paris prompt when the card has none."""
    return [dict(p) for p in smoke] if smoke else list(DEFAULT_PROMPTS)


def image_data_url(path: str, search: list[Path] | None = None) -> str:
    cands = [Path(path)] + [d / path for d in (search or [])]
    for c in cands:
        if c.is_file():
            mime = mimetypes.guess_type(c.name)[0] or "image/png"
            return f"data:{mime};base64," + base64.b64encode(c.read_bytes()).decode()
    raise BadInput(f"smoke image not found: {path}", field="smoke.prompts.image")


def _request(p: dict, model: str, search: list[Path]) -> tuple[str, dict]:
    max_tokens = int(p.get("max_tokens") or 32)
    if (p.get("api") or "chat") == "completions":
        if p.get("image"):
            raise BadInput("an image prompt needs api: chat", field="smoke.prompts.api")
        return "/v1/completions", {"model": model, "prompt": p["prompt"], "max_tokens": max_tokens,
                                   "temperature": 0.0}
    content: object = p["prompt"]
    if p.get("image"):
        content = [{"type": "image_url", "image_url": {"url": image_data_url(p["image"], search)}},
                   {"type": "text", "text": p["prompt"]}]
    return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": content}],
                                    "max_tokens": max_tokens, "temperature": 0.0}


def _text(path: str, body: dict) -> str:
    choice = (body.get("choices") or [{}])[0]
    if path.endswith("/chat/completions"):
        return (choice.get("message") or {}).get("content") or ""
    return choice.get("text") or ""


def _short(v, n=2000):
    s = json.dumps(v) if not isinstance(v, str) else v
    if len(s) <= n:
        return v
    return s[:n] + f"... ({len(s)} chars)"


def run_smoke(base_url: str, model: str, smoke: list[dict] | None = None, out_dir: Path | None = None,
              search: list[Path] | None = None, timeout: float = 120.0) -> list[dict]:
    """Run every prompt; raise VerificationFailed (exit 5) on the first failure after running all."""
    search = search or []
    results: list[dict] = []
    failures: list[str] = []
    from ..verify.auth import auth_headers

    with httpx.Client(base_url=base_url, timeout=timeout, headers=auth_headers()) as http:
        try:
            r = http.get("/v1/models")
            ids = [d.get("id") for d in r.json().get("data", [])] if r.status_code == 200 else []
        except (httpx.HTTPError, ValueError) as exc:
            ids, r = [], None
            failures.append(f"/v1/models: {type(exc).__name__}: {exc}")
        results.append({"check": "models", "status": getattr(r, "status_code", None), "models": ids,
                        "ok": model in ids})
        if model not in ids and not failures:
            failures.append(f"/v1/models lists {ids}, not the served name {model!r}")
        for i, p in enumerate(prompts_of(smoke)):
            path, req = _request(p, model, search)
            rec: dict = {"check": f"prompt[{i}]", "api": path, "expect": p.get("expect"),
                         "request": _short(req)}
            t0 = time.monotonic()
            try:
                resp = http.post(path, json=req)
                rec["status"] = resp.status_code
                body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
                rec["response"] = body or resp.text[:2000]
            except (httpx.HTTPError, ValueError) as exc:
                rec["status"], rec["error"] = None, f"{type(exc).__name__}: {exc}"
                body = {}
            rec["seconds"] = round(time.monotonic() - t0, 3)
            text = _text(path, body) if rec.get("status") == 200 else ""
            rec["text"] = text
            expect = p.get("expect") or r".\S"
            rec["ok"] = rec.get("status") == 200 and bool(re.search(expect, text))
            if not rec["ok"]:
                why = rec.get("error") or (f"HTTP {rec.get('status')}" if rec.get("status") != 200
                                           else f"answer {text!r} does not match /{expect}/")
                failures.append(f"prompt[{i}] ({path}): {why}")
            results.append(rec)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "smoke.json").write_text(json.dumps({"base_url": base_url, "model": model,
                                                        "ok": not failures, "failures": failures,
                                                        "results": results}, indent=2))
    if failures:
        where = f"; request/response in {out_dir / 'smoke.json'}" if out_dir else ""
        raise VerificationFailed("smoke test failed: " + "; ".join(failures) + where)
    return results
