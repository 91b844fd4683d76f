"""Operating the real CPU demo deployment: live metrics, a real Prometheus scrape, self-healing.

Uses the session's demo deployment (tests/conftest_e2e.py). The healing tests kill or freeze the
engine inside its container and wait until the same deployment answers again by itself; they
leave it running and healthy for the tests after them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from deploy_kit.operate import metrics, observe
from tests.conftest import require
from tests.conftest_e2e import HEALTH_POLL_S, free_port

pytestmark = pytest.mark.e2e

RECOVERY_DEADLINE_S = 900  # a shared 2-core CI machine restarts the CPU engine in ~40-120 s


def _complete(demo, prompt: str = "Hello", timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{demo.url}/v1/completions", timeout=timeout,
                      json={"model": demo.model, "prompt": prompt, "max_tokens": 4})


def test_live_metrics_of_the_demo(demo):
    before = metrics.snapshot(demo.url, timeout=5)
    assert before["ok"], before["error"]
    for _ in range(2):
        assert _complete(demo).status_code == 200
    after = metrics.snapshot(demo.url, timeout=5, previous=before)
    assert after["ok"] and after["requests_total"] - before["requests_total"] == 2
    assert after["request_rate"] is not None and after["request_rate"] > 0
    assert after["generation_tokens_total"] - before["generation_tokens_total"] == 8
    assert after["ttft_p50"] is not None and 0 < after["ttft_p50"] < 60
    assert after["running"] == 0 and 0 <= after["kv_cache_usage"] <= 1


def test_the_model_runs_in_the_engine_core_process(demo):
    """The card's VLLM_ENABLE_V1_MULTIPROCESSING=0 reached vLLM: one VLLM:: process (the engine core,
    which loads the model), no separate worker process. The test's OMP_NUM_THREADS=1 reached the
    server (vLLM reads it there and leaves it out of the engine core's environment)."""
    c = _container(demo)
    found = json.loads(_in_container(c, (
        "import json, os\n"
        "names = {}\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try: names[p] = open(f'/proc/{p}/comm').read().strip()\n"
        "    except OSError: pass\n"
        "server = open('/proc/1/task/1/children').read().split()[0]\n"
        "env = dict(v.split('=', 1) for v in open(f'/proc/{server}/environ').read().split(chr(0)) if '=' in v)\n"
        "print(json.dumps([sorted(n for n in names.values() if n.startswith('VLLM::')), env.get('OMP_NUM_THREADS'),"
        " env.get('VLLM_ENABLE_V1_MULTIPROCESSING')]))")))
    assert found == [["VLLM::EngineCor"], "1", "0"]  # comm keeps 15 characters of VLLM::EngineCore
    assert "(EngineCore pid=" in next(line for line in c.logs().decode("utf-8", "replace").splitlines()
                                      if "Starting to load model" in line)


def test_debian_prometheus_scrapes_the_demo(demo, tmp_path):
    exe = shutil.which("prometheus")
    require(exe is not None, "prometheus missing: apt-get install -y prometheus")
    assert exe is not None
    port = int(demo.url.rsplit(":", 1)[1])
    observe.write_observability(tmp_path, [observe.ScrapeTarget(demo.name, f"127.0.0.1:{port}")])
    web = free_port()
    proc = subprocess.Popen([exe, f"--config.file={tmp_path / observe.PROMETHEUS_CONFIG}",
                             f"--web.listen-address=127.0.0.1:{web}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prom.log").open("w"))
    api = f"http://127.0.0.1:{web}/api/v1/query"
    t0 = time.monotonic()
    try:
        assert _complete(demo).status_code == 200
        found: dict = {}
        while time.monotonic() - t0 < 120 and not found.get("vllm:generation_tokens_total"):
            time.sleep(1)
            try:
                for q in ('up{job="vllm"}', "vllm:generation_tokens_total", "vllm:num_requests_running"):
                    res = httpx.get(api, params={"query": q}, timeout=5).json()["data"]["result"]
                    found[q] = res
            except (httpx.HTTPError, KeyError):
                continue
        took = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    up = found.get('up{job="vllm"}')
    assert up and up[0]["metric"]["deployment"] == demo.name and up[0]["value"][1] == "1", found
    gen = found["vllm:generation_tokens_total"]
    assert gen[0]["metric"]["deployment"] == demo.name and float(gen[0]["value"][1]) >= 4
    assert found["vllm:num_requests_running"], found
    print(f"first vLLM samples in Prometheus after {took:.1f} s")


def _container(demo):
    import docker

    rec = json.loads((Path(demo.env["DEPLOYKIT_STATE"]) / "deployments" / f"{demo.name}.json").read_text())
    found = docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={rec['project']}"})
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def _in_container(c, code: str) -> str:
    res = c.exec_run(["python3", "-c", code])
    assert res.exit_code == 0, res.output
    return res.output.decode().strip()


ENGINE_PID = "print(open('/proc/1/task/1/children').read().split()[0])"


def _wait_back(demo, c, restarts_before: int) -> float:
    """Seconds until the container restarted and the deployment answers a completion again."""
    t0 = time.monotonic()
    restarted = None
    while time.monotonic() - t0 < RECOVERY_DEADLINE_S:
        time.sleep(1)
        c.reload()
        if c.attrs["RestartCount"] <= restarts_before or c.status != "running":
            continue
        if restarted is None:
            restarted = time.monotonic() - t0
            print(f"container restarted {restarted:.1f} s after the fault")
        try:
            if _complete(demo, timeout=30).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
    raise AssertionError(f"not back within {RECOVERY_DEADLINE_S} s: {c.status}, restarts {c.attrs['RestartCount']}")


def _status_row(demo) -> dict:
    res = demo.cli("status", "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    rows = rows["deployments"] if isinstance(rows, dict) else rows
    return next(r for r in rows if r["name"] == demo.name)


def test_killed_engine_comes_back_by_itself(demo):
    c = _container(demo)
    assert "deploykit-watchdog" in _in_container(c, "print(open('/proc/1/cmdline').read())")
    assert c.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    before = c.attrs["RestartCount"]
    engine = _in_container(c, ENGINE_PID)
    c.exec_run(["python3", "-c", f"import os, signal; os.kill({int(engine)}, signal.SIGKILL)"])
    took = _wait_back(demo, c, before)
    print(f"killed engine: answering again after {took:.1f} s")
    row = _status_row(demo)
    assert row["restarts"] >= before + 1 and row["healthy"] is True, row


def _watched(c, starts: int) -> None:
    """Wait until the watchdog saw this run's engine answer (before that, it gives a slow start the
    plan's whole readiness grace and a freeze would only be acted on after it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if c.logs().decode("utf-8", "replace").count("deploykit-watchdog: engine answers /health") >= starts:
            return
        time.sleep(1)
    raise AssertionError("the watchdog never saw the engine answer")


def test_frozen_engine_is_restarted_by_the_watchdog(demo):
    """SIGSTOP: the process lives, /health never answers; Docker alone would never restart it."""
    c = _container(demo)
    # the card's serve.health_check_interval_s reached Docker's healthcheck (ns) and the watchdog
    assert c.attrs["Config"]["Healthcheck"]["Interval"] == HEALTH_POLL_S * 10**9
    entrypoint = " ".join(c.attrs["Config"]["Entrypoint"])
    assert f"--interval {HEALTH_POLL_S} --timeout {HEALTH_POLL_S} --failures 3" in entrypoint
    before = c.attrs["RestartCount"]
    _watched(c, before + 1)
    engine = _in_container(c, ENGINE_PID)
    c.exec_run(["python3", "-c", f"import os, signal; os.kill({int(engine)}, signal.SIGSTOP)"])
    took = _wait_back(demo, c, before)
    print(f"frozen engine: answering again after {took:.1f} s")
    logs = c.logs(tail=400).decode("utf-8", "replace")
    assert "deploykit-watchdog: /health failed 3 times in a row" in logs
