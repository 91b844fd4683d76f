"""Exact tests for deploy_kit/planner.py's small pieces and plan assembly, killing the mutants the
unit tier let survive (docs/measurements/mutation/planner/): port probing, --devices parsing, the
readiness deadline per target kind, argv flags, provenance fallbacks, registry mirrors, the rows
`plan` prints, and the plan fields a custom target profile or a local card decides."""

from __future__ import annotations

import socket

import pytest
import yaml

from deploy_kit.errors import BadInput, Infeasible
from deploy_kit.planner import _mirror, parse_devices, plan, port_in_use, readiness_timeout, summary_rows
from deploy_kit.targets import load_target
from tests.conftest import REPO

pytestmark = pytest.mark.unit

FREE = dict(port_probe=None)
LLAMA = "llama-3.1-8b-instruct"


def _lab_target(tmp_path, monkeypatch, **over) -> str:
    """A user target profile 'lab' (a CUDA box with davinci-style device nodes) in $DEPLOYKIT_TARGETS."""
    prof = {"name": "lab", "description": "test profile", "kind": "cuda", "image": "deploykit/lab",
            "base_image": "vllm/vllm-openai:v0.23.0", "dockerfile": "cuda.Dockerfile.j2", "device_count": 4,
            "device_memory_gib": 80, "device_kind": "lab GPU", "device_node_pattern": "/dev/davinci{id}",
            "extra_device_nodes": ["/dev/ctl", "/dev/other"],
            "mounts": [{"source": "/srv/tools", "target": "/tools", "read_only": False}],
            "visible_devices_rule": "cuda-device-ids", "runtime_reserve_gib": 3,
            "allowed_env": ["OMP_*"], "entrypoint": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
            "provenance": {"device:/dev/davinciN": "https://example.org/davinci",
                           "device:/dev/ctl": "https://example.org/ctl"}}
    prof.update(over)
    (tmp_path / "targets").mkdir(exist_ok=True)
    (tmp_path / "targets" / "lab.yaml").write_text(yaml.safe_dump(prof))
    monkeypatch.setenv("DEPLOYKIT_TARGETS", str(tmp_path / "targets"))
    return "lab"


# ------------------------------------------------------------------ port_in_use

def test_port_in_use_sees_a_held_port_and_a_free_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        held = s.getsockname()[1]
        assert port_in_use(held) is True
    assert port_in_use(held) is False


def test_port_in_use_on_all_interfaces_for_blank_and_wildcard_host():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        held = s.getsockname()[1]
        assert port_in_use(held, host="") is True
        assert port_in_use(held, host="0.0.0.0") is True
    assert port_in_use(held, host="") is False
    assert port_in_use(held, host="0.0.0.0") is False


def test_port_in_use_on_one_address_ignores_a_holder_on_another():
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        s.listen()
        held = s.getsockname()[1]
        assert port_in_use(held, host="127.0.0.1") is False
        assert port_in_use(held, host="127.0.0.2") is True


# ------------------------------------------------------------------ parse_devices

@pytest.mark.parametrize(("text", "ids"), [
    (None, None), ("", None), ([3, "4"], [3, 4]), ("0, 2,5", [0, 2, 5]), ("7", [7])])
def test_parse_devices_values(text, ids):
    assert parse_devices(text) == ids


def test_parse_devices_refuses_a_non_integer_with_message_and_field():
    with pytest.raises(BadInput) as ei:
        parse_devices("1,x")
    assert ei.value.message == "device ids are non-negative integers, got 'x'"
    assert ei.value.field == "--devices"


# ------------------------------------------------------------------ readiness_timeout

@pytest.mark.parametrize(("kind", "deadline"), [("ascend", 700), ("cuda", 400), ("cpu", 400), ("tpu", 400)])
def test_readiness_deadline_is_fixed_cost_per_kind_plus_10s_per_gib(kind, deadline):
    assert readiness_timeout(None, 10.0, kind) == deadline


def test_readiness_deadline_from_the_card_wins():
    assert readiness_timeout(123, 10.0, "ascend") == 123
    assert readiness_timeout(0, 2.55, "cpu") == 325


# ------------------------------------------------------------------ argv

def test_quantization_flag_is_appended_after_the_other_flags():
    p = plan(LLAMA, target="cuda", sets=["serve.quantization=fp8"], **FREE)
    assert p.argv[-2:] == ["--quantization", "fp8"]
    assert p.argv[:4] == ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert p.provenance["flag:--quantization"] == "card llama-3.1-8b-instruct.yaml serve.quantization"


def test_limit_mm_per_prompt_is_compact_json():
    p = plan("qwen2.5-vl-7b-instruct", target="cuda", sets=["serve.limit_mm_per_prompt={image: 2, video: 1}"], **FREE)
    assert p.argv[-2:] == ["--limit-mm-per-prompt", '{"image":2,"video":1}']


# ------------------------------------------------------------------ provenance

def test_env_set_on_the_command_line_is_credited_to_the_card():
    p = plan("smollm2-135m-instruct", target="cpu", sets=["env.OMP_NUM_THREADS=4"], **FREE)
    assert p.env["OMP_NUM_THREADS"] == "4"
    assert p.provenance["env:OMP_NUM_THREADS"] == "card smollm2-135m-instruct.yaml env.OMP_NUM_THREADS"
    assert p.provenance["env:HF_HUB_OFFLINE"] != "card smollm2-135m-instruct.yaml env.HF_HUB_OFFLINE"


def test_top_level_card_env_is_credited_to_the_card(tmp_path):
    raw = yaml.safe_load((REPO / "models" / "smollm2-135m-instruct.yaml").read_text())
    raw["env"] = {"OMP_NUM_THREADS": "3"}
    card = tmp_path / "smollm2-135m-instruct.yaml"
    card.write_text(yaml.safe_dump(raw))
    p = plan(str(card), target="cpu", **FREE)
    assert p.provenance["env:OMP_NUM_THREADS"] == "card smollm2-135m-instruct.yaml env.OMP_NUM_THREADS"


def test_device_provenance_numbered_node_named_node_and_fallback(tmp_path, monkeypatch):
    p = plan(LLAMA, target=_lab_target(tmp_path, monkeypatch), **FREE)
    assert p.device_nodes == ["/dev/davinci0", "/dev/ctl", "/dev/other"]
    assert p.provenance["device:/dev/davinci0"] == "https://example.org/davinci"
    assert p.provenance["device:/dev/ctl"] == "https://example.org/ctl"
    assert p.provenance["device:/dev/other"] == "deploykit target profile lab (no upstream source recorded)"


# ------------------------------------------------------------------ assembly

def test_profile_mount_keeps_read_write_and_weights_mount_is_read_only(tmp_path, monkeypatch):
    p = plan(LLAMA, target=_lab_target(tmp_path, monkeypatch), **FREE)
    assert [(m.source, m.target, m.read_only) for m in p.mounts] == [
        ("/srv/tools", "/tools", False), (p.weights.host_path, "/models/llama-3.1-8b-instruct", True)]


def test_vllm_version_unknown_when_the_profile_names_none(tmp_path, monkeypatch):
    assert plan(LLAMA, target=_lab_target(tmp_path, monkeypatch), **FREE).vllm_version == "unknown"


def test_vllm_version_comes_from_the_chosen_release_row():
    assert plan(LLAMA, target="ascend-a3", release="v0.13.0", **FREE).vllm_version == "0.13.0"


def test_local_weights_are_mounted_from_the_card_path():
    p = plan(LLAMA, target="cuda", sets=["model.source=local", "model.path=/srv/llama"], **FREE)
    assert p.weights.host_path == "/srv/llama"
    assert p.mounts[-1].source == "/srv/llama"


def test_max_model_len_defaults_to_the_context_length(tmp_path):
    raw = yaml.safe_load((REPO / "models" / "llama-3.1-8b-instruct.yaml").read_text())
    del raw["serve"]["max_model_len"]
    raw["model"]["context_length"] = 4096
    card = tmp_path / "llama-3.1-8b-instruct.yaml"
    card.write_text(yaml.safe_dump(raw))
    p = plan(str(card), target="cuda", **FREE)
    assert p.argv[p.argv.index("--max-model-len") + 1] == "4096"


def test_health_check_interval_from_the_card_or_the_default():
    assert plan(LLAMA, target="cuda", sets=["serve.health_check_interval_s=30"], **FREE).health_check_interval_s == 30
    assert plan(LLAMA, target="cuda", **FREE).health_check_interval_s == 10


def test_shm_size_for_tp2_is_the_tp_size():
    assert plan(LLAMA, target="cuda", tp=2, **FREE).shm_size == "16g"
    assert plan(LLAMA, target="cuda", **FREE).shm_size == "2g"


def test_deployment_name_override():
    p = plan(LLAMA, target="cuda", name="llama-b", **FREE)
    assert (p.name, p.card_name) == ("llama-b", LLAMA)


def test_infeasible_message_names_card_and_target():
    with pytest.raises(Infeasible) as ei:
        plan(LLAMA, target="ascend-a2", tp=3, **FREE)
    assert ei.value.message == "llama-3.1-8b-instruct on ascend-a2 cannot work"


# ------------------------------------------------------------------ registry mirror

@pytest.mark.parametrize(("mirror", "image", "mirrored"), [
    ("m.daocloud.io/", "quay.io/ascend/vllm-ascend:v0.23.0", "m.daocloud.io/ascend/vllm-ascend:v0.23.0"),
    ("m.daocloud.io//", "deploykit/base:bookworm", "m.daocloud.io/deploykit/base:bookworm"),
    ("/m.daocloud.io", "vllm/vllm-openai:v0.23.0", "/m.daocloud.io/vllm/vllm-openai:v0.23.0"),
    ("hub.LAX", "python:3.11", "hub.LAX/python:3.11"),
    ("", "vllm/vllm-openai:v0.23.0", "vllm/vllm-openai:v0.23.0")])
def test_registry_mirror_replaces_only_a_registry_host(monkeypatch, mirror, image, mirrored):
    monkeypatch.setenv("DEPLOYKIT_REGISTRY_MIRROR", mirror)
    assert _mirror(load_target("cuda"), image) == mirrored


# ------------------------------------------------------------------ summary rows

def test_summary_rows_for_ascend_with_support_source_and_notes():
    p = plan(LLAMA, target="ascend-a2", **FREE)
    rows = summary_rows(p)
    assert rows[0] == ("vLLM", "0.23.0 (vLLM-Ascend v0.23.0: CANN 9.1.0, torch 2.10.0, torch_npu 2.10.0.post4)")
    assert rows[1] == ("upstream", "Llama2/3/3.1/3.2: experimental on vLLM-Ascend v0.23.0 (https://github.com/"
                                   "vllm-project/vllm-ascend/blob/v0.23.0/docs/source/user_guide/support_matrix/"
                                   "supported_models.md)")
    assert rows[2:] == [("note", n) for n in p.notes]
    assert len(rows) == 2 + len(p.notes) >= 3


def test_summary_rows_for_an_unlisted_architecture_has_no_source():
    p = plan(LLAMA, target="ascend-a2", sets=["model.architecture=FooForCausalLM"], **FREE)
    assert summary_rows(p)[1] == ("upstream", "FooForCausalLM: unlisted on vLLM-Ascend v0.23.0")


def test_summary_rows_off_ascend_is_the_vllm_version_only():
    assert summary_rows(plan("smollm2-135m-instruct", target="cpu", **FREE)) == [("vLLM", "0.32.0")]
