"""The planner: card + target + operator choices -> one typed Plan that every renderer reads.

`plan` runs a list of small checks (deploy_kit/planchecks.py); each returns the reasons it found,
and every reason from every check is raised together as Infeasible (exit 3). Malformed input is
BadInput (exit 2). Warnings (upstream marks the model not supported, remote code unpinned) come
first in `Plan.warnings`; `strict=True` turns them into exit 3. Busy devices and ports come from
the caller (the ledger).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .cardload import LoadedCard, load_card, resolve
from .cards import Card
from .errors import BadInput, Infeasible
from .memory import MemoryEstimate
from .paths import cache_dir
from .planchecks import (Draft, UpstreamSupport, check_devices, check_env, check_expose, check_memory,
                         check_override, choose_port, check_quantization, check_release, check_remote_code,
                         check_support, check_tp, memory_estimate, tp_of, visible_devices)
from .targets import DEFAULT_TARGET, TargetProfile, load_target
from .weights.lock import require_pinned_from_env

CONTAINER_MODELS = "/models"
HEALTH_CHECK_INTERVAL_S = 10  # a busy CPU engine may miss one 10 s poll; 3 misses restart it


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
    # What `up` needs to fetch the weights without reloading the card (weights.spec.WeightSpec).
    weights_format: str = "safetensors"
    gguf_package: str | None = None
    gguf_file: str | None = None
    expected: dict[str, Any] = Field(default_factory=dict)  # card facts pull checks in config.json


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
    vllm_ascend_release: str | None = None  # the vLLM-Ascend release the base image is (Ascend only)
    vllm_version: str = ""          # the vLLM release the image runs
    release_stack: str | None = None  # "CANN 9.1.0, torch_npu 2.10.0.post4" from the compatibility row
    argv: list[str]                 # exec form, nothing joined into a shell string
    env: dict[str, str]
    secret_env: list[str] = Field(default_factory=list,
                                  description="names passed from the operator's env, never values")
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
    health_check_interval_s: int = Field(
        default=HEALTH_CHECK_INTERVAL_S, description="/health poll period and timeout (s); 3 failures restart")
    smoke: list[dict[str, Any]]
    upstream_support: UpstreamSupport | None = None
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="facts the operator should see; never escalated")
    provenance: dict[str, str] = Field(
        default_factory=dict, description="every env var, mount, device and flag deploykit chose -> its source")


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


# ------------------------------------------------------------------ assembly

_FLAG_FIELDS = {"--max-model-len": "serve.max_model_len", "--max-num-seqs": "serve.max_num_seqs",
                "--dtype": "serve.dtype", "--gpu-memory-utilization": "serve.gpu_memory_utilization",
                "--enforce-eager": "serve.enforce_eager", "--trust-remote-code": "model.trust_remote_code",
                "--quantization": "serve.quantization", "--limit-mm-per-prompt": "serve.limit_mm_per_prompt",
                "--tensor-parallel-size": "serve.tensor_parallel_size",
                "--served-model-name": "serve.served_model_name"}


def build_argv(card: Card, prof: TargetProfile, tp: int, served: str) -> list[str]:
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
        argv += ["--limit-mm-per-prompt", json.dumps(s.limit_mm_per_prompt, separators=(",", ":"))]
    argv += list(s.extra_args)
    return argv


def _card_env_keys(d: Draft) -> set[str]:
    raw = d.loaded.raw
    over = ((raw.get("targets") or {}).get(d.prof.name) or {}).get("env") or {}
    sets = {k.split(".", 1)[1] for k in d.res.set_keys if k.startswith("env.")}
    return set(raw.get("env") or {}) | set(over) | sets


def build_provenance(d: Draft, env: dict[str, str], mounts: list[PlanMount], devices: list[str],
                     argv: list[str]) -> dict[str, str]:
    """Where each env var, mount, device and flag in the plan comes from (URL of the upstream page)."""
    src, card_file = d.prof.provenance, d.loaded.path.name
    fallback = f"deploykit target profile {d.prof.name} (no upstream source recorded)"
    out = {"image": src.get("image", fallback)}
    card_env = _card_env_keys(d)
    for k in sorted(env):
        out[f"env:{k}"] = f"card {card_file} env.{k}" if k in card_env else src.get(f"env:{k}", fallback)
    for m in mounts:
        key = "mount:/models/<card>" if m.target.startswith(CONTAINER_MODELS + "/") else f"mount:{m.target}"
        out[f"mount:{m.target}"] = src.get(key, fallback)
    for dev in devices:
        key = "device:/dev/davinciN" if dev.removeprefix("/dev/davinci").isdigit() else f"device:{dev}"
        out[f"device:{dev}"] = src.get(key, fallback)
    for a in argv:
        if a.startswith("--") and f"flag:{a}" not in out:
            card_field = _FLAG_FIELDS.get(a)
            out[f"flag:{a}"] = src.get(f"flag:{a}") or (f"card {card_file} {card_field}" if card_field
                                                        else "deploykit: OpenAI-compatible server wiring")
    if "visible_devices" in src:
        out["visible_devices"] = src["visible_devices"]
    if "device_memory_gib" in src:
        out["device_memory_gib"] = src["device_memory_gib"]
    return out


def _weights(d: Draft) -> PlanWeights:
    card = d.card
    host_path = str(card.model.path) if card.model.source == "local" else str(cache_dir() / card.name)
    return PlanWeights(
        source=card.model.source,
        id=(f"{card.model.gguf.package}/{card.model.gguf.file}" if card.model.gguf else card.model.id),
        revision=d.revision, host_path=host_path,
        container_path=f"{CONTAINER_MODELS}/{card.name}", trust_remote_code=card.model.trust_remote_code,
        **_weights_facts(card),
    )


def _weights_facts(card: Card) -> dict[str, Any]:
    """PlanWeights fields the runtime's pull needs (the WeightSpec facts), so `up` never reloads the card."""
    from .weights.spec import spec_from_card

    spec = spec_from_card(card)
    return {"weights_format": spec.weights_format, "gguf_package": spec.gguf_package,
            "gguf_file": spec.gguf_file, "expected": spec.expected}


def _smoke(d: Draft) -> list[dict[str, Any]]:
    smoke = [p.model_dump() for p in d.card.smoke.prompts]
    for p in smoke:
        if p.get("image") and not os.path.isabs(p["image"]):
            p["image"] = str((d.loaded.path.parent / p["image"]).resolve())
    return smoke


def _draft(card_ref: str | LoadedCard, target: str, tp: int | None, sets: list[str] | None,
           release: str | None) -> Draft:
    loaded = card_ref if isinstance(card_ref, LoadedCard) else load_card(card_ref)
    prof = load_target(target)
    chosen, row = check_release(prof, release)
    sets = list(sets or [])
    if tp is not None:
        sets.append(f"serve.tensor_parallel_size={tp}")
    res = resolve(loaded, prof.name, prof.serve_defaults, prof.env, sets)
    if res.card.serve.max_model_len is None:
        res.card.serve.max_model_len = res.card.model.context_length
    return Draft(loaded=loaded, res=res, prof=prof, release=chosen, row=row)


def _refuse(d: Draft, strict: bool) -> None:
    """Every reason from every check in one Infeasible; with strict, warnings count as reasons."""
    reasons = list(d.reasons)
    if strict:
        reasons = [f"--strict: {w}" for w in d.warnings] + reasons
    if reasons:
        raise Infeasible(f"{d.card.name} on {d.prof.name} cannot work",
                         reasons=reasons + [f"suggestion: {x}" for x in d.suggestions])


def plan(card_ref: str | LoadedCard, *, target: str = DEFAULT_TARGET, tp: int | None = None,
         devices: str | list[int] | None = None, port: int | None = None, sets: list[str] | None = None,
         expose: bool = False, name: str | None = None, busy_devices: dict[int, str] | None = None,
         busy_ports: dict[int, str] | None = None,
         port_probe: Callable[[int], bool] | None = None, release: str | None = None,
         strict: bool = False, require_pinned: bool | None = None, force_devices: bool = False) -> Plan:
    """Plan `card_ref` on `target`; raises Infeasible with every reason, BadInput for bad input.

    A plan is paper: it probes no host port unless the caller passes ``port_probe`` (`up` and
    `doctor` do); ports held by deploykit's own deployments come in ``busy_ports`` (the ledger)."""
    d = _draft(card_ref, target, tp, sets, release)
    pinned = require_pinned_from_env() if require_pinned is None else require_pinned
    if d.res.override_unsupported:
        raise Infeasible(f"{d.card.name} cannot run on target {d.prof.name}", reasons=check_override(d),
                         file=str(d.loaded.path), field=f"targets.{d.prof.name}.unsupported",
                         line=d.loaded.lines.get(f"targets.{d.prof.name}.unsupported"))
    for check in (lambda: check_remote_code(d, pinned), lambda: check_quantization(d), lambda: check_env(d),
                  lambda: check_support(d), lambda: check_tp(d),
                  lambda: check_devices(d, parse_devices(devices), busy_devices or {}, force_devices)):
        d.reasons += check()
    mem = memory_estimate(d)
    d.reasons += check_memory(d, mem)
    vis_note, vis_problems = visible_devices(d.prof, d.host_ids, d.env)
    d.reasons += vis_problems
    port_eff, port_reasons = choose_port(d, port, busy_ports or {}, port_probe)
    d.reasons += port_reasons
    secret_env = check_expose(expose)
    _refuse(d, strict)
    return _assemble(d, mem, vis_note, port_eff, expose, secret_env, name)


def _assemble(d: Draft, mem: MemoryEstimate, vis_note: str, port: int, expose: bool,
              secret_env: list[str], name: str | None) -> Plan:
    prof, card, tp = d.prof, d.card, tp_of(d)
    if tp > 1:
        for k, v in prof.env_tp.items():
            d.env.setdefault(k, v)
    served = card.serve.served_model_name or card.name
    weights = _weights(d)
    mounts = [PlanMount(source=m.source, target=m.target, read_only=m.read_only) for m in prof.mounts]
    mounts.append(PlanMount(source=weights.host_path, target=weights.container_path, read_only=True))
    argv = build_argv(card, prof, tp, served)
    device_nodes = prof.device_nodes(d.host_ids)
    row = d.row
    return Plan(
        name=name or card.name, card_name=card.name, card_path=str(d.loaded.path),
        card_digest=d.loaded.digest(), target=prof.name, target_kind=prof.kind,
        image=prof.image, base_image=_mirror(prof, prof.base_image_for(d.release)),
        dockerfile_template=prof.dockerfile, vllm_ascend_release=d.release,
        vllm_version=row.vllm if row else (prof.vllm_version or "unknown"),
        release_stack=(f"CANN {row.cann}, torch {row.torch}, torch_npu {row.torch_npu}" if row else None),
        argv=argv, env=d.env, secret_env=secret_env,
        host_devices=d.host_ids, device_nodes=device_nodes,
        visible_devices_rule=prof.visible_devices_rule, visible_devices_note=vis_note,
        tensor_parallel_size=tp, port=port, container_port=prof.container_port,
        bind_host="0.0.0.0" if expose else "127.0.0.1", expose=expose, mounts=mounts,
        shm_size=prof.shm_size_tp if tp > 1 else prof.shm_size, memory=mem, weights=weights,
        served_model_name=served, multimodal=card.multimodal,
        readiness_timeout_s=readiness_timeout(card.serve.readiness_timeout_s, card.model.params_b * 2, prof.kind),
        health_check_interval_s=card.serve.health_check_interval_s or HEALTH_CHECK_INTERVAL_S,
        smoke=_smoke(d), upstream_support=d.support, warnings=d.warnings, notes=d.notes,
        provenance=build_provenance(d, d.env, mounts, device_nodes, argv),
    )


def summary_rows(p: Plan) -> list[tuple[str, str]]:
    """Rows `plan` prints beside the image: which vLLM (and vLLM-Ascend release) runs, upstream's
    status of the model, then each note. Warnings are printed before everything else."""
    vllm = p.vllm_version + (f" (vLLM-Ascend {p.vllm_ascend_release}: {p.release_stack})"
                             if p.vllm_ascend_release else "")
    rows = [("vLLM", vllm)]
    s = p.upstream_support
    if s is not None:
        rows.append(("upstream", f"{s.family}: {s.status} on vLLM-Ascend {s.release}"
                                 + (f" ({s.source})" if s.source else "")))
    rows += [("note", n) for n in p.notes]
    return rows


def _mirror(prof: TargetProfile, image: str) -> str:
    """Base image with its registry host replaced by a mirror (e.g. m.daocloud.io/quay.io)."""
    mirror = os.environ.get(prof.registry_mirror_env, "").rstrip("/")
    if not mirror:
        return image
    first = image.split("/", 1)
    if "." in first[0] and len(first) == 2:  # registry host present (quay.io/...)
        return f"{mirror}/{first[1]}"
    return f"{mirror}/{image}"
