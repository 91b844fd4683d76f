"""The stack's front door is the real LiteLLM proxy running deploykit's rendered config.

LiteLLM lives in its own venv (.venv-litellm, made by scripts/setup.sh: its pins conflict with
deploykit's). The rendered litellm-config.yaml routes by served model name to compose service names;
here each service name is pointed at a mock OpenAI server on 127.0.0.1 instead, and requests go
through the proxy: each model name must reach its own backend, and only with the master key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deploy_kit.stack.compose_render import render_stack
from deploy_kit.stack.stackfile import apply_sets, load_stack, plan_stack
from tests.conftest import REPO, require
from tests.conftest_e2e import free_port
from tests.mock_openai import MockConfig, MockServer

pytestmark = pytest.mark.integration

REV = "0123456789abcdef0123456789abcdef01234567"
KEY = "sk-deploykit-test-0123456789"


def _litellm() -> str | None:
    exe = os.environ.get("DEPLOYKIT_LITELLM") or str(REPO / ".venv-litellm" / "bin" / "litellm")
    return exe if Path(exe).is_file() else shutil.which("litellm")


def test_rendered_front_door_routes_by_model_name(tmp_path, monkeypatch):
    exe = _litellm()
    require(exe is not None, "LiteLLM proxy missing: bash scripts/setup.sh makes .venv-litellm")
    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))
    st = apply_sets(load_stack(REPO / "compose" / "atlas-a2-mixed.yaml"),
                    [f"{d}:model.revision={REV}" for d in ("internlm", "internvl")])
    plans = plan_stack(st)
    render_stack(st.name, plans, tmp_path / "out", front_door=st.front_door)
    cfg = yaml.safe_load((tmp_path / "out" / "litellm-config.yaml").read_text())
    names = [r["model_name"] for r in cfg["model_list"]]
    assert sorted(names) == sorted(p.served_model_name for p in plans) and len(set(names)) == 3

    mocks = {n: MockServer(MockConfig(model=n, tokens=[f" from-{n}"])) for n in names}
    for m in mocks.values():
        m.__enter__()
    try:
        for r in cfg["model_list"]:   # compose service name -> the mock standing in for it
            svc = next(p for p in plans if p.served_model_name == r["model_name"])
            assert r["litellm_params"]["api_base"] == f"http://{svc.name}:{svc.container_port}/v1"
            r["litellm_params"]["api_base"] = mocks[r["model_name"]].url + "/v1"
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        port = free_port()
        # LITELLM_LOCAL_MODEL_COST_MAP: no fetch of the cost map from GitHub at start
        env = dict(os.environ, LITELLM_MASTER_KEY=KEY, LITELLM_LOCAL_MODEL_COST_MAP="True", NO_COLOR="1")
        log = (tmp_path / "litellm.log").open("w")
        proc = subprocess.Popen([exe, "--config", str(tmp_path / "cfg.yaml"), "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / "litellm.log").read_text()[-3000:]
                try:
                    if httpx.get(base + "/health/liveliness", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            auth = {"Authorization": f"Bearer {KEY}"}
            for n in names:
                r = httpx.post(base + "/v1/chat/completions", headers=auth, timeout=60, json={
                    "model": n, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == f" from-{n}"
            for n, m in mocks.items():   # each backend saw only its own model's requests
                got = [q.get("model") for q in m.requests if q.get("messages")]
                assert got == [n], (n, got)
            listed = httpx.get(base + "/v1/models", headers=auth, timeout=30).json()
            assert sorted(x["id"] for x in listed["data"]) == sorted(names)
            # no key: refused; unknown model: refused, never routed to some backend
            r = httpx.post(base + "/v1/chat/completions", timeout=30, json={
                "model": names[0], "messages": [{"role": "user", "content": "hi"}]})
            # (401 from the image; a pip-installed proxy without `prisma` turns the auth error into
            # a 500 in its DB error handler: still refused, and never routed, checked below)
            assert r.status_code in (401, 500), r.text
            r = httpx.post(base + "/v1/chat/completions", headers=auth, timeout=30, json={
                "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code >= 400 and "no-such-model" in r.text
            assert all(len([q for q in m.requests if q.get("messages")]) == 1 for m in mocks.values())
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        for m in mocks.values():
            m.__exit__(None, None, None)
