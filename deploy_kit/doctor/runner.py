"""Compose the checks into a report: host-only (`deploykit doctor`) or for one plan
(`deploykit doctor <card> --tp N`). The plan is read duck-typed (planner.Plan or any object/dict
with the same fields) so this module does not depend on the planner being importable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import checks as C
from .model import Check, Report
from .npusmi import chip_family


def _get(obj: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if obj is None:
            return default
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return default if obj is None else obj


def target_kind(target: str | None) -> str | None:
    if not target:
        return None
    t = target.lower()
    return "ascend" if t.startswith(("ascend", "npu")) else "cuda" if t.startswith(("cuda", "gpu", "nvidia")) else (
        "cpu" if t.startswith("cpu") else t)


def _weights_cached(plan: Any) -> bool:
    host_path = _get(plan, "weights.host_path")
    if not host_path:
        return False
    p = Path(host_path)
    return p.is_dir() and any(p.iterdir())


def pick_vllm_ascend_image(plan: Any) -> str | None:
    """The upstream vllm-ascend tag the deployment runs on: base_image when deploykit builds its own
    image FROM it, else image. Prefer whichever the compatibility table knows."""
    from .compat import load_compat, split_image_tag

    cands = [str(x) for x in (_get(plan, "base_image"), _get(plan, "image")) if x]
    table = load_compat()
    for c in cands:
        if table.row(split_image_tag(c)[0]) is not None:
            return c
    return next((c for c in cands if "vllm-ascend" in c), cands[0] if cands else None)


def raise_if_blocked(report: Report) -> None:
    """For `up`/planner callers: turn blocking failures into errors.Infeasible (exit 3)."""
    from ..errors import Infeasible

    bad = report.blocking_failures
    if bad:
        raise Infeasible(f"preflight failed for {report.deployment or 'this host'}",
                         reasons=[f"{c.title}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in bad],
                         hint="details: deploykit doctor --json")


def run_doctor(target: str | None = None, plan: Any = None, hubs: bool = True) -> Report:
    if plan is not None:
        target = target or _get(plan, "target")
    kind = target_kind(target)
    report = Report(target=target, deployment=_get(plan, "name") if plan is not None else None)
    add = report.checks.append
    # Docker and Compose are needed by every target (all deployments run in containers).
    add(C.check_docker())
    add(C.check_compose())

    ascend_needed = kind == "ascend"
    drv = C.check_driver(required=ascend_needed)
    add(drv)
    smi, info = C.check_npu_smi(required=ascend_needed)
    add(smi)
    devices = [int(d) for d in (_get(plan, "host_devices") or [])] if ascend_needed else []
    add(C.check_device_nodes(required=ascend_needed, devices=devices or None))
    if plan is not None and ascend_needed:
        add(C.check_npu_free(info, devices, _get(plan, "memory.need_per_device_gib")))
        image = pick_vllm_ascend_image(plan)
        chip = None
        if info and info.chips:
            chip = chip_family(info.chips_of(devices[0])[0].name if devices and info.chips_of(devices[0])
                               else info.chips[0].name)
        if image:
            add(C.check_image_compat(str(image), drv.data.get("version"), chip))
        else:
            add(Check(id="image_compat", title="Image vs driver", status="skip", blocking=False,
                      message="plan names no image"))

    cached = _weights_cached(plan) if plan is not None else False
    add(C.check_disk(need_gib=_get(plan, "memory.weights_gib") if plan is not None else None, cached=cached))
    add(C.check_shm(_get(plan, "shm_size") if plan is not None else None))
    if kind in (None, "cpu"):
        need = _get(plan, "memory.need_per_device_gib") if (plan is not None and kind == "cpu") else None
        add(C.check_cpu(need_gib=need))
    if hubs:
        required = None
        if plan is not None and not cached and _get(plan, "weights.source") in ("modelscope", "huggingface"):
            required = _get(plan, "weights.source")
        report.checks.extend(C.check_hubs(required=required))
    return report
