"""WeightSpec: the few card facts a pull needs, decoupled from the card schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from deploy_kit.errors import BadInput

SOURCES = ("modelscope", "huggingface", "local", "gguf")
_SHA = re.compile(r"^[0-9a-f]{40}$")

# Only what vLLM needs to serve; .bin/.pth/.gguf/original/ duplicates are never fetched.
BASE_PATTERNS = [
    "config*.json", "generation_config.json", "tokenizer*", "*.model", "*.tiktoken",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt",
    "chat_template*", "preprocessor_config.json", "processor_config.json",
    "video_preprocessor_config.json", "*.safetensors.index.json",
]
IGNORE_PATTERNS = ["original/*", "*.bin", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.msgpack", "*.h5"]


@dataclass
class WeightSpec:
    name: str
    source: str
    repo_id: str
    revision: str | None = None
    trust_remote_code: bool = False
    weights_format: str = "safetensors"
    path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    # Card facts compared with the downloaded config.json (keys: architecture, num_layers, ...).
    expected: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.source not in SOURCES:
            raise BadInput(f"unknown source '{self.source}'", field="model.source",
                           hint="one of " + ", ".join(SOURCES))
        if self.source == "local" and not self.path:
            raise BadInput("local source needs model.path", field="model.path")
        if self.source == "gguf" and not (self.gguf_package and self.gguf_file):
            raise BadInput("gguf source needs model.gguf {package, file}", field="model.gguf")

    def allow_patterns(self) -> list[str]:
        pats = list(BASE_PATTERNS)
        fmt = self.weights_format or "safetensors"
        pats.append("*.safetensors" if fmt == "safetensors" else "*.bin" if fmt == "bin" else f"*.{fmt}")
        if fmt == "bin":
            pats.append("*.bin.index.json")
        if self.trust_remote_code:
            pats.append("*.py")
        return pats

    def ignore_patterns(self) -> list[str]:
        fmt = self.weights_format or "safetensors"
        return [p for p in IGNORE_PATTERNS if p != f"*.{fmt}"]


def is_commit(rev: str | None) -> bool:
    return bool(rev and _SHA.match(rev))


def spec_from_card(card: Any, source: str | None = None, revision: str | None = None) -> WeightSpec:
    """Build a WeightSpec from a cards.Card (or cardload.LoadedCard); --source/--revision override."""
    card = getattr(card, "card", card)  # accept LoadedCard
    m = card.model
    src = source or m.source
    repo = m.id
    alt = getattr(m, "alt_ids", None) or {}
    if source and source != m.source and source in alt:
        repo = alt[source]
    cfg = m.config
    expected: dict[str, Any] = {"architecture": m.architecture}
    for k in ("num_layers", "num_attention_heads", "num_kv_heads", "vocab_size", "hidden_size",
              "num_experts", "sliding_window"):
        v = getattr(cfg, k, None)
        if v is not None:
            expected[k] = v
    g = m.gguf
    spec = WeightSpec(
        name=card.name, source=src, repo_id=repo, revision=revision or m.revision,
        trust_remote_code=m.trust_remote_code, weights_format=m.weights_format, path=m.path,
        gguf_package=g.package if g else None, gguf_file=g.file if g else None, expected=expected)
    return spec
