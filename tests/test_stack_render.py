"""Stack files -> plans -> one compose project; ledger; multi-node compose. Real planner, real cards."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy_kit.errors import BadInput, Infeasible
from deploy_kit.stack import ledger
from deploy_kit.stack.compose_render import render_multinode, render_stack
from deploy_kit.stack.stackfile import apply_sets, load_stack, plan_stack
from tests.conftest import deploykit_bin, require_compose

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "stack"
REV = "0123456789abcdef0123456789abcdef01234567"  # stands in for a reviewed commit sha
PINS = {"atlas-a2-mixed": ["internlm", "internvl"], "atlas-a2-hunyuan": ["hunyuan", "internvl"]}


@pytest.fixture(autouse=True)
def _fixed_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", "/srv/deploykit-cache")
    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))


def _stack(name):
    st = load_stack(ROOT / "compose" / f"{name}.yaml")
    return apply_sets(st, [f"{d}:model.revision={REV}" for d in PINS.get(name, [])])


@pytest.mark.parametrize("name", ["atlas-a2-mixed", "atlas-a2-hunyuan"])
def test_golden_and_compose_config(name, tmp_path):
    st = _stack(name)
    plans = plan_stack(st)
    f = render_stack(st.name, plans, tmp_path, front_door=st.front_door)
    doc = yaml.safe_load(f.read_text())
    # each service maps only its own /dev/davinciN, and nothing overlaps
    seen = []
    for p in plans:
        svc = doc["services"][p.name]
        own = sorted(d.split(":")[0] for d in svc["devices"] if d.startswith("/dev/davinci") and
                     d.split(":")[0][len("/dev/davinci"):].isdigit())
        assert own == sorted(f"/dev/davinci{i}" for i in p.host_devices)
        from deploy_kit.render import parse_env_file
        assert svc["env_file"] == [f"env/{p.name}.env"]
        # a plain `docker compose up` builds each service from its own context (issue 18.7)
        assert svc["build"] == {"context": f"./build/{p.name}", "dockerfile": "Dockerfile"}
        assert (tmp_path / "build" / p.name / "Dockerfile").read_text().startswith("#")
        assert (tmp_path / "build" / p.name / "ca.crt").is_file()
        env = parse_env_file((tmp_path / "env" / f"{p.name}.env").read_text())
        assert "ASCEND_RT_VISIBLE_DEVICES" not in env
        if p.tensor_parallel_size > 1:
            assert svc["shm_size"] == "16g" and "HCCL_CONNECT_TIMEOUT" in env
        assert f"{p.weights.host_path}:/models/{p.card_name}:ro" in svc["volumes"]
        assert p.weights.host_path.startswith("/srv/deploykit-cache/")
        seen += own
    assert len(seen) == len(set(seen))
    ports = [s["ports"][0].split(":")[1] for s in doc["services"].values()]
    assert len(ports) == len(set(ports))
    routes = yaml.safe_load((tmp_path / "litellm-config.yaml").read_text())["model_list"]
    assert {r["model_name"] for r in routes} == {p.served_model_name for p in plans}
    fd = doc["services"]["front-door"]
    assert fd["volumes"] == ["./litellm-config.yaml:/app/config.yaml:ro"]
    # the master key comes from the operator's environment at `compose up`; never a value in the file
    assert fd["environment"] == {
        "LITELLM_MASTER_KEY": "${LITELLM_MASTER_KEY:?export LITELLM_MASTER_KEY=sk-<secret> for the front door}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True"}   # no fetch of LiteLLM's cost map from GitHub at start
    assert fd["image"] == "deploykit/litellm:1.106.2" and fd["ports"] == [f"127.0.0.1:{st.front_door.port}:4000"]
    assert fd["healthcheck"]["test"][-1].endswith("urlopen('http://127.0.0.1:4000/health/liveliness', timeout=5)")
    assert fd["depends_on"] == sorted(p.name for p in plans) and fd["restart"] == "on-failure:5"
    assert "prometheus" not in doc["services"]  # observability only when the stack file or a flag asks

    golden = GOLDEN / f"{name}.compose.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(f.read_text())
    assert f.read_text() == golden.read_text(), f"golden differs: UPDATE_GOLDEN=1 to accept ({golden})"

    cmd = require_compose()
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_MASTER_KEY"}
    res = subprocess.run([*cmd, "-f", str(f), "config", "--quiet"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, env={**env, "LITELLM_MASTER_KEY": "sk-test"})
    assert res.returncode == 0, res.stderr
    # without the key, compose refuses before starting anything and says what to set
    res = subprocess.run([*cmd, "-f", str(f), "config", "--quiet"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, env=env)
    assert res.returncode != 0 and "export LITELLM_MASTER_KEY=sk-<secret>" in res.stderr, res.stderr


def test_cpu_pair_renders(tmp_path):
    st = load_stack(ROOT / "compose" / "cpu-demo-pair.yaml")
    plans = plan_stack(st)
    doc = yaml.safe_load(render_stack(st.name, plans, tmp_path, front_door=st.front_door,
                                      observability=st.observability).read_text())
    assert set(doc["services"]) == {"smol-a", "smol-b", "front-door"}   # observability.enabled: false
    routes = yaml.safe_load((tmp_path / "litellm-config.yaml").read_text())["model_list"]
    assert [(r["model_name"], r["litellm_params"]["api_base"]) for r in routes] == [
        ("smol-a", "http://smol-a:8000/v1"), ("smol-b", "http://smol-b:8000/v1")]
    assert doc["services"]["front-door"]["ports"] == ["127.0.0.1:8310:4000"]
    assert all("devices" not in s for s in doc["services"].values())
    assert "--max-model-len" in doc["services"]["smol-b"]["command"]
    i = doc["services"]["smol-b"]["command"].index("--max-model-len")
    assert doc["services"]["smol-b"]["command"][i + 1] == "1024"
    # two engines on one host: one OpenMP thread each; the card's in-process worker stays
    assert [(p.env["OMP_NUM_THREADS"], p.env["VLLM_ENABLE_V1_MULTIPROCESSING"]) for p in plans] == [("1", "0")] * 2


def test_infeasible_stack_lists_every_reason(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"name": "bad", "host": {"target": "ascend-a2"}, "deployments": [
        {"name": "a", "card": "llama-3.1-8b-instruct", "tp": 8, "port": 9001},
        {"name": "b", "card": "llama-3.1-8b-instruct", "tp": 1, "port": 9001},
        {"name": "c", "card": "llama-3.1-8b-instruct", "tp": 1, "port": 9003, "devices": [9]}]}))
    with pytest.raises(Infeasible) as ei:
        plan_stack(load_stack(p), busy_devices={0: "deployment other"}, source=str(p))
    text = "\n".join(ei.value.reasons)
    assert "port 9001 is used twice" in text
    assert "a: no contiguous block of 8" in text and "0: deployment other" in text
    assert "c: device 9 out of range" in text


def test_cli_exit_3_and_stack_schema_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner
    from deploy_kit.cli import app, main

    p = tmp_path / "typo.yaml"
    p.write_text("name: t\nhost:\n  target: ascend-a2\ndeployments:\n  - name: a\n    card: x\n"
                 "    port: 1\n    tpp: 2\n")
    with pytest.raises(BadInput) as ei:
        load_stack(p)
    assert ei.value.line == 8 and "tpp" in (ei.value.field or "")
    # remote-code cards without a pinned revision: refused where the shop asks for pins, exit 3
    monkeypatch.setenv("DEPLOYKIT_REQUIRE_PINNED", "1")
    assert main(["stack", "plan", str(ROOT / "compose" / "atlas-a2-mixed.yaml"), "--no-ledger"]) == 3
    sets = [x for d in PINS["atlas-a2-mixed"] for x in ("--set", f"{d}:model.revision={REV}")]
    res = CliRunner().invoke(app, ["stack", "plan", str(ROOT / "compose" / "atlas-a2-mixed.yaml"), "--no-ledger",
                                   *sets])
    assert res.exit_code == 0, res.output
    assert "0,1,2,3" in res.output and "llama" in res.output


def test_ledger_reads_state_records_and_npu_smi(monkeypatch):
    from deploy_kit.runtime import state

    state.save(state.Record(name="llama", card_name="llama-3.1-8b-instruct", target="ascend-a2",
                            host_devices=["0", "1"], port=8103, project="dk-llama"))
    monkeypatch.setattr(ledger, "npu_processes",
                        lambda: {0: "process python3.10 (pid 412876)", 5: "process vllm (pid 7)"})
    busy = ledger.busy_devices("ascend-a2")
    assert busy[0].startswith("deployment llama") and busy[1].startswith("deployment llama")
    assert busy[5] == "process vllm (pid 7)"
    assert ledger.busy_devices("cpu") == {}
    assert ledger.busy_ports() == {8103: "deployment llama"}


def test_npu_smi_process_table():
    from deploy_kit.stack.ledger import npu_processes as real
    text = (ROOT / "tests/fixtures/npu/a2_busy_warning.txt").read_text()
    assert real(text) == {0: "process python3.10 (pid 412876)"}


def test_busy_device_refused_naming_holder():
    st = _stack("atlas-a2-mixed")
    st.deployments[2].devices = [0, 1, 2, 3]
    with pytest.raises(Infeasible) as ei:
        plan_stack(st, busy_devices={2: "deployment qwen (compose project dk-qwen)"})
    assert "llama: device 2 is held by deployment qwen (compose project dk-qwen)" in ei.value.reasons


def test_multinode_compose(tmp_path):
    from deploy_kit.planner import plan
    p = plan("hunyuan-a13b-instruct", target="ascend-a2", tp=8, sets=[f"model.revision={REV}"], port_probe=None)
    files = render_multinode(p, tmp_path, 2, ifname="enp189s0f0")
    assert [f.name for f in files] == ["compose.node0.yaml", "compose.node1.yaml"]
    n0 = yaml.safe_load(files[0].read_text())["services"][p.name]
    n1 = yaml.safe_load(files[1].read_text())["services"][p.name]
    for svc in (n0, n1):
        assert svc["network_mode"] == "host" and "ports" not in svc
        assert svc["environment"]["HCCL_SOCKET_IFNAME"] == "enp189s0f0"
        assert svc["environment"]["GLOO_SOCKET_IFNAME"] == "enp189s0f0"
        assert "HCCL_IF_IP" in svc["environment"]
    assert "ray start --head" in n0["command"][0]
    assert "--block" in n1["command"][0]
    readme = (tmp_path / "README.md").read_text()
    assert readme.index("Head") < readme.index("worker") < readme.index("--distributed-executor-backend ray")
    cmd = require_compose()
    for f in files:
        res = subprocess.run([*cmd, "-f", str(f), "config", "--quiet"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, env={**os.environ, "NODE_IP": "10.0.0.1", "HEAD_IP": "10.0.0.2"})
        assert res.returncode == 0, res.stderr
    json.dumps(p.model_dump(mode="json"))


def test_own_deployments_are_not_conflicts(tmp_path, monkeypatch):
    """`stack plan` of a stack whose deployments already run: their ports are not conflicts; another
    stack asking for the same port is refused naming the holder."""
    from deploy_kit.cli import main
    from deploy_kit.runtime import state

    state.save(state.Record(name="smol-a", card_name="smollm2-135m-instruct", target="cpu",
                            host_devices=[], port=8311, project="deploykit-smol-a"))
    assert main(["stack", "plan", str(ROOT / "compose" / "cpu-demo-pair.yaml")]) == 0
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "other", "host": {"target": "cpu"}, "deployments": [
        {"name": "smol-c", "card": "smollm2-135m-instruct", "port": 8311}]}))
    with pytest.raises(Infeasible) as ei:
        from deploy_kit.commands.stack import _load_and_plan
        _load_and_plan(other)
    assert ei.value.reasons == ["smol-c: port 8311 is held by deployment smol-a"]


def test_render_dry_run_writes_nothing_and_the_flag_adds_observability(tmp_path):
    from typer.testing import CliRunner

    from deploy_kit.cli import app

    pair = str(ROOT / "compose" / "cpu-demo-pair.yaml")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["stack", "render", pair, "--out", str(out), "--dry-run", "--observability"])
    assert res.exit_code == 0, res.output
    assert not out.exists()
    said = res.output.splitlines()
    for rel in ("compose.yaml", "litellm-config.yaml", "prometheus/prometheus.yml",
                "grafana/dashboards/deploykit-vllm.json", "grafana/provisioning/datasources/deploykit.yaml"):
        assert f"would write {out / rel}" in said
    res = CliRunner().invoke(app, ["stack", "render", pair, "--out", str(out), "--observability"])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load((out / "compose.yaml").read_text())
    assert doc["services"]["prometheus"]["ports"] == ["127.0.0.1:8390:9090"]
    assert doc["services"]["grafana"]["ports"] == ["127.0.0.1:8330:3000"]
    assert doc["services"]["prometheus"]["depends_on"] == ["smol-a", "smol-b"]


def test_ascend_stack_scrapes_the_npu_exporter_on_the_host(tmp_path):
    st = _stack("atlas-a2-mixed")
    from deploy_kit.stack.stackfile import with_observability

    st = with_observability(st, True)
    render_stack(st.name, plan_stack(st), tmp_path, front_door=st.front_door, observability=st.observability)
    doc = yaml.safe_load((tmp_path / "compose.yaml").read_text())
    cfg = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    assert cfg["scrape_configs"][1] == {"job_name": "npu-exporter", "metrics_path": "/metrics",
                                        "static_configs": [{"targets": ["host.docker.internal:8082"]}]}
    assert doc["services"]["prometheus"]["extra_hosts"] == ["host.docker.internal:host-gateway"]


def test_companion_ports_are_checked_with_the_deployments():
    st = load_stack(ROOT / "compose" / "cpu-demo-pair.yaml")
    st.front_door.port = 8311
    with pytest.raises(Infeasible) as ei:
        plan_stack(st)
    assert ei.value.reasons == ["port 8311 is used twice in the stack"]


def _cpu_stack(tmp_path, sets_a: dict, sets_b: dict | None):
    deps = [{"name": "a", "card": "smollm2-135m-instruct", "port": 8411, "set": sets_a}]
    if sets_b is not None:
        deps.append({"name": "b", "card": "smollm2-135m-instruct", "port": 8412, "set": sets_b})
    f = tmp_path / "cpu.yaml"
    f.write_text(yaml.safe_dump({"name": "cpus", "host": {"target": "cpu"}, "deployments": deps}))
    return load_stack(f)


SHARED = ("2 cpu deployments share this host and this one's OpenMP threads use every core; set "
          "env.OMP_NUM_THREADS so that their sum fits the cores (docs/measurements/cpu_executor_start.md)")


@pytest.mark.parametrize("sets_a, sets_b, expected", [
    ({}, {}, [[SHARED], [SHARED]]),
    ({"env.OMP_NUM_THREADS": "1"}, {}, [[], [SHARED]]),
    ({"env.OMP_NUM_THREADS": "1"}, {"env.OMP_NUM_THREADS": "1"}, [[], []]),
    ({}, None, [[]]),                                   # one engine has the host to itself
])
def test_cpu_engines_sharing_a_host_are_warned_unless_their_threads_are_set(tmp_path, sets_a, sets_b, expected):
    assert [p.warnings for p in plan_stack(_cpu_stack(tmp_path, sets_a, sets_b))] == expected


def test_stack_commands_print_each_deployments_warnings_first(tmp_path):
    """`stack plan` says what `plan` says per card: upstream's NOT SUPPORTED for InternVL2 comes before
    the table, named after its deployment."""
    res = subprocess.run([deploykit_bin(), "stack", "plan", "--no-ledger",
                          str(ROOT / "compose" / "atlas-a2-mixed.yaml")], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, COLUMNS="200"))
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert [ln.split(":", 2)[1].strip() for ln in lines] == ["internlm", "internvl", "internvl"]
    assert lines[1].startswith("warning: internvl: upstream vLLM-Ascend v0.23.0 marks InternVL2.0/2.5/3.0")
    assert "NOT SUPPORTED" in lines[1] and res.stdout.startswith("# stack atlas-a2-mixed on ascend-a2")
