"""Self-healing: the compose restart policy, and the watchdog that turns a hung engine into an exit.

The watchdog is run exactly as the container runs it (``python3 -c <source> ... -- argv``) around a
small stand-in engine (an HTTP server on 127.0.0.1 with /health), so exit codes, signal forwarding
and the hung-engine path are real process behaviour.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from deploy_kit.operate import heal, watchdog
from tests.conftest import require_compose
from tests.conftest_e2e import free_port

pytestmark = pytest.mark.integration

ENGINE = r"""
import http.server, os, signal, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
if mode == "exit3":
    time.sleep(0.3)
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
served = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        served[0] += 1
        if mode == "hang" and served[0] > 2:
            time.sleep(3600)          # alive, listening, never answers: a hung engine
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _watch(port: int, mode: str, grace: float = 30.0) -> subprocess.Popen:
    cmd = [sys.executable, "-c", heal.watchdog_source(), "--port", str(port), "--grace", str(grace),
           "--interval", "0.2", "--timeout", "0.5", "--failures", "2", "--",
           sys.executable, "-c", ENGINE, str(port), mode]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)


def _child(pid: int, deadline: float = 10.0) -> int:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("the watchdog started no engine")


def _wait_health(port: int, deadline: float = 10.0) -> None:
    import httpx

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("stand-in engine never answered")


def test_engine_exit_code_is_the_container_exit_code():
    p = _watch(free_port(), "exit3")
    assert p.wait(20) == 3
    assert "engine exited with code 3" in p.stderr.read()


def test_killed_engine_is_a_crash_the_restart_policy_sees():
    port = free_port()
    p = _watch(port, "serve")
    try:
        _wait_health(port)
        os.kill(_child(p.pid), signal.SIGKILL)
        assert p.wait(20) == 128 + signal.SIGKILL
    finally:
        p.kill()


def test_hung_engine_is_stopped_and_the_watchdog_exits_70():
    port = free_port()
    p = _watch(port, "hang")
    t0 = time.monotonic()
    try:
        engine = _child(p.pid)
        assert p.wait(30) == heal.UNHEALTHY_EXIT == watchdog.EXIT_UNHEALTHY
    finally:
        p.kill()
    took = time.monotonic() - t0
    err = p.stderr.read()
    assert re.search(r"deploykit-watchdog: engine answers /health, \d+ s after start; watching it\n", err)
    assert "/health failed 2 times in a row (last: TimeoutError" in err or \
           "/health failed 2 times in a row (last: URLError" in err, err
    assert not os.path.exists(f"/proc/{engine}") or open(f"/proc/{engine}/stat").read().split()[2] == "Z"
    assert took < 10, took


def test_stop_signal_is_forwarded_and_a_clean_stop_is_exit_0():
    port = free_port()
    p = _watch(port, "serve")
    try:
        _wait_health(port)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0  # on-failure: `docker stop` / `deploykit down` is not restarted
    finally:
        p.kill()


def test_failures_during_first_start_count_only_after_the_grace():
    h = watchdog.Health(dict(watchdog.DEFAULTS, grace=60.0, failures=2), now=0.0)
    assert [h.record(False, t) for t in (10.0, 20.0, 59.0)] == [False, False, False]
    assert [h.record(False, t) for t in (61.0, 62.0)] == [False, True]
    h = watchdog.Health(dict(watchdog.DEFAULTS, grace=600.0, failures=2), now=0.0)
    assert h.record(True, 5.0) is False
    assert [h.record(False, t) for t in (6.0, 7.0)] == [False, True]   # answered once: no more grace
    assert h.record(True, 8.0) is False and h.failed == 0


@pytest.mark.parametrize("args,message", [
    (["--port", "1"], "usage"),
    (["--port", "--"], "no engine command"),
    (["--port", "1", "--"], "no engine command"),
    (["--color", "red", "--", "x"], "unknown option --color"),
])
def test_bad_watchdog_arguments(args, message):
    with pytest.raises(SystemExit) as exc:
        watchdog.parse_args(args)
    assert message in str(exc.value)


def test_watchdog_arguments_keep_the_engine_argv_verbatim():
    opts, cmd = watchdog.parse_args(["--port", "8100", "--grace", "900", "--", "vllm", "--", "$x", "a b"])
    assert opts["port"] == 8100 and opts["grace"] == 900.0 and opts["failures"] == 3
    assert cmd == ["vllm", "--", "$x", "a b"]


def _demo_plan():
    from deploy_kit.planner import plan

    return plan("smollm2-135m-instruct", target="cpu", port_probe=None)


def test_service_policy_values(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path))
    p = _demo_plan()
    pol = heal.service_policy(p)
    assert pol["restart"] == "on-failure:5"
    ep = pol["entrypoint"]
    assert ep[:2] == ["python3", "-c"] and ep[-1] == "--"
    assert ep[3:-1] == ["--port", "8000", "--grace", str(p.readiness_timeout_s), "--interval", "10",
                        "--timeout", "10", "--failures", "3"]
    assert not any("$" in a for a in ep)
    assert pol["healthcheck"]["retries"] == 3 and pol["healthcheck"]["start_period"] == f"{p.readiness_timeout_s}s"
    assert "http://127.0.0.1:8000/health" in pol["healthcheck"]["test"][-1]


def test_card_health_check_interval_sets_the_watchdog_and_the_healthcheck(tmp_path, monkeypatch):
    from deploy_kit.planner import plan

    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path))
    p = plan("smollm2-135m-instruct", target="cpu", port_probe=None, sets=["serve.health_check_interval_s=4"])
    assert p.health_check_interval_s == 4
    pol = heal.service_policy(p)
    assert pol["entrypoint"][7:13] == ["--interval", "4", "--timeout", "4", "--failures", "3"]
    hc = pol["healthcheck"]
    assert (hc["interval"], hc["timeout"], hc["retries"]) == ("4s", "4s", 3)
    assert hc["test"][-1].endswith("urlopen('http://127.0.0.1:8000/health', timeout=4)")


@pytest.mark.parametrize("value", ["0", "601", "-1", "2.5"])
def test_health_check_interval_out_of_bounds_is_bad_input(value):
    from deploy_kit.errors import BadInput
    from deploy_kit.planner import plan

    with pytest.raises(BadInput) as exc:
        plan("smollm2-135m-instruct", target="cpu", port_probe=None, sets=[f"serve.health_check_interval_s={value}"])
    assert exc.value.field == "serve.health_check_interval_s"


def test_compose_keeps_the_watchdog_and_the_argv_intact(tmp_path, monkeypatch):
    """Through the one service builder and `compose config`: nothing interpolated or reordered."""
    from deploy_kit.composefile import service

    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path))
    p = _demo_plan()
    svc = service(p, env_file=None, build_context=None)
    f = tmp_path / "compose.yaml"
    f.write_text(yaml.safe_dump({"name": "t", "services": {"m": svc}}))
    res = subprocess.run([*require_compose(), "-f", str(f), "config"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    got = yaml.safe_load(res.stdout)["services"]["m"]
    assert got["entrypoint"] == heal.watchdog_entrypoint(p)
    assert got["entrypoint"][2] == heal.watchdog_source()
    assert got["command"] == list(p.argv)
    assert got["restart"] == "on-failure:5"
