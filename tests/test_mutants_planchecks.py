"""Exact tests for the planner's checks (deploy_kit/planchecks.py), killing the mutants the unit tier
let survive (docs/measurements/mutation/planchecks/): each refusal's message, file, line, field and
hint; TP, device and port boundaries; memory suggestions; the container's device numbering."""

from __future__ import annotations

import pytest
import yaml

from deploy_kit.errors import BadInput, Infeasible
from deploy_kit.planchecks import (_choose_devices, _validate_requested, check_env, check_expose, check_release,
                                   choose_port, devices_needed, support_on, visible_devices)
from deploy_kit.planner import _draft, plan
from deploy_kit.targets import load_target
from tests.conftest import REPO

pytestmark = pytest.mark.unit

FREE = dict(port_probe=None)
LLAMA = "llama-3.1-8b-instruct"
SMOL = "smollm2-135m-instruct"
PIN = ["model.revision=" + "a" * 40]


def _refusal(*args, **kwargs) -> tuple:
    with pytest.raises(BadInput) as ei:
        plan(*args, **FREE, **kwargs)
    e = ei.value
    return e.message, e.file, e.line, e.field, e.hint


def _reasons(*args, **kwargs) -> list[str]:
    with pytest.raises(Infeasible) as ei:
        plan(*args, **FREE, **kwargs)
    return ei.value.reasons


def _smol_with_env(tmp_path, env_yaml: str) -> str:
    """The smollm2 card with `env:` (line 26) holding ``env_yaml`` from line 27 on."""
    text = (REPO / "models" / f"{SMOL}.yaml").read_text().replace("env: {}", "env:\n  " + env_yaml)
    card = tmp_path / f"{SMOL}.yaml"
    card.write_text(text)
    return str(card)


# ------------------------------------------------------------------ release

def test_release_flag_off_ascend_is_refused_with_field():
    with pytest.raises(BadInput) as ei:
        check_release(load_target("cuda"), "v0.13.0")
    assert (ei.value.message, ei.value.field) == ("--vllm-ascend applies to Ascend targets, not cuda", "--vllm-ascend")


def test_unknown_release_lists_the_known_ones():
    from deploy_kit.doctor.compat import load_compat

    with pytest.raises(BadInput) as ei:
        check_release(load_target("ascend-a2"), "v9.9.9")
    assert ei.value.field == "--vllm-ascend"
    assert ei.value.hint == "known: " + ", ".join(r.tag for r in load_compat().rows)
    assert ei.value.hint.startswith("known: v0.7.3, v0.7.3.post1, ")


# ------------------------------------------------------------------ remote code, quantization, env

def test_require_pinned_points_at_the_card_line_and_hints(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    msg, file, line, field, hint = _refusal("internlm2.5-7b-chat", target="ascend-a2", require_pinned=True)
    assert (file, field) == (str(REPO / "models" / "internlm2.5-7b-chat.yaml"), "model.revision")
    assert line == 12  # `revision: null`
    assert hint == "e.g. --set model.revision=<commit sha>, or `deploykit pull` to lock the branch head"


def test_lock_recorded_under_the_alternative_hub_is_found(tmp_path, monkeypatch):
    from deploy_kit.weights.lock import record_lock

    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    card = yaml.safe_load((REPO / "models" / "internlm2.5-7b-chat.yaml").read_text())
    (alt_hub, alt_id), = card["model"]["alt_ids"].items()
    record_lock("internlm2.5-7b-chat", alt_id, "e" * 40, source=alt_hub)
    assert plan("internlm2.5-7b-chat", target="ascend-a2", require_pinned=True, **FREE).weights.revision == "e" * 40


def test_unsupported_quantization_from_set_is_case_insensitive():
    assert _refusal(LLAMA, target="cuda", sets=["serve.quantization=Ascend"]) == (
        "quantization 'Ascend' cannot run on target cuda", "--set", None, "serve.quantization",
        "quantization 'ascend' (ModelSlim) runs only on vLLM-Ascend: use the BF16, AWQ, GPTQ or FP8 weights")


def test_unsupported_quantization_from_the_card_names_its_line(tmp_path):
    text = (REPO / "models" / f"{LLAMA}.yaml").read_text().replace("  max_num_seqs: 8\n",
                                                                   "  max_num_seqs: 8\n  quantization: ascend\n")
    card = tmp_path / f"{LLAMA}.yaml"
    card.write_text(text)
    assert _refusal(str(card), target="cuda")[:4] == (
        "quantization 'ascend' cannot run on target cuda", str(card), 23, "serve.quantization")


def test_secret_in_the_card_env_names_file_line_and_field(tmp_path):
    card = _smol_with_env(tmp_path, "HF_TOKEN: x")
    assert _refusal(card, target="cpu") == (
        "HF_TOKEN is a secret: it is read from the operator's environment, never written into cards or "
        "rendered files", card, 27, "env.HF_TOKEN", None)


def test_env_not_allowed_names_file_line_field_and_the_allowed_globs(tmp_path):
    card = _smol_with_env(tmp_path, "OMP_NUM_THREADS: '1'\n  NCCL_X: '1'")
    assert _refusal(card, target="cpu") == (
        "env var NCCL_X is not allowed on target cpu", card, 28, "env.NCCL_X",
        "allowed: VLLM_*, OMP_*, HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, TOKENIZERS_PARALLELISM, LD_PRELOAD, "
        "ONEDNN_*, KMP_*")


def test_env_value_problem_names_file_line_and_field(tmp_path):
    text = (REPO / "models" / f"{LLAMA}.yaml").read_text()
    text = text.replace("serve:\n", "env:\n  HCCL_CONNECT_TIMEOUT: abc\nserve:\n")
    card = tmp_path / f"{LLAMA}.yaml"
    card.write_text(text)
    assert _refusal(str(card), target="ascend-a2") == (
        "HCCL_CONNECT_TIMEOUT: must be a positive integer (got 'abc')", str(card), 21, "env.HCCL_CONNECT_TIMEOUT",
        None)


def test_env_value_problem_from_set():
    assert _refusal(LLAMA, target="ascend-a2", sets=["env.HCCL_CONNECT_TIMEOUT=abc"]) == (
        "HCCL_CONNECT_TIMEOUT: must be a positive integer (got 'abc')", "--set", None, "env.HCCL_CONNECT_TIMEOUT", None)


def test_check_env_refuses_a_bad_key_that_got_past_the_card_model():
    d = _draft(SMOL, "cpu", None, None, None)
    d.card.env["bad key"] = "1"
    with pytest.raises(BadInput) as ei:
        check_env(d)
    assert (ei.value.message, ei.value.file, ei.value.line, ei.value.field) == (
        "env key 'bad key' is not a variable name: upper-case letters, digits and '_', not starting with a digit "
        "(^[A-Z_][A-Z0-9_]*$)", str(REPO / "models" / f"{SMOL}.yaml"), 26, "env")


# ------------------------------------------------------------------ upstream support

def test_unlisted_architecture_support_entry():
    s, first = support_on("FooForCausalLM", "v0.23.0")
    assert first is None
    assert s.model_dump() == {"architecture": "FooForCausalLM", "family": "FooForCausalLM", "release": "v0.23.0",
                              "status": "unlisted", "source": None, "issue": None,
                              "note": "not in deploykit's upstream support table"}


def test_release_before_every_recorded_status_uses_the_first_one():
    s, first = support_on("HunYuanMoEV1ForCausalLM", "v0.13.0")
    assert (s.status, first) == ("supported", "v0.19.1rc1")
    assert s.note == "upstream tutorial (BF16, TP4 on Atlas A2/A3); no row in the support matrix"


def test_not_supported_without_alternative_has_no_alternative_clause(monkeypatch):
    import deploy_kit.planchecks as pc

    real = pc.load_support()
    entry = real.architectures["InternVLChatModel"].model_copy(update={"alternative": None})
    table = real.model_copy(update={"architectures": {**real.architectures, "InternVLChatModel": entry}})
    monkeypatch.setattr(pc, "load_support", lambda: table)
    p = plan("internvl2-2b", target="ascend-a2", **FREE)
    assert p.warnings[0] == (
        "upstream vLLM-Ascend v0.23.0 marks InternVL2.0/2.5/3.0, InternVideo2.5, Mono-InternVL NOT SUPPORTED "
        "(https://github.com/vllm-project/vllm-ascend/issues/2064); the smoke test decides on real hardware")


# ------------------------------------------------------------------ tensor parallel

def test_tp_equal_to_kv_heads_is_fine_and_above_must_be_a_multiple():
    heads = ["model.config.num_attention_heads=24", "model.config.num_kv_heads=4"]
    assert plan(LLAMA, target="cuda", tp=4, sets=heads, **FREE).tensor_parallel_size == 4
    assert plan(LLAMA, target="cuda", tp=8, sets=["model.config.num_kv_heads=4"], **FREE).tensor_parallel_size == 8
    assert _reasons(LLAMA, target="cuda", tp=6, sets=heads) == [
        "tensor_parallel_size 6 > num_kv_heads 4 needs TP to be a multiple of it (vLLM replicates KV heads)"]


def test_tp_below_kv_heads_must_divide_them():
    heads = ["model.config.num_attention_heads=48", "model.config.num_kv_heads=6"]
    assert _reasons(LLAMA, target="cuda", tp=4, sets=heads) == [
        "tensor_parallel_size 4 does not divide num_kv_heads 6"]


def test_cpu_refuses_tp2_and_says_so_once():
    sets = ["model.config.num_attention_heads=8", "model.config.num_kv_heads=2"]
    assert _reasons(SMOL, target="cpu", tp=2, sets=sets) == [
        "the cpu target runs tensor_parallel_size 1 only in deploykit"]
    assert _reasons(SMOL, target="cpu", tp=2, sets=sets, devices="0") == [
        "the cpu target runs tensor_parallel_size 1 only in deploykit"]


def test_tp_over_the_device_count_is_one_reason():
    assert _reasons(LLAMA, target="cuda", tp=16) == ["tensor_parallel_size 16 exceeds the 8 devices of target cuda"]
    assert plan(LLAMA, target="cuda", tp=8, **FREE).host_devices == list(range(8))


# ------------------------------------------------------------------ devices

def test_devices_needed_per_kind():
    assert devices_needed(load_target("cpu"), 1) == 0
    assert devices_needed(load_target("ascend-a3"), 1) == 2
    assert devices_needed(load_target("ascend-a2"), 4) == 4


def test_cpu_devices_flag_is_a_reason():
    assert _reasons(SMOL, target="cpu", devices="0") == ["the cpu target has no devices to choose (--devices)"]
    assert plan(SMOL, target="cpu", **FREE).host_devices == []


@pytest.mark.parametrize(("need", "busy", "chosen"), [
    (2, {1: "x"}, [2, 3]),
    (2, {0: "x"}, [2, 3]),
    (2, {0: "a", 2: "b", 4: "c", 5: "d"}, [6, 7]),
    (3, {}, [0, 1, 2]),
    (3, {0: "x"}, [3, 4, 5]),
    (8, {}, list(range(8))),
    (1, {0: "x", 1: "y"}, [2]),
    (2, {0: "a", 2: "b", 4: "c", 6: "d"}, [1, 3]),
    (4, {0: "a", 2: "b", 4: "c", 6: "d"}, [1, 3, 5, 7])])
def test_free_devices_prefer_an_aligned_block(need, busy, chosen):
    assert _choose_devices(load_target("ascend-a2"), need, None, busy) == (chosen, [])


def test_too_few_free_devices_names_every_holder():
    assert _choose_devices(load_target("ascend-a2"), 5, None, {6: "d", 0: "a", 2: "b", 4: "c"}) == (
        [], ["only 4 free device(s) for 5 needed (busy: 0: a, 2: b, 4: c, 6: d)"])


def test_requested_devices_errors_exact():
    a2 = load_target("ascend-a2")
    cases = [([3, 3, 4, 4], 4, "device(s) [3, 4] listed twice", None),
             ([7, 8, 9], 3, "device(s) [8, 9] out of range: target ascend-a2 has devices 0..7", None),
             ([1], 2, "1 device(s) given, 2 needed", "give exactly 2 ids or change --tp")]
    for requested, need, message, hint in cases:
        with pytest.raises(BadInput) as ei:
            _validate_requested(a2, need, requested)
        assert (ei.value.message, ei.value.field, ei.value.hint) == (message, "--devices", hint)


def test_force_devices_lists_every_held_device_in_order():
    busy = {7: "b", 6: "a", 0: "c"}
    p = plan(LLAMA, target="ascend-a2", tp=2, devices="6,7", busy_devices=busy, force_devices=True, **FREE)
    assert p.warnings == ["--force-devices: using 6 (a), 7 (b)"]


# ------------------------------------------------------------------ memory

def test_cpu_plan_sizes_the_kv_cache_from_the_env_not_device_memory():
    p = plan(SMOL, target="cpu", sets=["env.VLLM_CPU_KVCACHE_SPACE=3"], **FREE)
    assert (p.memory.device_memory_gib, p.memory.available_per_device_gib) == (3.0, 3.0)
    assert p.memory.weights_gib == 0.0


def test_cpu_kv_estimate_keeps_the_sliding_window():
    full = plan(SMOL, target="cpu", **FREE).memory
    windowed = plan(SMOL, target="cpu", sets=["model.config.sliding_window=1024"], **FREE).memory
    assert windowed.kv_cache_gib * 2 == full.kv_cache_gib == 1.406


def test_cpu_kv_cache_holding_exactly_max_num_seqs_warns_nothing():
    p = plan(SMOL, target="cpu", sets=["serve.max_num_seqs=22"], **FREE)
    assert (p.memory.max_full_length_seqs, p.warnings) == (22, [])


def test_ascend_plan_counts_weights_in_device_memory():
    p = plan(LLAMA, target="ascend-a2", **FREE)
    assert p.memory.need_per_device_gib == round(14.957 + 32 + 4, 3)


def test_too_many_sequences_suggests_how_many_fit():
    assert _reasons(SMOL, target="cpu", sets=["serve.max_num_seqs=32"])[1] == (
        "suggestion: lower serve.max_num_seqs to 22 or serve.max_model_len")


def test_one_sequence_that_cannot_fit_on_cpu_suggests_kv_space():
    reasons = _reasons(SMOL, target="cpu", sets=["model.context_length=65536", "serve.max_model_len=65536",
                                                  "env.VLLM_CPU_KVCACHE_SPACE=1"])
    assert reasons[1] == "suggestion: raise VLLM_CPU_KVCACHE_SPACE or lower serve.max_model_len / serve.max_num_seqs"


def test_weights_that_cannot_fit_suggest_more_tp():
    assert _reasons("hunyuan-a13b-instruct", target="ascend-a2", tp=2, sets=PIN)[1] == (
        "suggestion: raise --tp, or use quantized weights (W8A8 with quantization 'ascend' on Ascend)")


def test_exactly_one_full_sequence_suggests_one():
    # KV for one 131072-token sequence: 16 GiB; 2 seqs need 32 GiB + 14.96 + 4 > 54.86 GiB
    reasons = _reasons(LLAMA, target="ascend-a2", sets=["serve.max_model_len=131072", "serve.max_num_seqs=3"])
    assert reasons[1] == "suggestion: lower serve.max_num_seqs to 2 or serve.max_model_len"
    # at utilization 0.6: 60.96 x 0.6 - 14.96 - 4 = 17.6 GiB holds one such sequence
    reasons = _reasons(LLAMA, target="ascend-a2", sets=["serve.max_model_len=131072", "serve.max_num_seqs=2",
                                                         "serve.gpu_memory_utilization=0.6"])
    assert reasons[1] == "suggestion: lower serve.max_num_seqs to 1 or serve.max_model_len"


# ------------------------------------------------------------------ visible devices

def test_visible_devices_notes_per_rule():
    assert visible_devices(load_target("cuda"), [2, 3], {}) == (
        "host GPUs [2, 3] handed over with device_ids; the container sees them as 0..1; "
        "CUDA_VISIBLE_DEVICES left unset", [])
    assert visible_devices(load_target("cpu"), [], {}) == ("no accelerator devices", [])


def test_ascend_rt_visible_devices_inside_the_mapped_range_is_accepted():
    a3 = load_target("ascend-a3")
    assert visible_devices(a3, [4, 5], {"ASCEND_RT_VISIBLE_DEVICES": "0,1"})[1] == []
    assert visible_devices(a3, [4, 5], {"ASCEND_RT_VISIBLE_DEVICES": "1"})[1] == []


def test_ascend_rt_visible_devices_past_the_mapped_range_is_a_problem():
    note, problems = visible_devices(load_target("ascend-a3"), [4, 5], {"ASCEND_RT_VISIBLE_DEVICES": "0,2"})
    assert note.startswith("host NPUs [4, 5] mapped as /dev/davinci{4,5}")
    assert problems == ["ASCEND_RT_VISIBLE_DEVICES=0,2 names NPUs the container does not have: only 2 are mapped "
                        "(container ids 0..1); leave it unset"]


# ------------------------------------------------------------------ ports

@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_ends_are_accepted(port):
    assert plan(LLAMA, target="ascend-a2", port=port, **FREE).port == port


@pytest.mark.parametrize("port", [0, 65536])
def test_port_out_of_range_is_refused(port):
    with pytest.raises(BadInput) as ei:
        plan(LLAMA, target="ascend-a2", port=port, **FREE)
    assert (ei.value.message, ei.value.field) == (f"port {port} out of range 1..65535", "--port")


def test_default_port_moves_to_the_next_free_one():
    p = plan(LLAMA, target="ascend-a2", busy_ports={8000: "deployment 'demo'"}, **FREE)
    assert p.port == 8001


def test_default_port_looks_99_ports_further_and_no_more():
    assert plan(LLAMA, target="ascend-a2", busy_ports=dict.fromkeys(range(8000, 8099), "x"), **FREE).port == 8099
    assert _reasons(LLAMA, target="ascend-a2", busy_ports=dict.fromkeys(range(8000, 8100), "x")) == [
        "port 8000 and the 99 after it are taken"]


def test_default_port_near_the_top_may_move_to_65535():
    d = _draft(LLAMA, "cuda", None, None, None)
    d.prof = d.prof.model_copy(update={"container_port": 65534})
    assert choose_port(d, None, {65534: "x"}, None) == (65535, [])
    assert d.notes == ["port 65534 is taken by x; using 65535 (--port to choose)"]


# ------------------------------------------------------------------ expose

def test_expose_without_key_message_and_field(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "  ")
    with pytest.raises(BadInput) as ei:
        check_expose(True)
    assert (ei.value.message, ei.value.field) == (
        "--expose publishes the server on all interfaces and needs an API key: export VLLM_API_KEY first "
        "(it is passed from your environment, never written)", "--expose")
    assert check_expose(False) == []


# ------------------------------------------------------------------ user target profiles, locks, overrides

def _user_target(tmp_path, monkeypatch, shipped: str, name: str, **over) -> str:
    prof = yaml.safe_load((REPO / "targets" / f"{shipped}.yaml").read_text())
    prof.update(name=name, **over)
    (tmp_path / "targets").mkdir(exist_ok=True)
    (tmp_path / "targets" / f"{name}.yaml").write_text(yaml.safe_dump(prof))
    monkeypatch.setenv("DEPLOYKIT_TARGETS", str(tmp_path / "targets"))
    return name


def test_cpu_target_without_kv_space_env_uses_its_device_memory(tmp_path, monkeypatch):
    target = _user_target(tmp_path, monkeypatch, "cpu", "cpu-lab", device_memory_gib=3,
                          env={"HF_HUB_OFFLINE": "1"})
    p = plan(SMOL, target=target, **FREE)
    assert (p.memory.device_memory_gib, p.memory.available_per_device_gib) == (3.0, 3.0)


def test_gpu_target_with_weights_outside_device_memory_needs_only_kv_and_reserve(tmp_path, monkeypatch):
    target = _user_target(tmp_path, monkeypatch, "cuda", "cuda-lab", weights_in_device_memory=False)
    assert plan(LLAMA, target=target, **FREE).memory.need_per_device_gib == 35.0  # 32 GiB KV + 3 reserve


def test_default_port_never_moves_past_65535():
    d = _draft(LLAMA, "cuda", None, None, None)
    d.prof = d.prof.model_copy(update={"container_port": 65534})
    assert choose_port(d, None, {65534: "x", 65535: "y"}, None) == (65534, ["port 65534 and the 99 after it are taken"])


def test_env_error_in_a_target_override_names_the_override_line(tmp_path):
    text = (REPO / "models" / f"{SMOL}.yaml").read_text()
    cpu_env = 'env: {VLLM_CPU_KVCACHE_SPACE: "2",'
    line = text[:text.index(cpu_env)].count("\n") + 1  # the targets.cpu.env line
    card = tmp_path / f"{SMOL}.yaml"
    card.write_text(text.replace(cpu_env, cpu_env + ' NCCL_X: "1",'))
    assert _refusal(str(card), target="cpu")[:4] == ("env var NCCL_X is not allowed on target cpu", str(card), line,
                                                      "env.NCCL_X")


def test_release_before_every_status_reports_the_first_status_source():
    s, _ = support_on("HunYuanMoEV1ForCausalLM", "v0.13.0")
    assert s.source == ("https://github.com/vllm-project/vllm-ascend/blob/v0.19.1rc1/docs/source/tutorials/models/"
                        "Hunyuan-A13B-Instruct.md")


def test_lock_for_the_same_id_on_another_hub_is_not_used(tmp_path, monkeypatch):
    from deploy_kit.weights.lock import record_lock

    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    record_lock("internlm2.5-7b-chat", "Shanghai_AI_Laboratory/internlm2_5-7b-chat", "e" * 40, source="huggingface")
    p = plan("internlm2.5-7b-chat", target="ascend-a2", **FREE)
    assert (p.weights.revision, len(p.warnings)) == (None, 1)
