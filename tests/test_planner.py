"""Planner: exact memory arithmetic, TP rules, device and port choice, Ascend env, expose."""

from __future__ import annotations

import pytest

from deploy_kit.errors import BadInput, Infeasible
from deploy_kit.memory import GIB
from deploy_kit.planner import plan

pytestmark = pytest.mark.unit

FREE = dict(port_probe=lambda port: False)
# Catalog remote-code cards ship unpinned on purpose (the operator pins the commit they reviewed).
PIN = ["model.revision=0123456789abcdef0123456789abcdef01234567"]


def test_llama_memory_arithmetic_exact():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", **FREE)
    m = p.memory
    # weights: 8.03e9 params x 2 bytes (bf16) / TP 1
    assert m.weights_gib == round(8.03e9 * 2 / GIB, 3) == 14.957
    # KV per token: 2 (K,V) x 32 layers x 8 kv heads x 128 head_dim x 2 bytes = 131072 B
    assert m.kv_bytes_per_token == 131072
    # 8 seqs x 32768 tokens x 131072 B = exactly 32 GiB
    assert m.kv_cache_gib == 32.0
    assert m.reserve_gib == 4
    assert m.need_per_device_gib == round(8.03e9 * 2 / GIB + 32 + 4, 3)
    assert m.available_per_device_gib == pytest.approx(64 * 0.9)
    assert m.fits


def test_tp2_halves_weights_and_kv_heads():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, **FREE)
    assert p.memory.weights_gib == round(8.03e9 * 2 / 2 / GIB, 3)
    assert p.memory.kv_bytes_per_token == 131072 // 2
    assert p.host_devices == [0, 1]
    assert p.device_nodes[:2] == ["/dev/davinci0", "/dev/davinci1"]
    assert p.env["HCCL_OP_EXPANSION_MODE"] == "AIV"
    assert "HCCL_CONNECT_TIMEOUT" in p.env and "HCCL_BUFFSIZE" in p.env
    assert "ASCEND_RT_VISIBLE_DEVICES" not in p.env
    assert p.visible_devices_rule
    i = p.argv.index("--tensor-parallel-size")
    assert p.argv[i + 1] == "2"


def test_argv_exec_form_and_bind():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", **FREE)
    assert p.argv[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert p.argv[p.argv.index("--model") + 1] == "/models/llama-3.1-8b-instruct"
    assert p.bind_host == "127.0.0.1" and p.port == 8000
    assert "--trust-remote-code" not in p.argv


def test_tp_not_dividing_heads_is_infeasible():
    with pytest.raises(Infeasible) as ei:
        plan("llama-3.1-8b-instruct", target="ascend-a2", tp=3, **FREE)
    assert any("3" in r for r in ei.value.reasons)


def test_hunyuan_does_not_fit_tp2_lists_reasons():
    with pytest.raises(Infeasible) as ei:
        plan("hunyuan-a13b-instruct", target="ascend-a2", tp=2, sets=PIN, **FREE)
    assert any("does not fit" in r for r in ei.value.reasons)


def test_hunyuan_default_plan_fits():
    p = plan("hunyuan-a13b-instruct", target="ascend-a2", sets=PIN, **FREE)
    assert p.tensor_parallel_size >= 4 and p.memory.fits


def test_gptq_on_ascend_refused_with_alternative():
    with pytest.raises(BadInput) as ei:
        plan("hunyuan-a13b-instruct", target="ascend-a2", sets=PIN + ["serve.quantization=gptq"], **FREE)
    text = str(ei.value) + str(ei.value.hint)
    assert "gptq" in text and "ascend" in text.lower()


def test_devices_explicit_twice_and_out_of_range():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, devices="6,7", **FREE)
    assert p.host_devices == [6, 7]
    with pytest.raises(BadInput, match="listed twice"):
        plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, devices="6,6", **FREE)
    with pytest.raises((BadInput, Infeasible)) as ei:
        plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, devices="7,8", **FREE)
    assert "8" in str(ei.value) + " ".join(getattr(ei.value, "reasons", []))


def test_busy_devices_skipped():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, busy_devices={0: "other", 1: "other"}, **FREE)
    assert p.host_devices == [2, 3]


def test_port_in_use_injected():
    with pytest.raises(Infeasible) as ei:
        plan("llama-3.1-8b-instruct", target="ascend-a2", port=8123, port_probe=lambda port: port == 8123)
    assert "8123" in str(ei.value) + " ".join(ei.value.reasons)


def test_expose_requires_key(monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(BadInput):
        plan("smollm2-135m-instruct", target="cpu", expose=True, **FREE)
    monkeypatch.setenv("VLLM_API_KEY", "s3cret-value")
    p = plan("smollm2-135m-instruct", target="cpu", expose=True, **FREE)
    assert p.bind_host == "0.0.0.0"
    assert "s3cret-value" not in p.model_dump_json()
    assert "VLLM_API_KEY" in p.secret_env


def test_cpu_plan_has_no_devices():
    p = plan("smollm2-135m-instruct", target="cpu", **FREE)
    assert p.host_devices == [] and p.device_nodes == []
    # the card's targets.cpu.env (2) beats the profile default (1)
    assert p.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert p.memory.weights_gib == 0.0


def test_env_not_allowed_on_target():
    with pytest.raises(BadInput) as ei:
        plan("smollm2-135m-instruct", target="cpu", sets=["env.HCCL_BUFFSIZE=200"], **FREE)
    assert "HCCL_BUFFSIZE" in str(ei.value)


def test_unpinned_remote_code_refused():
    with pytest.raises(BadInput, match="pin model.revision"):
        plan("internlm2.5-7b-chat", target="ascend-a2", **FREE)
    p = plan("internlm2.5-7b-chat", target="ascend-a2", sets=PIN, **FREE)
    assert "--trust-remote-code" in p.argv and p.weights.revision == PIN[0].split("=")[1]
