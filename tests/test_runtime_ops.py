"""After `up`: status (restart count, last failure), down --dry-run, status --metrics, triage of a
kept log, the public stage() API. Docker is replaced by recorders; everything else is real."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy_kit.runtime import dockerapi, ops, state

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).parent / "fixtures"


class _Container:
    def __init__(self, cid: str, restarts: int = 0, status: str = "running"):
        self.id = self.short_id = cid
        self.name, self.status = f"c-{cid}", status
        self.attrs = {"RestartCount": restarts}


@pytest.fixture()
def deployed(isolated_home, monkeypatch):
    """A record for 'demo' whose compose project Docker reports with one container."""
    rec = state.Record(name="demo", card_name="smollm2-135m-instruct", target="cpu", port=18555,
                       project="deploykit-demo-abc123", host_devices=[], served_model_name="demo",
                       render_dir="/nonexistent")
    state.save(rec)
    box = {"containers": [_Container("c1", restarts=2)]}
    monkeypatch.setattr(dockerapi, "project_containers", lambda project: box["containers"]
                        if project == "deploykit-demo-abc123" else [])
    log = (FIXTURES / "logs" / "port_in_use.log").read_bytes()
    monkeypatch.setattr(dockerapi, "log_bytes", lambda cid, cap: log[-cap:])
    return box


def test_status_shows_restarts_and_the_last_failure_line(deployed):
    [row] = ops.status()
    assert row["restarts"] == 2 and row["containers"][0]["restarts"] == 2
    assert row["last_failure"].startswith("Port already in use: ")
    matched = row["last_failure"].removeprefix("Port already in use: ")
    assert matched in (FIXTURES / "logs" / "port_in_use.log").read_text()
    assert row["state"] == "running" and row["healthy"] is False   # nothing answers on 18555


def test_status_without_restarts_names_no_failure(deployed):
    deployed["containers"] = [_Container("c1")]
    [row] = ops.status()
    assert row["restarts"] == 0 and "last_failure" not in row


def test_down_dry_run_lists_and_removes_nothing(deployed, capsys):
    from deploy_kit.cli import main

    assert main(["down", "demo", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would remove demo:"
    assert out[1] == "  container c-c1 (c1, running)"
    assert out[2] == "  compose project deploykit-demo-abc123 (/nonexistent/compose.yaml)"
    assert out[3].startswith("  record ") and out[3].endswith("(frees port 18555, devices -)")
    assert state.load("demo") is not None


def test_triage_name_reads_the_live_container(deployed, capsys):
    from deploy_kit.cli import main

    assert main(["triage", "demo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signature"] == "port_in_use"


def test_triage_log_is_bounded_and_printed_clean(tmp_path, capsys):
    from deploy_kit.cli import main

    assert main(["triage", "--log", "/dev/zero"]) == 0    # reads at most LOG_CAP_BYTES, never all of it
    assert capsys.readouterr().out.startswith("unknown cause: no known signature matched (/dev/zero)")
    evil = tmp_path / "evil.log"
    evil.write_text("\x1b]0;pwned\x07OSError: [Errno 98] Address \x1b[31malready in use\x1b[0m\n")
    assert main(["triage", "--log", str(evil)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "  | OSError: [Errno 98] Address already in use" in out.splitlines()


def test_kept_failure_log_keeps_the_end_when_huge(isolated_home, tmp_path):
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * (ops.LOG_CAP_BYTES + 10) + b"\nthe last line\n")
    text = ops.read_capped(big)
    assert len(text) == ops.LOG_CAP_BYTES and text.endswith("the last line\n")


def test_status_metrics_reads_each_deployment(isolated_home, capsys):
    from deploy_kit.cli import main

    body = (FIXTURES / "metrics" / "vllm-cpu-smollm2.txt").read_bytes()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        state.save(state.Record(name="demo", card_name="x", target="cpu", port=srv.server_address[1]))
        assert main(["status", "--metrics", "--json"]) == 0
        snap = json.loads(capsys.readouterr().out)["demo"]
        assert snap["ok"] is True and snap["url"] == f"http://127.0.0.1:{srv.server_address[1]}"
        assert snap["running"] is not None and "histograms" not in snap
    finally:
        srv.shutdown()
        srv.server_close()


def test_stage_dry_run_is_public_and_builds_nothing(isolated_home):
    from deploy_kit.planner import plan
    from deploy_kit.runtime.stage import Staged, stage

    p = plan("smollm2-135m-instruct", target="cpu", port=18556, port_probe=None)
    said: list[str] = []
    s = stage(p, said.append, dry_run=True)
    try:
        assert isinstance(s, Staged) and s.image_id == "" and not s.built
        assert s.image.startswith("deploykit/vllm-cpu:ctx-") and s.image.endswith(s.context_hash[:16])
        assert sorted(f.name for f in s.rendered.iterdir() if f.is_file() and f.name[0] != ".") == \
            ["Dockerfile", "README.md", "compose.yaml", "model.env", "plan.json"]
        assert said == []
    finally:
        import shutil

        shutil.rmtree(s.rendered)


def test_record_with_an_old_plan_still_works_for_down_but_smoke_asks_for_up(isolated_home):
    from deploy_kit.errors import BadInput

    state.record_path("old").write_text(json.dumps({"name": "old", "card_name": "x", "target": "cpu",
                                                    "port": 1, "plan": {"name": "old", "argv": "not a list"}}))
    rec = state.load("old")
    assert rec is not None and rec.plan is None
    with pytest.raises(BadInput, match="holds no plan this deploykit can read"):
        ops.run_smoke("old")


def test_library_api_is_lazy():
    import subprocess
    import sys

    code = ("import sys, deploy_kit as dk; assert 'deploy_kit.planner' not in sys.modules; "
            "assert dk.Plan.__name__ == 'Plan' and callable(dk.up) and callable(dk.down); print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "ok", res.stderr
