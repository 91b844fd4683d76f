"""Pure checks of deploy_kit.weights: spec rules, safetensors headers, config comparison, disk."""

from __future__ import annotations

import json
import struct
from collections import namedtuple

import pytest

from deploy_kit.errors import BadInput, Infeasible, VerificationFailed
from deploy_kit.weights import pull as pullmod
from deploy_kit.weights import verify
from deploy_kit.weights.hubs import wanted
from deploy_kit.weights.spec import WeightSpec
from tests.fixture_hub import CARD_FACTS, LLAMA_CONFIG, make_model_files

pytestmark = pytest.mark.unit


def spec(**kw) -> WeightSpec:
    base = dict(name="tiny", source="huggingface", repo_id="org/tiny", expected=dict(CARD_FACTS))
    base.update(kw)
    return WeightSpec(**base)


def test_trust_remote_code_without_revision_refused():
    with pytest.raises(BadInput) as ei:
        spec(trust_remote_code=True).check()
    assert ei.value.field == "model.revision"
    spec(trust_remote_code=True, revision="abc").check()  # pinned: fine


def test_allow_patterns_skip_duplicates():
    s = spec()
    assert wanted("model-00001-of-00002.safetensors", s)
    assert wanted("config.json", s) and wanted("tokenizer.model", s) and wanted("chat_template.jinja", s)
    assert not wanted("pytorch_model.bin", s)
    assert not wanted("original/consolidated.00.pth", s)
    assert not wanted("modeling_x.py", s)
    assert wanted("modeling_x.py", spec(trust_remote_code=True, revision="r"))


def test_safetensors_header_checks(tmp_path):
    files = make_model_files(tmp_path)
    p = tmp_path / "model.safetensors"
    assert verify.check_safetensors(p) == 2
    p.write_bytes(files["model.safetensors"][:-10])  # truncated
    with pytest.raises(VerificationFailed, match="cover"):
        verify.check_safetensors(p)
    p.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(VerificationFailed, match="header length"):
        verify.check_safetensors(p)


def test_config_mismatch_names_both_values(tmp_path):
    cfg = dict(LLAMA_CONFIG, num_hidden_layers=3)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VerificationFailed) as ei:
        verify.compare_config(tmp_path / "config.json", CARD_FACTS)
    assert "card says 2" in ei.value.message and "config.json says 3" in ei.value.message


def test_nested_llm_config(tmp_path):
    cfg = {"architectures": ["InternVLChatModel"], "llm_config": dict(LLAMA_CONFIG, architectures=["InternLM2ForCausalLM"])}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    verify.compare_config(tmp_path / "config.json", dict(CARD_FACTS, architecture="InternVLChatModel"))
    with pytest.raises(VerificationFailed, match="num_attention_heads"):
        verify.compare_config(tmp_path / "config.json", dict(CARD_FACTS, num_attention_heads=8))


def test_disk_space_refusal(tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(pullmod.shutil, "disk_usage", lambda p: Usage(10, 5, 2**20))
    with pytest.raises(Infeasible) as ei:
        pullmod.check_disk(tmp_path / "x", 5 * 2**30)
    assert "need 5.00 GiB" in ei.value.one_line() and "free 0.00 GiB" in ei.value.one_line()


def test_local_source_used_in_place(tmp_path):
    d = tmp_path / "w"
    make_model_files(d)
    res = pullmod.pull(spec(source="local", path=str(d)), cache=tmp_path / "cache")
    assert res.path == d.resolve() and res.manifest["path"] == str(d.resolve())
    assert not (tmp_path / "cache").exists()  # nothing copied
    names = {f["path"] for f in res.manifest["files"]}
    assert "model.safetensors" in names
    (d / "config.json").write_text(json.dumps(dict(LLAMA_CONFIG, vocab_size=64)))
    with pytest.raises(VerificationFailed, match="vocab_size"):
        pullmod.pull(spec(source="local", path=str(d)))


def test_spec_from_card_real_card():
    from deploy_kit.cardload import list_card_names, load_card
    from deploy_kit.weights.spec import spec_from_card

    names = list_card_names()
    if not names:
        pytest.skip("no cards in the catalog yet")
    for n in names:
        s = spec_from_card(load_card(n))
        assert s.name == n and s.source in ("modelscope", "huggingface", "local", "gguf")
        assert s.expected["architecture"]


def test_cli_cache_ls_and_rm(isolated_home, capsys):
    from deploy_kit.cli import main

    d = isolated_home / "cache" / "tiny"
    make_model_files(d)
    (d / ".deploykit.json").write_text(json.dumps({"source": "huggingface", "repo": "org/tiny",
                                                   "commit": "c" * 40, "files": []}))
    assert main(["cache", "ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "tiny" and rows[0]["commit"] == "c" * 40 and rows[0]["bytes"] > 0
    assert main(["cache", "rm", "nope", "--yes"]) == 2
    assert main(["cache", "rm", "tiny", "--yes"]) == 0 and not d.exists()
