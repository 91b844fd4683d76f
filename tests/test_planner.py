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
    # vLLM budgets what torch_npu reports (60.96 GiB of a 64 GB 910B) x gpu_memory_utilization
    assert m.device_memory_gib == 60.96
    assert m.available_per_device_gib == round(60.96 * 0.9, 3) == 54.864
    assert m.fits
    assert any(n.startswith("HBM budget: 60.96 GiB") and "54.86 GiB" in n for n in p.notes)


def test_tp2_halves_weights_and_kv_heads():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, **FREE)
    assert p.memory.weights_gib == round(8.03e9 * 2 / 2 / GIB, 3)
    assert p.memory.kv_bytes_per_token == 131072 // 2
    assert p.host_devices == [0, 1]
    assert p.device_nodes[:2] == ["/dev/davinci0", "/dev/davinci1"]
    assert p.env["HCCL_OP_EXPANSION_MODE"] == "AIV"
    assert p.env["HCCL_CONNECT_TIMEOUT"] == p.env["HCCL_EXEC_TIMEOUT"] == "600"
    assert "HCCL_BUFFSIZE" not in p.env  # no upstream source for a default
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


def test_port_asked_for_and_in_use_is_refused():
    with pytest.raises(Infeasible) as ei:
        plan("llama-3.1-8b-instruct", target="ascend-a2", port=8123, port_probe=lambda port: port == 8123)
    assert ei.value.reasons == ["port 8123 is taken by another process on this host", "suggestion: pick another --port"]


def test_default_port_moves_past_deployments_and_busy_host_ports():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", busy_ports={8000: "deployment 'demo'"},
             port_probe=lambda port: port == 8001)
    assert p.port == 8002
    assert "port 8000 is taken by deployment 'demo'; using 8002 (--port to choose)" in p.notes


def test_a_plan_probes_no_host_port_by_default():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        held = s.getsockname()[1]
        assert plan("llama-3.1-8b-instruct", target="ascend-a2", port=held).port == held


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


def test_unpinned_remote_code_plans_with_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("DEPLOYKIT_REQUIRE_PINNED", raising=False)
    p = plan("internlm2.5-7b-chat", target="ascend-a2", **FREE)
    assert p.weights.revision is None and "--trust-remote-code" in p.argv
    assert p.warnings == ["remote code unpinned; `pull` will lock a commit (trust_remote_code runs the "
                          "repository's Python from Shanghai_AI_Laboratory/internlm2_5-7b-chat)"]
    p = plan("internlm2.5-7b-chat", target="ascend-a2", sets=PIN, **FREE)
    assert "--trust-remote-code" in p.argv and p.weights.revision == PIN[0].split("=")[1]
    assert p.warnings == []


def test_require_pinned_refuses_by_parameter_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    with pytest.raises(BadInput, match="pin model.revision") as ei:
        plan("internlm2.5-7b-chat", target="ascend-a2", require_pinned=True, **FREE)
    assert ei.value.exit_code == 2 and ei.value.field == "model.revision"
    monkeypatch.setenv("DEPLOYKIT_REQUIRE_PINNED", "1")
    with pytest.raises(BadInput, match="pin model.revision"):
        plan("internlm2.5-7b-chat", target="ascend-a2", **FREE)
    assert plan("internlm2.5-7b-chat", target="ascend-a2", require_pinned=False, **FREE).warnings


def test_locked_commit_used_and_said(monkeypatch, tmp_path):
    from deploy_kit.weights.lock import record_lock

    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    sha = "f" * 40
    record_lock("internlm2.5-7b-chat", "Shanghai_AI_Laboratory/internlm2_5-7b-chat", sha, source="modelscope")
    p = plan("internlm2.5-7b-chat", target="ascend-a2", require_pinned=True, **FREE)
    assert p.weights.revision == sha and p.warnings == []
    assert f"remote code: using commit {sha}, locked by `deploykit pull` (review it before serving)" in p.notes


def test_internvl_not_supported_warning_first_and_strict(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    p = plan("internvl2-2b", target="ascend-a2", **FREE)
    assert p.vllm_ascend_release == "v0.23.0" and p.upstream_support.status == "not-supported"
    assert p.warnings[0] == (
        "upstream vLLM-Ascend v0.23.0 marks InternVL2.0/2.5/3.0, InternVideo2.5, Mono-InternVL NOT SUPPORTED "
        "(https://github.com/vllm-project/vllm-ascend/issues/2064); supported alternative: qwen2.5-vl-7b-instruct; "
        "the smoke test decides on real hardware")
    with pytest.raises(Infeasible) as ei:
        plan("internvl2-2b", target="ascend-a2", strict=True, **FREE)
    assert ei.value.exit_code == 3
    assert ei.value.reasons[0].startswith("--strict: upstream vLLM-Ascend v0.23.0 marks InternVL2")
    # vLLM on CUDA runs InternVL: the Ascend support table does not apply there
    assert plan("internvl2-2b", target="cuda", **FREE).upstream_support is None


def test_release_pin_and_older_release():
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", **FREE)
    assert (p.base_image, p.vllm_version) == ("quay.io/ascend/vllm-ascend:v0.23.0", "0.23.0")
    assert p.release_stack == "CANN 9.1.0, torch 2.10.0, torch_npu 2.10.0.post4"
    old = plan("llama-3.1-8b-instruct", target="ascend-a3", release="v0.13.0", **FREE)
    assert (old.base_image, old.vllm_ascend_release) == ("quay.io/ascend/vllm-ascend:v0.13.0-a3", "v0.13.0")
    assert old.release_stack == "CANN 8.5.0, torch 2.8.0, torch_npu 2.8.0.post2"
    assert old.upstream_support.status == "supported"  # Llama is ✅ in v0.13.0's matrix, 🔵 in v0.23.0's
    assert p.upstream_support.status == "experimental"
    with pytest.raises(BadInput, match="not in the pinned compatibility table") as ei:
        plan("llama-3.1-8b-instruct", target="ascend-a2", release="v9.9.9", **FREE)
    assert ei.value.field == "--vllm-ascend"
    with pytest.raises(BadInput, match="applies to Ascend targets"):
        plan("llama-3.1-8b-instruct", target="cuda", release="v0.13.0", **FREE)
    assert plan("llama-3.1-8b-instruct", target="cuda", **FREE).base_image == "vllm/vllm-openai:v0.23.0"


def test_hunyuan_refused_before_its_first_release():
    with pytest.raises(Infeasible) as ei:
        plan("hunyuan-a13b-instruct", target="ascend-a2", release="v0.18.0", sets=PIN, **FREE)
    assert ei.value.reasons == ["Hunyuan-A13B (HunYuanMoEV1ForCausalLM) needs vLLM-Ascend >= v0.19.1rc1; "
                                "release v0.18.0 does not have it (use --vllm-ascend v0.23.0)"]
    assert plan("hunyuan-a13b-instruct", target="ascend-a2", release="v0.19.1rc1", sets=PIN, **FREE).memory.fits


def test_a3_maps_two_dies_for_tp1():
    p = plan("llama-3.1-8b-instruct", target="ascend-a3", **FREE)
    assert p.tensor_parallel_size == 1 and p.host_devices == [0, 1]
    assert p.device_nodes[:2] == ["/dev/davinci0", "/dev/davinci1"]
    assert any("A3 requires at least 2 NPUs to work together" in n for n in p.notes)
    with pytest.raises(BadInput, match="1 device"):
        plan("llama-3.1-8b-instruct", target="ascend-a3", devices="3", **FREE)
    assert plan("llama-3.1-8b-instruct", target="ascend-a3", devices="4,5", **FREE).host_devices == [4, 5]


def test_every_reason_reported_together():
    with pytest.raises(Infeasible) as ei:
        plan("hunyuan-a13b-instruct", target="ascend-a2", tp=3, release="v0.18.0", sets=PIN, devices="0,1,2",
             busy_devices={0: "x"}, port=8123, port_probe=lambda port: True)
    r = " | ".join(ei.value.reasons)
    for part in ("needs vLLM-Ascend >= v0.19.1rc1", "does not divide num_attention_heads 32",
                 "device 0 is held by x", "port 8123 is taken by another process on this host"):
        assert part in r, part


def test_force_devices_turns_busy_into_warning():
    busy = {6: "process python3 (pid 9)"}
    with pytest.raises(Infeasible) as ei:
        plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, devices="6,7", busy_devices=busy, **FREE)
    assert ei.value.reasons == ["device 6 is held by process python3 (pid 9)"]
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=2, devices="6,7", busy_devices=busy,
             force_devices=True, **FREE)
    assert p.host_devices == [6, 7] and p.warnings == ["--force-devices: using 6 (process python3 (pid 9))"]


def test_provenance_names_a_source_for_every_choice():
    p = plan("hunyuan-a13b-instruct", target="ascend-a2", sets=PIN, **FREE)
    prov = p.provenance
    for k in p.env:
        assert f"env:{k}" in prov
    for m in p.mounts:
        assert f"mount:{m.target}" in prov
    for dev in p.device_nodes:
        assert f"device:{dev}" in prov
    for a in p.argv:
        if a.startswith("--"):
            assert f"flag:{a}" in prov
    qs = "https://github.com/vllm-project/vllm-ascend/blob/v0.23.0/docs/source/quick_start.md"
    assert prov["device:/dev/davinci_manager"] == qs and prov["mount:/usr/local/dcmi"] == qs
    assert prov["env:PYTORCH_NPU_ALLOC_CONF"].startswith(
        "https://github.com/vllm-project/vllm-ascend/blob/v0.23.0/docs/source/tutorials/models/Qwen-VL-Dense.md")
    assert prov["flag:--trust-remote-code"].endswith("tutorials/models/Hunyuan-A13B-Instruct.md")
    assert not any("../shared" in v or "/work/" in v for v in prov.values())


def test_a_sliding_window_shrinks_the_kv_estimate():
    full = plan("llama-3.1-8b-instruct", target="ascend-a2", **FREE).memory
    every = plan("llama-3.1-8b-instruct", target="ascend-a2", sets=["model.config.sliding_window=4096"], **FREE).memory
    some = plan("llama-3.1-8b-instruct", target="ascend-a2", **FREE,
                sets=["model.config.sliding_window=4096", "model.config.sliding_window_layers=8"]).memory
    # 8 seqs x 32768 tokens x 131072 B = 32 GiB; every layer keeps 4096 tokens: 8 x 4096 x 131072 B = 4 GiB
    assert (full.kv_cache_gib, every.kv_cache_gib) == (32.0, 4.0)
    # 8 of 32 layers windowed: (8 x 4096 + 24 x 32768) / 32 = 25600 tokens per layer -> 25 GiB
    assert some.kv_cache_gib == 25.0
    assert every.need_per_device_gib == round(full.need_per_device_gib - 28, 3)
    assert "8 seqs x 32768 tokens x 131072 B, window 4096)" in every.formula
    assert every.max_full_length_seqs > full.max_full_length_seqs


def test_seed_x_keeps_the_conservative_full_context_kv_estimate():
    """The card declares no window (its only source is a third-party copy of config.json): full KV;
    the same card with the window set halves it (max_model_len 8192, window 4096)."""
    full = plan("seed-x-instruct-7b", target="ascend-a2", **FREE).memory
    assert full.kv_cache_gib == 16.0  # 16 seqs x 8192 tokens x 131072 B
    windowed = plan("seed-x-instruct-7b", target="ascend-a2", sets=["model.config.sliding_window=4096"], **FREE)
    assert windowed.memory.kv_cache_gib == 8.0


@pytest.mark.parametrize("sets, message", [
    (["model.config.sliding_window_layers=8"], "sliding_window_layers needs sliding_window"),
    (["model.config.sliding_window=4096", "model.config.sliding_window_layers=33"], "33 exceeds num_layers (32)"),
    (["model.config.sliding_window=0"], "greater than 0")])
def test_sliding_window_facts_are_checked(sets, message):
    import re

    with pytest.raises(BadInput, match=re.escape(message)):
        plan("llama-3.1-8b-instruct", target="ascend-a2", sets=sets, **FREE)
