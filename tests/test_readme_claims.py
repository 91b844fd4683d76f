"""Every claim the README makes, pinned by a test named after it (issue 17.3).

Unit tier: the CLI runs in-process (deploy_kit.cli.main) with the runtime's Docker/Compose side
replaced by recorders, npu-smi replaced by the project's fake (tests/fixtures/npu), and the
hermetic HOME/state/cache of tests/conftest.py. Nothing here needs Docker, Compose or a network.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import REPO, install_fake_npu_smi
from tests.fixture_hub import make_model_files

pytestmark = pytest.mark.unit

CARD = "smollm2-135m-instruct"
NPU = REPO / "tests" / "fixtures" / "npu"
SECRET = "sk-readme-claim-7f3a9c"


def cli(*args: str) -> int:
    from deploy_kit.cli import main

    return main(list(args))


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture()
def fake_npu_smi(tmp_path, monkeypatch):
    """The project's fake npu-smi first on PATH; the fixture file picks its output."""
    bin_dir = tmp_path / "fakebin"
    monkeypatch.setenv("PATH", install_fake_npu_smi(bin_dir, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_busy_warning.txt")  # NPU 0: pid 412876 python3.10
    return bin_dir


@pytest.fixture()
def runtime_recorder(monkeypatch):
    """Every step of `up` that pulls, builds or starts something, replaced by a recorder."""
    from deploy_kit.runtime import compose, deploy

    calls: list[str] = []

    def record(what):
        def fake(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"`up` reached {what} although it had to refuse first")
        return fake

    for mod, attr in ((deploy, "ensure_weights"), (deploy, "ensure_image"), (compose, "run_compose")):
        if hasattr(mod, attr):
            monkeypatch.setattr(mod, attr, record(attr))
    import deploy_kit.runtime.dockerapi as dapi

    monkeypatch.setattr(dapi, "build", record("docker build"))
    return calls


def save_holder(name: str, *, port: int | None = None, devices: tuple[str, ...] = (), target: str = "cpu") -> None:
    from deploy_kit.runtime import state

    state.save(state.Record(name=name, card_name="llama-3.1-8b-instruct", target=target, port=port,
                            host_devices=list(devices), phase="ready"))


# ------------------------------------------------------------------------------- render

def test_an_earlier_render_survives_a_failed_one(tmp_path, capsys, free_port):
    out = tmp_path / "deploy"
    assert cli("render", CARD, "--target", "cpu", "--port", str(free_port), "--out", str(out)) == 0
    before = tree(out)
    assert "compose.yaml" in before and "Dockerfile" in before
    # An unknown card field: planning fails (exit 2) and nothing may be written.
    assert cli("render", CARD, "--target", "cpu", "--port", str(free_port), "--set", "serve.no_such_field=1",
               "--out", str(out)) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert tree(out) == before


def test_the_replace_is_atomic_no_leftover_temp_dirs(tmp_path, monkeypatch, free_port):
    from deploy_kit import render

    out = tmp_path / "deploy"
    assert cli("render", CARD, "--target", "cpu", "--port", str(free_port), "--out", str(out)) == 0
    before = tree(out)
    # A write that dies half-way (disk full after the first file) leaves the earlier render whole.
    real_write_all = render._write_all

    def disk_full(tmp, files, manifest):
        first = dict(list(files.items())[:1])
        real_write_all(tmp, first, manifest)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "_write_all", disk_full)
    assert cli("render", CARD, "--target", "cpu", "--port", str(free_port), "--out", str(out)) != 0
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]
    monkeypatch.undo()
    # A successful replace: every file is the new render, nothing temporary beside or inside it.
    from tests.conftest import free_port as another_free_port

    other = another_free_port()
    assert cli("render", CARD, "--target", "cpu", "--port", str(other), "--out", str(out)) == 0
    after = tree(out)
    assert f"{other}:8000".encode() in after["compose.yaml"]
    assert f"{free_port}:8000".encode() not in after["compose.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]
    assert not [p for p in out.rglob("*") if p.name.startswith(render.TMP_PREFIX)]


def test_vllm_api_key_is_absent_from_rendered_files(tmp_path, monkeypatch, free_port):
    monkeypatch.setenv("VLLM_API_KEY", SECRET)
    out = tmp_path / "exposed"
    assert cli("render", CARD, "--target", "cpu", "--port", str(free_port), "--expose", "--out", str(out)) == 0
    files = tree(out)
    assert set(files) >= {"Dockerfile", "model.env", "compose.yaml", "plan.json", "README.md"}
    for name, data in files.items():
        assert SECRET.encode() not in data, f"the API key's value was written to {name}"
    assert b"VLLM_API_KEY" in files["compose.yaml"], "the key's name is passed through from the environment"


def test_expose_in_the_rendered_compose(tmp_path, monkeypatch, free_port):
    import yaml

    monkeypatch.setenv("VLLM_API_KEY", SECRET)
    port = str(free_port)
    assert cli("render", CARD, "--target", "cpu", "--port", port, "--out", str(tmp_path / "local")) == 0
    assert cli("render", CARD, "--target", "cpu", "--port", port, "--expose", "--out", str(tmp_path / "pub")) == 0

    def ports(d: str) -> list:
        (svc,) = yaml.safe_load((tmp_path / d / "compose.yaml").read_text())["services"].values()
        return svc["ports"]

    assert ports("local") == [f"127.0.0.1:{free_port}:8000"]
    assert ports("pub") == [f"0.0.0.0:{free_port}:8000"]


def test_expose_without_an_api_key_is_refused(tmp_path, capsys, free_port):
    port = str(free_port)
    assert cli("render", CARD, "--target", "cpu", "--port", port, "--expose", "--out", str(tmp_path / "d")) == 2
    assert "VLLM_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------- memory

def test_kv_heads_are_replicated_when_tp_exceeds_kv_heads():
    from deploy_kit.memory import kv_heads_per_device

    assert [kv_heads_per_device(8, tp) for tp in (1, 2, 4, 8, 16)] == [8, 4, 2, 1, 1]
    assert kv_heads_per_device(2, 4) == 1  # 2 KV heads over 4 devices: each holds one whole head


def test_kv_cache_per_device_stops_shrinking_once_tp_exceeds_kv_heads():
    from deploy_kit.cardload import load_card
    from deploy_kit.memory import estimate

    card = load_card("llama-3.1-8b-instruct").card  # 8 KV heads
    kv = {tp: estimate(card, tp=tp, device_memory_gib=64, reserve_gib=4).kv_bytes_per_token for tp in (4, 8, 16)}
    c = card.model.config
    assert kv[8] == 2 * c.num_layers * 1 * c.head_dim * 2  # one head per device, bf16
    assert kv[16] == kv[8]  # replicated: not halved again
    assert kv[4] == 2 * kv[8]


# ------------------------------------------------------------------------------- up refuses first

def test_busy_port_is_refused_before_any_container_starts(runtime_recorder, capsys):
    with socket.socket() as held:  # a foreign process holds the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert cli("up", CARD, "--target", "cpu", "--port", str(port)) == 3
    assert str(port) in capsys.readouterr().err
    assert runtime_recorder == []


def test_port_held_by_a_deployment_is_refused_naming_the_holder(runtime_recorder, capsys, free_port):
    save_holder("holder-app", port=free_port)
    assert cli("up", CARD, "--target", "cpu", "--port", str(free_port)) == 3
    err = capsys.readouterr().err
    assert "holder-app" in err and str(free_port) in err
    assert runtime_recorder == []


def test_busy_npu_is_refused_before_any_container_starts(fake_npu_smi, runtime_recorder, capsys, free_port):
    # NPU 0 runs a foreign process (pid 412876) in the fixture: asking for it is refused, naming it.
    assert cli("up", "llama-3.1-8b-instruct", "--target", "ascend-a2", "--devices", "0",
               "--port", str(free_port)) == 3
    err = capsys.readouterr().err
    assert "412876" in err
    assert runtime_recorder == []


def test_npu_held_by_a_deployment_is_refused_naming_the_holder(fake_npu_smi, runtime_recorder, capsys,
                                                               free_port, monkeypatch):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_idle.txt")
    save_holder("npu-holder", devices=("4", "5"), target="ascend-a2")
    assert cli("up", "llama-3.1-8b-instruct", "--target", "ascend-a2", "--devices", "4",
               "--port", str(free_port)) == 3
    assert "npu-holder" in capsys.readouterr().err
    assert runtime_recorder == []


# ------------------------------------------------------------------------------- devices

def test_deploykit_devices_end_to_end(fake_npu_smi, capsys):
    save_holder("llama-a", devices=("4", "5"), target="ascend-a2")
    save_holder("cpu-app", target="cpu")  # holds no device: not listed
    assert cli("devices", "--target", "ascend-a2") == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if line.strip()]
    holders = {r[0].strip(): r[1].strip() for r in rows if len(r) == 2 and r[0].strip().isdigit()}
    assert set(holders) == {"0", "4", "5"}
    assert "412876" in holders["0"]
    assert "llama-a" in holders["4"] and "llama-a" in holders["5"]


def test_deploykit_devices_with_nothing_held(fake_npu_smi, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "a2_idle.txt")
    assert cli("devices", "--target", "ascend-a2") == 0
    assert capsys.readouterr().out.strip() == "no device is held by a deploykit deployment or an NPU process"


def test_deploykit_devices_refuses_when_npu_smi_fails(fake_npu_smi, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_NPU_SMI_FIXTURE", "device_used_error.txt")  # npu-smi exits 255
    assert cli("devices", "--target", "ascend-a2") == 3
    assert "npu-smi" in capsys.readouterr().err


# ------------------------------------------------------------------------------- --dry-run

def test_every_mutating_command_has_dry_run():
    """The README: "Every mutating command has --dry-run"."""
    from typer.testing import CliRunner

    from deploy_kit.cli import app

    mutating = [["render"], ["pull"], ["up"], ["down"], ["cache", "rm"], ["stack", "render"], ["stack", "up"],
                ["stack", "down"]]
    missing = [" ".join(c) for c in mutating
               if "--dry-run" not in CliRunner().invoke(app, [*c, "--help"], terminal_width=200).output]
    assert missing == []


def test_down_dry_run_changes_nothing(capsys, free_port):
    from deploy_kit.runtime import state

    save_holder("dry-app", port=free_port)
    assert cli("down", "dry-app", "--dry-run") == 0
    assert "dry-app" in capsys.readouterr().out
    assert state.load("dry-app") is not None


def test_cache_rm_dry_run_changes_nothing(capsys):
    from deploy_kit.paths import cache_dir

    d = cache_dir() / "tiny"
    make_model_files(d)
    (d / ".deploykit.json").write_text(json.dumps({"source": "huggingface", "repo": "org/tiny",
                                                   "commit": "c" * 40, "files": []}))
    before = tree(d)
    assert cli("cache", "rm", "tiny", "--dry-run") == 0
    assert "tiny" in capsys.readouterr().out
    assert tree(d) == before


def test_stack_render_dry_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "stack-out"
    stack = REPO / "compose" / "atlas-a2-mixed.yaml"
    rev = "0123456789abcdef0123456789abcdef01234567"
    assert cli("stack", "render", str(stack), "--out", str(out), "--dry-run",
               "--set", f"internlm:model.revision={rev}", "--set", f"internvl:model.revision={rev}") == 0
    assert capsys.readouterr().out.strip() != ""
    assert not out.exists()


def test_stack_down_dry_run_changes_nothing(capsys):
    from deploy_kit.runtime import state

    save_holder("internvl", devices=("6",), target="ascend-a2")
    stack = REPO / "compose" / "atlas-a2-mixed.yaml"
    assert cli("stack", "down", str(stack), "--dry-run") == 0
    assert "internvl" in capsys.readouterr().out
    assert state.load("internvl") is not None


def test_every_listing_command_has_json():
    """The README: "listing commands have --json"."""
    from typer.testing import CliRunner

    from deploy_kit.cli import app

    listing = [["list"], ["show"], ["plan"], ["status"], ["devices"], ["cache", "ls"], ["cache", "verify"],
               ["stack", "plan"], ["doctor"], ["validate"], ["triage"], ["bench"]]
    missing = [" ".join(c) for c in listing
               if "--json" not in CliRunner().invoke(app, [*c, "--help"], terminal_width=200).output]
    assert missing == []


def test_up_internvl2_on_a_host_without_npus_warns_first_then_names_the_missing_npus(capsys):
    """The README: `deploykit up internvl2-2b` stops at the preflight naming the missing NPUs/driver,
    after upstream's "not supported" warning."""
    assert cli("up", "internvl2-2b") == 3
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("warning: upstream vLLM-Ascend v0.23.0 marks InternVL2")
    assert err.startswith("error: preflight failed for internvl2-2b")
    assert "npu-smi not found" in err and "no /dev/davinci* nodes" in err
