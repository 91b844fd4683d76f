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
    aligned: list[list[int]] = []
    other: list[list[int]] = []
    for g in groups:
        g = sorted(g)
        for i in range(0, len(g) - tp + 1):
            block = g[i:i + tp]
            if block[-1] - block[0] != tp - 1:
                continue  # not contiguous ids
            (aligned if block[0] % tp == 0 else other).append(block)
    return aligned + other


def _pin_reasons(r: Request, device_count: int, busy: dict[int, str], taken: dict[int, str],
                 groups: list[list[int]]) -> list[str]:
    """Why the devices ``r`` pins cannot be given to it (empty: they can)."""
    pins = list(r.pinned or ())
    out = []
    if len(pins) != r.tp:
        out.append(f"{r.name}: {len(pins)} pinned device(s) for tensor_parallel_size {r.tp}")
    for d in pins:
        if d < 0 or d >= device_count:
            out.append(f"{r.name}: device {d} out of range 0..{device_count - 1}")
        elif d in busy:
            out.append(f"{r.name}: device {d} is held by {busy[d]}")
        elif d in taken:
            out.append(f"{r.name}: device {d} is also pinned by {taken[d]}")
    if len(set(pins)) != len(pins):
        out.append(f"{r.name}: a device is pinned twice in {pins}")
    if r.tp > 1 and not out and not any(set(pins) <= set(g) for g in groups):
        out.append(f"{r.name}: pinned devices {pins} span interconnect groups")
    return out


def _place(r: Request, device_count: int, busy: dict[int, str], taken: dict[int, str],
           groups: list[list[int]]) -> list[int] | str:
    """The first free aligned block for an unpinned request, or the reason there is none."""
    if r.tp < 1:
        return f"{r.name}: tensor_parallel_size must be >= 1, got {r.tp}"
    if r.tp > device_count:
        return f"{r.name}: tensor_parallel_size {r.tp} exceeds the {device_count} devices"
    for block in _aligned_blocks(groups, r.tp):
        if not any(d in busy or d in taken for d in block):
            return block
    free = [d for d in range(device_count) if d not in busy and d not in taken]
    holders = ", ".join(f"{d}: {h}" for d, h in sorted({**busy, **taken}.items()))
    return (f"{r.name}: no contiguous block of {r.tp} free device(s) in one interconnect "
            f"group ({len(free)} free: {free}; held: {holders or 'none'})")


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
    for r in requests:  # 1. pinned first
        if r.pinned is None:
            continue
        why = _pin_reasons(r, device_count, busy, taken, groups)
        out.reasons += why
        if not why:
            taken.update({d: r.name for d in r.pinned})
            out.devices[r.name] = sorted(r.pinned)
    # 2. the rest, biggest TP first (stable by file order among equals)
    for r in sorted((r for r in requests if r.pinned is None), key=lambda r: -r.tp):
        got = _place(r, device_count, busy, taken, groups)
        if isinstance(got, str):
            out.reasons.append(got)
        else:
            taken.update({d: r.name for d in got})
            out.devices[r.name] = got
    return out
