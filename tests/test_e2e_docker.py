"""End to end on CPU in real Docker: `deploykit up` of the SmolLM2 demo, its proof and failure paths.

One deployment (tests/conftest_e2e.py `demo`, session scope) serves every test; tests that break
it (kill) run last and bring it back. Failure paths that need their own deployment use a
separate state dir (separate compose project) so they never touch the demo.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest_e2e import CARD, DEMO_SETS, Demo, free_port, record_for, run_cli

pytestmark = pytest.mark.e2e


def _chat(d: Demo, q: str) -> str:
    r = httpx.post(f"{d.url}/v1/chat/completions", timeout=120, json={
        "model": d.model, "messages": [{"role": "user", "content": q}], "max_tokens": 16, "temperature": 0})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def _status(d: Demo, env=None) -> dict:
    res = d.cli("status", "--json", env=env)
    assert res.returncode == 0, res.stderr
    return {row["name"]: row for row in json.loads(res.stdout)}


def _container(d: Demo) -> str:
    return record_for(Path(d.env["DEPLOYKIT_STATE"]), CARD)["container_ids"][0]


def test_up_proves_endpoint(demo):
    assert "ready" in demo.up_output
    listed = [m["id"] for m in httpx.get(f"{demo.url}/v1/models", timeout=10).json()["data"]]
    assert demo.model in listed
    assert "paris" in _chat(demo, "What is the capital of France?").lower()
    r = httpx.post(f"{demo.url}/v1/completions", timeout=120, json={
        "model": demo.model, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["text"].strip()
    smoke = json.loads((Path(demo.env["DEPLOYKIT_STATE"]) / "runs" / demo.name / "smoke.json").read_text())
    assert smoke["ok"] is True and smoke["model"] == demo.model
    assert (demo.weights_dir / "config.json").is_file()


def test_status_logs_smoke(demo):
    row = _status(demo)[demo.name]
    assert row["state"] == "running" and row["healthy"] is True and row["port"] == demo.port
    logs = demo.cli("logs", demo.name)
    assert logs.returncode == 0 and ("Application startup complete" in logs.stdout
                                     or "Uvicorn running" in logs.stdout)
    sm = demo.cli("smoke", demo.name, timeout=300)
    assert sm.returncode == 0, sm.stdout + sm.stderr
    assert "ok prompt[0]" in sm.stdout


def test_second_up_is_a_noop(demo):
    cid = _container(demo)
    t0 = time.monotonic()
    res = demo.cli("up", CARD, "--target", "cpu", "--port", str(demo.port), *DEMO_SETS)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing to do" in res.stdout and "building image" not in res.stdout
    assert _container(demo) == cid and took < 120


def test_image_keeps_build_material_out(demo):
    rec = record_for(Path(demo.env["DEPLOYKIT_STATE"]), CARD)
    env = subprocess.run(["docker", "image", "inspect", rec["image"], "--format", "{{json .Config.Env}}"],
                         capture_output=True, text=True, check=True).stdout
    for bad in ("PIP_CERT", "PIP_INDEX_URL", "PIP_FIND_LINKS", "PROXY"):
        assert bad not in env
    probe = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", rec["image"], "-c",
                            "test ! -e /build && python -c 'import torch; print(torch.__version__)'"
                            # vLLM's bytecode compiled at build time (compileall of vllm/), not on
                            # each container's first start: a module only the engine worker imports
                            " && ls /opt/venv/lib/python3*/site-packages/vllm/v1/worker/__pycache__/cpu_worker.*.pyc"],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0 and "+cpu" in probe.stdout, probe.stderr[-1000:]


def test_refused_up_leaves_running_deployment_alone(demo):
    """Port held by another record in the ledger: exit 3, and the demo keeps serving."""
    other = free_port()
    dep_dir = Path(demo.env["DEPLOYKIT_STATE"]) / "deployments"
    (dep_dir / "holder.json").write_text(json.dumps({"name": "holder", "card_name": "x", "target": "cpu",
                                                      "port": other}))
    try:
        res = demo.cli("up", CARD, "--target", "cpu", "--port", str(other))
        assert res.returncode == 3, res.stdout + res.stderr
        # the planner (busy_ports from the ledger) or the runtime's own check names the holder
        assert f"port {other} is taken by deployment holder" in res.stderr, res.stderr
    finally:
        (dep_dir / "holder.json").unlink()
    assert _status(demo)[demo.name]["healthy"] is True


@pytest.fixture()
def other_env(e2e_env, tmp_path):
    env = dict(e2e_env)
    env["DEPLOYKIT_STATE"] = str(tmp_path / "state2")
    return env


def test_port_in_use_on_host(demo, other_env):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        res = run_cli("up", CARD, "--target", "cpu", "--port", str(port), env=other_env)
    finally:
        s.close()
    assert res.returncode == 3, res.stderr
    assert f"port {port} is taken by another process on this host" in res.stderr, res.stderr
    assert not list((Path(other_env["DEPLOYKIT_STATE"]) / "deployments").glob("*.json"))


def test_same_port_as_running_demo_is_refused(demo, other_env):
    """A second deployment (own state dir) asking for the demo's port: refused before any container."""
    res = run_cli("up", CARD, "--target", "cpu", "--port", str(demo.port), env=other_env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert _status(demo)[demo.name]["healthy"] is True


def test_killed_server_is_detected_and_recovered(demo):
    """Kill the server mid-session, see status/smoke notice, then `up` recovers it (the demo is
    healthy again for the tests after this one)."""
    cid = _container(demo)
    subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
    row = _status(demo)[demo.name]
    assert row["state"] == "exited" and row["healthy"] is False
    sm = demo.cli("smoke", demo.name)
    assert sm.returncode == 5, sm.stdout + sm.stderr
    subprocess.run(["docker", "rm", "-f", cid], check=True, capture_output=True)
    row = _status(demo)[demo.name]
    assert row["state"] == "missing" and "removed outside deploykit" in row["problem"]
    res = demo.cli("up", CARD, "--target", "cpu", "--port", str(demo.port), *DEMO_SETS, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "paris" in _chat(demo, "What is the capital of France?").lower()


def test_bad_vllm_flag_exits_4_keeps_the_log_and_triage_quotes_it(other_env):
    """Issue 12/14: a failed `up` is exit 4 with the container's own line, holds nothing, keeps the
    container's full log; `triage NAME` finds it through the one compose contract and quotes the
    line that shows the cause (here: vLLM refusing a flag). One failed start serves both checks."""
    port = free_port()
    t0 = time.monotonic()
    res = run_cli("up", CARD, "--target", "cpu", "--port", str(port),
                  "--set", "serve.extra_args=[--bogus-flag-for-test]", env=other_env, timeout=1500)
    assert res.returncode == 4, res.stdout + res.stderr
    assert "vLLM's argument parser refused a flag" in res.stderr and "--bogus-flag-for-test" in res.stderr
    assert "container exited" in res.stderr
    # measured 13-29 s (vLLM imports, then argparse refuses); 300 s is ~10x that
    assert time.monotonic() - t0 < 300
    assert not list((Path(other_env["DEPLOYKIT_STATE"]) / "deployments").glob("*.json"))  # nothing held
    kept = Path(other_env["DEPLOYKIT_STATE"]) / "runs" / CARD / "failure.log"
    assert "unrecognized arguments: --bogus-flag-for-test" in kept.read_text()
    tri = run_cli("triage", CARD, env=other_env, timeout=120)
    assert tri.returncode == 0, tri.stdout + tri.stderr
    assert tri.stdout.startswith("vLLM rejected a command-line argument (bad_argument)")
    quoted = [ln for ln in tri.stdout.splitlines() if ln.startswith("  | ")]
    assert quoted and quoted[0].endswith("error: unrecognized arguments: --bogus-flag-for-test"), tri.stdout
    assert "trust_remote_code" not in tri.stdout
    js = json.loads(run_cli("triage", CARD, "--json", env=other_env, timeout=120).stdout)
    # the watchdog's own "engine exited with code 2" line is a lower-priority match of the same failure
    assert js["signature"] == "bad_argument" and js["also_matched"] == ["engine_exited"]
