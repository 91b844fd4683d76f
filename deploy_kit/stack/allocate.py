"""Pure NPU allocation for a stack: no I/O, no planner, so it can be property-tested.

Rules (why): TP groups talk over HCCS; keeping each group contiguous and aligned to its size
(TP4 on 0-3 or 4-7) inside one interconnect group avoids cross-group links and leaves the
remaining free space usable for the next aligned group. Pinned devices are honoured first;
larger TP groups are placed before smaller ones so fragmentation cannot starve them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    name: str
    tp: int
    pinned: tuple[int, ...] | None = None


@dataclass
class Allocation:
    devices: dict[str, list[int]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons


def _aligned_blocks(groups: list[list[int]], tp: int) -> list[list[int]]:
    """Candidate blocks: size-aligned contiguous runs inside one group, then any run in one group."""
    aligned, other = [], []
    for g in groups:
        g = sorted(g)
        for i in range(0, len(g) - tp + 1):
            block = g[i:i + tp]
            if block[-1] - block[0] != tp - 1:
                continue  # not contiguous ids
            (aligned if block[0] % tp == 0 else other).append(block)
    return aligned + other


def allocate(device_count: int, requests: list[Request], *, busy: dict[int, str] | None = None,
             groups: list[list[int]] | None = None) -> Allocation:
    """Assign host device ids to every request without overlap, or say every reason why not."""
    busy = dict(busy or {})
    groups = groups or [list(range(device_count))]
    out = Allocation()
    taken: dict[int, str] = {}
    names = [r.name for r in requests]
    for n in sorted({n for n in names if names.count(n) > 1}):
        out.reasons.append(f"deployment name '{n}' is used twice")

    # 1. pinned first
    for r in requests:
        if r.pinned is None:
            continue
        pins = list(r.pinned)
        bad = False
        if len(pins) != r.tp:
            out.reasons.append(f"{r.name}: {len(pins)} pinned device(s) for tensor_parallel_size {r.tp}")
            bad = True
        for d in pins:
            if d < 0 or d >= device_count:
                out.reasons.append(f"{r.name}: device {d} out of range 0..{device_count - 1}")
                bad = True
            elif d in busy:
                out.reasons.append(f"{r.name}: device {d} is held by {busy[d]}")
                bad = True
            elif d in taken:
                out.reasons.append(f"{r.name}: device {d} is also pinned by {taken[d]}")
                bad = True
        if len(set(pins)) != len(pins):
            out.reasons.append(f"{r.name}: a device is pinned twice in {pins}")
            bad = True
        if r.tp > 1 and not bad and not any(set(pins) <= set(g) for g in groups):
            out.reasons.append(f"{r.name}: pinned devices {pins} span interconnect groups")
            bad = True
        if not bad:
            for d in pins:
                taken[d] = r.name
            out.devices[r.name] = sorted(pins)

    # 2. the rest, biggest TP first (stable by file order among equals)
    rest = sorted((r for r in requests if r.pinned is None), key=lambda r: -r.tp)
    for r in rest:
        if r.tp < 1:
            out.reasons.append(f"{r.name}: tensor_parallel_size must be >= 1, got {r.tp}")
            continue
        if r.tp > device_count:
            out.reasons.append(f"{r.name}: tensor_parallel_size {r.tp} exceeds the {device_count} devices")
            continue
        for block in _aligned_blocks(groups, r.tp):
            if not any(d in busy or d in taken for d in block):
                for d in block:
                    taken[d] = r.name
                out.devices[r.name] = block
                break
        else:
            free = [d for d in range(device_count) if d not in busy and d not in taken]
            holders = ", ".join(f"{d}: {h}" for d, h in sorted({**busy, **taken}.items()))
            out.reasons.append(f"{r.name}: no contiguous block of {r.tp} free device(s) in one interconnect "
                               f"group ({len(free)} free: {free}; held: {holders or 'none'})")
    return out
