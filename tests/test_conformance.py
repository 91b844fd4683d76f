"""Conformance: the files deploykit renders for every catalog card agree with vLLM-Ascend's own
commands for the pinned release, or the difference is named here with its reason.

The upstream commands are short verbatim excerpts in tests/fixtures/upstream/*.yaml (each with its
URL, release and commit); the tests parse the excerpts themselves, so a re-pin that changes
upstream's recipe shows up as a failing comparison, not as a stale paraphrase.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
CARDS = sorted(p.stem for p in (REPO / "models").glob("*.yaml"))
ASCEND = ["ascend-a2", "ascend-a3"]
PIN = "0123456789abcdef0123456789abcdef01234567"

# Where deploykit differs from upstream's commands on purpose, and why.
DEVIATIONS = {
    "ASCEND_RT_VISIBLE_DEVICES": "upstream tutorials export it; deploykit maps only the planned /dev/davinciN and "
                                 "leaves it unset, so the process sees exactly those NPUs as 0..n-1 (the quick "
                                 "start's docker run sets nothing either)",
    "read-only mounts": "upstream's -v mounts are read-write; the driver files and weights are only read, so "
                        "deploykit mounts them :ro",
    "/root/.cache": "upstream mounts the whole cache; deploykit mounts only this model's weights, read-only",
    "shm 16g for TP > 1": "upstream examples use --shm-size=1g; deploykit gives multi-NPU groups 16g",
    "HCCL_INTRA_ROCE_ENABLE / HF_HOME": "the Hunyuan tutorial's host-specific exports; deploykit keeps HCCL's "
                                       "default intra-server path and mounts weights instead of a hub cache",
    "HCCL_SOCKET_IFNAME": "not in tutorials/features/ray.md; set as upstream's other multi-node tutorials do "
                          "(tutorials/features/long_sequence_context_parallel_multi_node.md, v0.23.0)",
    "--rm / --name / -it": "interactive docker run flags; compose names and restarts the service itself",
}


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def _docker_run_words(text: str) -> list[str]:
    """The words of the first `docker run` in an excerpt (comments and line continuations removed)."""
    body = text[text.index("docker run"):]
    lines = [ln for ln in body.splitlines() if not ln.strip().startswith("#")]
    joined = " ".join(ln.rstrip().rstrip("\\") for ln in lines)
    return shlex.split(joined.split(" -it ")[0] if " -it " in joined else joined)


def upstream_run(text: str) -> dict:
    words = _docker_run_words(text)
    devices = [words[i + 1] for i, w in enumerate(words) if w == "--device"]
    mounts = [words[i + 1] for i, w in enumerate(words) if w == "-v"]
    shm = next(w.split("=", 1)[1] for w in words if w.startswith("--shm-size="))
    return {"devices": devices, "mounts": mounts, "shm": shm, "net_host": "--net=host" in words}


def upstream_exports(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip('"') for m in re.finditer(r"^export (\w+)=(\S+)$", text, re.M)}


def upstream_serve_flags(text: str) -> dict[str, str | bool]:
    body = text[text.index("vllm serve"):].split("```")[0]
    words = shlex.split(" ".join(ln.rstrip().rstrip("\\") for ln in body.splitlines()))
    out: dict[str, str | bool] = {}
    for i, w in enumerate(words):
        if w.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else None
            out[w] = nxt if nxt is not None and not nxt.startswith("--") else True
    return out


@pytest.fixture(autouse=True)
def _fixed_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DEPLOYKIT_REGISTRY_MIRROR", raising=False)
    monkeypatch.delenv("DEPLOYKIT_REQUIRE_PINNED", raising=False)


def rendered(card: str, target: str, tmp_path: Path, tp: int | None = None):
    from deploy_kit.errors import Infeasible
    from deploy_kit.planner import plan
    from deploy_kit.render import render

    try:
        p = plan(card, target=target, tp=tp, port_probe=None)
    except Infeasible as exc:
        pytest.skip(f"{card} does not plan on {target}: {exc.one_line()}")
    out = tmp_path / f"{card}-{target}"
    render(p, out)
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    env = dict(ln.split("=", 1) for ln in (out / "model.env").read_text().splitlines()
               if "=" in ln and not ln.startswith("#"))
    return p, compose["services"][p.name], {k: v.strip("'\"") for k, v in env.items()}


def test_fixtures_name_their_source():
    for f in FIXTURES.glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        assert data["url"].startswith("https://github.com/vllm-project/vllm-ascend/blob/"), f.name
        assert re.fullmatch(r"[0-9a-f]{40}", data["commit"]), f.name
        assert data["release"], f.name


def test_parsers_read_the_excerpts():
    run = upstream_run(fixture("quick_start_docker_run")["excerpt"])
    assert run["devices"] == ["$DEVICE", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    assert run["shm"] == "1g" and "/usr/local/dcmi:/usr/local/dcmi" in run["mounts"]
    assert "/root/.cache:/root/.cache" in run["mounts"]
    assert upstream_exports(fixture("model_tutorial_env")["excerpt"])["PYTORCH_NPU_ALLOC_CONF"] == \
        "expandable_segments:True"
    assert upstream_serve_flags(fixture("hunyuan_serve")["excerpt"])["--tensor-parallel-size"] == "4"


@pytest.mark.parametrize("target", ASCEND)
@pytest.mark.parametrize("card", CARDS)
def test_docker_devices_mounts_and_shm_match_quick_start(card, target, tmp_path):
    p, svc, _env = rendered(card, target, tmp_path)
    name = "quick_start_a3" if target == "ascend-a3" else "quick_start_docker_run"
    run = upstream_run(fixture(name)["excerpt"])
    devices = [d.split(":")[0] for d in svc["devices"]]
    fixed = [d for d in run["devices"] if not d.startswith("$")]
    assert [d for d in devices if not d.startswith("/dev/davinci") or not d[12:].isdigit()] == fixed
    davinci = [d for d in devices if d[12:].isdigit()]
    assert davinci == [f"/dev/davinci{i}" for i in p.host_devices]
    # upstream maps one $DEVICE per NPU; A3: at least two ($DEVICE0, $DEVICE1)
    assert len(davinci) >= len([d for d in run["devices"] if d.startswith("$")])
    volumes = [v.rsplit(":ro", 1)[0] for v in svc["volumes"]]  # deviation: read-only mounts
    for m in run["mounts"]:
        if m == "/root/.cache:/root/.cache":
            assert f"{p.weights.host_path}:{p.weights.container_path}" in volumes  # deviation: /root/.cache
        else:
            assert m in volumes, m
    assert svc["shm_size"] == (run["shm"] if p.tensor_parallel_size == 1 else "16g")  # deviation for TP > 1
    assert "privileged" not in svc
    suffix = "-a3" if target == "ascend-a3" else ""
    assert p.base_image == f"quay.io/ascend/vllm-ascend:v0.23.0{suffix}"


@pytest.mark.parametrize("target", ASCEND)
@pytest.mark.parametrize("card", CARDS)
def test_env_matches_the_release_tutorials(card, target, tmp_path):
    p, _svc, env = rendered(card, target, tmp_path)
    for key, value in upstream_exports(fixture("model_tutorial_env")["excerpt"]).items():
        if key == "ASCEND_RT_VISIBLE_DEVICES":
            assert key not in env and key in DEVIATIONS
            continue
        assert env.get(key) == value, key
    assert all(p.provenance[f"env:{k}"] for k in p.env)


def _same(got: str, want: str) -> bool:
    """0.9 == 0.90; strings compare as strings."""
    try:
        return float(got) == float(want)
    except ValueError:
        return got == want


def test_hunyuan_serve_flags_match_its_tutorial(tmp_path):
    p, svc, env = rendered("hunyuan-a13b-instruct", "ascend-a2", tmp_path)
    text = fixture("hunyuan_serve")["excerpt"]
    flags = upstream_serve_flags(text)
    argv = svc["command"]
    for flag in ("--trust-remote-code", "--tensor-parallel-size", "--max-model-len", "--gpu-memory-utilization",
                 "--host", "--port"):
        assert flag in argv, flag
        if flags[flag] is not True:
            assert _same(argv[argv.index(flag) + 1], str(flags[flag])), flag
    for key in upstream_exports(text):
        assert key not in env or key == "HF_HOME"
        assert key in ("ASCEND_RT_VISIBLE_DEVICES", "HCCL_INTRA_ROCE_ENABLE", "HF_HOME", "MODEL_PATH")
    assert "HCCL_INTRA_ROCE_ENABLE / HF_HOME" in DEVIATIONS


def test_qwen25vl_multimodal_flags_match_upstream(tmp_path):
    p, svc, _env = rendered("qwen2.5-vl-7b-instruct", "ascend-a2", tmp_path)
    flags = upstream_serve_flags(fixture("qwen25vl_serve")["excerpt"] + "\n```")
    argv = svc["command"]
    assert argv[argv.index("--dtype") + 1] == flags["--dtype"] == "bfloat16"
    import json

    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == json.loads(str(flags["--limit-mm-per-prompt"]))
    assert p.upstream_support is not None and p.upstream_support.status == "supported"


def test_multinode_compose_follows_the_ray_tutorial(tmp_path):
    from deploy_kit.planner import plan
    from deploy_kit.stack.compose_render import render_multinode

    ray = fixture("ray_multinode")
    run = upstream_run(ray["container"] + "\n-it $IMAGE bash")
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=8, port_probe=None)
    files = render_multinode(p, tmp_path, 2, ifname="enp189s0f0")
    head, worker = (yaml.safe_load(f.read_text())["services"][p.name] for f in files)
    assert run["net_host"] and head["network_mode"] == worker["network_mode"] == "host"
    hccn = next(m for m in run["mounts"] if "hccn_tool" in m)
    for svc in (head, worker):
        assert hccn in [v.rsplit(":ro", 1)[0] for v in svc["volumes"]]
        assert svc["image"] == p.base_image
        exports = upstream_exports(ray["cluster"])
        for key in ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
            assert exports[key] == "{nic_name}" and svc["environment"][key] == "enp189s0f0"
        assert exports["HCCL_IF_IP"] == "{local_ip}" and svc["environment"]["HCCL_IF_IP"].startswith("${NODE_IP:?")
        assert svc["environment"]["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == \
            exports["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == "1"
        assert svc["environment"]["HCCL_SOCKET_IFNAME"] == "enp189s0f0"  # named in DEVIATIONS
    # upstream worker: ray start --address='{head_node_ip}:6379' --node-ip-address={local_ip}
    assert "--node-ip-address={local_ip}" in ray["cluster"]
    assert worker["command"] == ['ray start --address="$$HEAD_IP:6379" --node-ip-address="$$HCCL_IF_IP" --block']
    script = head["command"][0].replace("$$", "$")
    assert script.splitlines()[1].startswith("ray start --head")
    assert "ray.nodes()" in script and script.splitlines()[-1].endswith("--pipeline-parallel-size 2")
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


def test_every_deviation_is_named():
    assert all(len(why) > 40 for why in DEVIATIONS.values())


def test_ifname_is_checked(tmp_path):
    from deploy_kit.errors import BadInput
    from deploy_kit.planner import plan
    from deploy_kit.stack.compose_render import render_multinode

    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=8, port_probe=None)
    with pytest.raises(BadInput, match="not a network interface name"):
        render_multinode(p, tmp_path, 2, ifname="eth0; reboot")
