"""Golden files for every catalog card x target, parse-back of every output, `docker compose config`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
TARGETS = ["ascend-a2", "ascend-a3", "cuda", "cpu"]
PIN = "0123456789abcdef0123456789abcdef01234567"
FIXED_CACHE = "/var/cache/deploykit/models"


def cards():
    return sorted(p.stem for p in (REPO / "models").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _fixed_env(monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", FIXED_CACHE)
    monkeypatch.delenv("DEPLOYKIT_REGISTRY_MIRROR", raising=False)
    monkeypatch.delenv("DEPLOYKIT_TARGETS", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")


def make(card, target):
    from deploy_kit.cardload import load_card
    from deploy_kit.planner import plan

    # No pin and no flags: remote-code cards plan with the "unpinned" warning (FIXED_CACHE holds no lock).
    return plan(load_card(card), target=target, port_probe=None)


def normalise(text: str) -> str:
    return text.replace(str(REPO), "$REPO")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("card", cards())
def test_golden(card, target, tmp_path):
    from deploy_kit.errors import DeployKitError
    from deploy_kit.render import render

    gdir = GOLDEN / card / target
    try:
        files = {p.name: normalise(p.read_text()) for p in render(make(card, target), tmp_path / "out")}
    except DeployKitError as exc:
        files = {"refused.txt": normalise(exc.one_line()) + "\n"}
        assert exc.exit_code == 3, "a catalog card may only be refused as infeasible on a target"
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(gdir, ignore_errors=True)
        gdir.mkdir(parents=True)
        for name, text in files.items():
            (gdir / name).write_text(text)
    expected = {p.name: p.read_text() for p in gdir.iterdir()}
    assert sorted(files) == sorted(expected)
    for name in files:
        assert files[name] == expected[name], f"{card}/{target}/{name} differs from its golden file"


def test_every_card_runs_somewhere():
    from deploy_kit.errors import Infeasible

    for card in cards():
        ok = []
        for t in TARGETS:
            try:
                make(card, t)
                ok.append(t)
            except Infeasible:
                pass
        assert ok, f"{card} runs on no target"
        assert "ascend-a2" in ok, f"{card} must run on the default target"


PARSE_BACK = [(c, t) for c in ("internvl2-2b", "hunyuan-a13b-instruct") for t in TARGETS[:3]] + [
    ("smollm2-135m-instruct", t) for t in TARGETS]


@pytest.mark.parametrize("card,target", PARSE_BACK)
def test_parse_back(card, target, tmp_path):
    from deploy_kit.planner import Plan
    from deploy_kit.render import parse_env_file, render

    plan = make(card, target)
    out = tmp_path / "out"
    render(plan, out)
    again = Plan.model_validate_json((out / "plan.json").read_text())
    assert again == plan
    assert parse_env_file((out / "model.env").read_text()) == plan.env
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    (svc,) = compose["services"].values()
    assert svc["command"] == plan.argv  # exec form, element for element
    assert all(isinstance(a, str) for a in svc["command"])
    assert svc["ports"] == [f"127.0.0.1:{plan.port}:8000"]
    assert "privileged" not in svc
    assert svc["shm_size"] == plan.shm_size
    weights = f"{plan.weights.host_path}:{plan.weights.container_path}:ro"
    assert weights in svc["volumes"]
    assert all(v.endswith(":ro") for v in svc["volumes"]), "every mount is read-only"
    if plan.target_kind == "ascend":
        nodes = [d.split(":")[0] for d in svc["devices"]]
        davinci = sorted(n for n in nodes if n[len("/dev/davinci"):].isdigit())
        assert davinci == [f"/dev/davinci{i}" for i in plan.host_devices], "only the planned NPUs"
        assert {"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"} <= set(nodes)
        assert "ASCEND_RT_VISIBLE_DEVICES" not in plan.env
        if plan.tensor_parallel_size > 1:
            assert plan.env["HCCL_OP_EXPANSION_MODE"] == "AIV"
            assert plan.shm_size == "16g"
    elif plan.target_kind == "cuda":
        ids = svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        assert ids == [str(i) for i in plan.host_devices]
    readme = (out / "README.md").read_text()
    assert "docker run" in readme and "vllm serve /models/" in readme
    assert svc["healthcheck"]["test"][0] == "CMD"


def test_devices_and_port_flow_into_files(tmp_path):
    from deploy_kit.planner import plan
    from deploy_kit.render import render

    p = plan("internlm2.5-7b-chat", target="ascend-a2", tp=2, devices="4,5", port=8100,
             sets=[f"model.revision={PIN}"], port_probe=None)
    render(p, tmp_path / "o")
    svc = yaml.safe_load((tmp_path / "o" / "compose.yaml").read_text())["services"]["internlm2.5-7b-chat"]
    assert "/dev/davinci4:/dev/davinci4" in svc["devices"] and "/dev/davinci5:/dev/davinci5" in svc["devices"]
    assert not any(d.startswith("/dev/davinci0:") for d in svc["devices"])
    assert svc["ports"] == ["127.0.0.1:8100:8000"]
    assert p.host_devices == [4, 5] and "4,5" in p.visible_devices_note


def test_render_refuses_foreign_out_dir(tmp_path):
    from deploy_kit.errors import BadInput
    from deploy_kit.render import render

    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    for force in (False, True):  # --force never deletes what deploykit did not write
        with pytest.raises(BadInput) as ei:
            render(make("smollm2-135m-instruct", "cpu"), out, force=force)
        assert ei.value.exit_code == 2
        assert "holds no deploykit render (1 entries)" in ei.value.message
    assert (out / "precious.txt").read_text() == "x"
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_registry_mirror(monkeypatch):
    from deploy_kit.targets import load_target

    base = load_target("ascend-a2").base_image
    assert base.startswith("quay.io/ascend/vllm-ascend:")
    monkeypatch.setenv("DEPLOYKIT_REGISTRY_MIRROR", "m.daocloud.io/quay.io")
    assert make("llama-3.1-8b-instruct", "ascend-a2").base_image == "m.daocloud.io/" + base
