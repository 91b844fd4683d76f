"""Pure checks of deploy_kit.weights: spec rules, safetensors headers, config comparison, disk."""

from __future__ import annotations

from typing import Any

import hashlib
import json
import struct
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_kit.errors import BadInput, Infeasible, VerificationFailed
from deploy_kit.weights import pull as pullmod
from deploy_kit.weights import lock, verify
from deploy_kit.weights.hubs import wanted
from deploy_kit.weights.spec import WeightSpec
from tests.fixture_hub import CARD_FACTS, LLAMA_CONFIG, make_model_files

pytestmark = pytest.mark.unit


def spec(**kw) -> WeightSpec:
    base: dict[str, Any] = dict(name="tiny", source="huggingface", repo_id="org/tiny", expected=dict(CARD_FACTS))
    base.update(kw)
    return WeightSpec(**base)


def test_trust_remote_code_without_revision_is_locked_not_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("DEPLOYKIT_REQUIRE_PINNED", raising=False)
    s = spec(trust_remote_code=True)
    s.check()  # no longer refused: pull resolves and locks the branch head
    assert pullmod.pin_remote_code(s, tmp_path, False, print) == (s, True)
    with pytest.raises(BadInput) as ei:
        pullmod.pin_remote_code(s, tmp_path, True, print)
    assert ei.value.field == "model.revision"
    pinned = spec(trust_remote_code=True, revision="abc")
    assert pullmod.pin_remote_code(pinned, tmp_path, True, print) == (pinned, False)
    lock.record_lock("tiny", "org/tiny", "f" * 40, source="huggingface", cache=tmp_path)
    got, to_lock = pullmod.pin_remote_code(s, tmp_path, True, lambda m: None)
    assert got.revision == "f" * 40 and not to_lock
    assert pullmod.pin_remote_code(spec(source="modelscope", trust_remote_code=True), tmp_path, False,
                                   print) == (spec(source="modelscope", trust_remote_code=True), True)


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
    cfg = {"architectures": ["InternVLChatModel"],
           "llm_config": dict(LLAMA_CONFIG, architectures=["InternLM2ForCausalLM"])}
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
    written = make_model_files(d)
    files = [{"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for rel, data in written.items() if rel != "README.md"]
    (d / ".deploykit.json").write_text(json.dumps({"source": "huggingface", "repo": "org/tiny",
                                                   "commit": "c" * 40, "files": files}))
    assert main(["cache", "ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "tiny", "path": str(d), "bytes": sum(len(v) for v in written.values()),
                     "partial_bytes": 0, "source": "huggingface", "repo": "org/tiny", "commit": "c" * 40,
                     "complete": True}]
    assert main(["cache", "rm", "nope", "--yes"]) == 2
    assert main(["cache", "rm", "tiny", "--yes"]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["README.md"]  # not in the manifest: kept


@given(st.binary(max_size=64), st.binary(max_size=200))
@settings(max_examples=100, deadline=None)
def test_any_safetensors_bytes_are_verified_or_refused(tmp_path_factory, prefix, rest):
    """Whatever bytes a hub serves, the header check returns a count or raises VerificationFailed."""
    p = tmp_path_factory.mktemp("st") / "x.safetensors"
    for data in (prefix + rest, struct.pack("<Q", len(rest)) + rest):
        p.write_bytes(data)
        try:
            assert verify.check_safetensors(p) >= 0
        except VerificationFailed as exc:
            assert exc.message.startswith("x.safetensors: ") and "\n" not in exc.message


@given(st.lists(st.text(max_size=30), max_size=5))
@settings(max_examples=100, deadline=None)
def test_manifest_paths_never_leave_the_model_dir(tmp_path_factory, rels):
    """A manifest naming absolute or ../ paths is never followed out of the model directory."""
    root = tmp_path_factory.mktemp("m")
    (root / "outside").write_bytes(b"secret")
    d = root / "model"
    d.mkdir()
    rels = rels + ["../outside", str(root / "outside"), "..\\outside"]
    problems = verify.check_against_manifest(d, [{"path": r, "size": 6, "sha256": "0" * 64} for r in rels])
    for r in rels:
        if not verify.safe_rel(r):
            assert problems[r] == f"{r}: missing"
    from deploy_kit.weights.manifest import owned_files

    (d / ".deploykit.json").write_text(json.dumps({"files": [{"path": r} for r in rels]}))
    assert all(d in p.parents for p in owned_files(d))


@pytest.mark.parametrize("config, problem", [
    ({"sliding_window": 4096}, None),
    ({"sliding_window": 2048}, "sliding_window (sliding_window): card says 4096, config.json says 2048"),
    ({"sliding_window": 4096, "use_sliding_window": False}, "sliding_window: card says 4096, config.json uses none"),
    ({}, "sliding_window: card says 4096, config.json uses none")])
def test_a_card_window_must_be_one_the_model_uses(tmp_path, config, problem):
    (tmp_path / "config.json").write_text(json.dumps(dict(LLAMA_CONFIG, **config)))
    facts = dict(CARD_FACTS, sliding_window=4096)
    if problem is None:
        assert verify.compare_config(tmp_path / "config.json", facts) == []
        return
    with pytest.raises(VerificationFailed) as ei:
        verify.compare_config(tmp_path / "config.json", facts)
    assert ei.value.message == f"downloaded config.json contradicts the card: {problem}"
