"""Compose the checks into a report: host-only (`deploykit doctor`) or for one plan
(`deploykit doctor <card> --tp N`, and `up`'s preflight). Reads the typed planner.Plan."""

from __future__ import annotations

from pathlib import Path

from ..planner import Plan
from . import checks as C
from .model import Check, Report
from .npusmi import NpuSmiInfo, chip_family


def target_kind(target: str | None) -> str | None:
    if not target:
        return None
    from ..targets import load_target

    return load_target(target).kind


def _weights_cached(plan: Plan) -> bool:
    p = Path(plan.weights.host_path)
    return p.is_dir() and any(p.iterdir())


def pick_vllm_ascend_image(plan: Plan) -> str | None:
    """The upstream vllm-ascend tag the deployment runs on: base_image when deploykit builds its own
    image FROM it, else image. Prefer whichever the compatibility table knows."""
    from .compat import load_compat, split_image_tag

    cands = [x for x in (plan.base_image, plan.image) if x]
    table = load_compat()
    for c in cands:
        if table.row(split_image_tag(c)[0]) is not None:
            return c
    return next((c for c in cands if "vllm-ascend" in c), cands[0] if cands else None)


def blocking_reasons(report: Report) -> list[str]:
    return [f"{c.title}: {c.message}" + (f" (fix: {c.fix})" if c.fix else "") for c in report.blocking_failures]


def raise_if_blocked(report: Report) -> None:
    """For `up`/planner callers: turn blocking failures into errors.Infeasible (exit 3)."""
    from ..errors import Infeasible

    if report.blocking_failures:
        raise Infeasible(f"preflight failed for {report.deployment or 'this host'}",
                         reasons=blocking_reasons(report), hint="details: deploykit doctor --json")


def _ascend_plan_checks(plan: Plan, info: NpuSmiInfo | None, driver_version: str | None,
                        force_devices: bool) -> list[Check]:
    devices = list(plan.host_devices)
    out = []
    if not force_devices:
        out.append(C.check_npu_free(info, devices, plan.memory.need_per_device_gib))
    image = pick_vllm_ascend_image(plan)
    chip = None
    if info and info.chips:
        mine = info.chips_of(devices[0]) if devices else []
        chip = chip_family(mine[0].name if mine else info.chips[0].name)
    if image:
        out.append(C.check_image_compat(image, driver_version, chip))
    else:
        out.append(Check(id="image_compat", title="Image vs driver", status="skip", blocking=False,
                         message="plan names no image"))
    return out


def run_doctor(target: str | None = None, plan: Plan | None = None, hubs: bool = True,
               force_devices: bool = False, port: int | None = None) -> Report:
    """Every check for the host (and the plan); ``force_devices``: the operator named the NPUs, so an
    npu-smi that cannot tell which are busy does not block; ``port``: also check it is free."""
    target = target or (plan.target if plan is not None else None)
    kind = target_kind(target)
    report = Report(target=target, deployment=plan.name if plan is not None else None)
    add = report.checks.append
    add(C.check_docker())  # every target runs in containers
    add(C.check_compose())
    ascend = kind == "ascend"
    drv = C.check_driver(required=ascend)
    add(drv)
    smi, info = C.check_npu_smi(required=ascend and not force_devices)
    add(smi)
    devices = list(plan.host_devices) if (plan is not None and ascend) else []
    add(C.check_device_nodes(required=ascend, devices=devices or None))
    if plan is not None and ascend:
        report.checks.extend(_ascend_plan_checks(plan, info, drv.data.get("version"), force_devices))
    if port is not None:
        add(C.check_port(port, plan.bind_host if plan is not None else "127.0.0.1"))
    cached = _weights_cached(plan) if plan is not None else False
    add(C.check_disk(need_gib=plan.memory.weights_gib if plan is not None else None, cached=cached))
    add(C.check_shm(plan.shm_size if plan is not None else None))
    if kind in (None, "cpu"):
        add(C.check_cpu(need_gib=plan.memory.need_per_device_gib if (plan is not None and kind == "cpu") else None))
    if hubs:
        required = None
        if plan is not None and not cached and plan.weights.source in ("modelscope", "huggingface"):
            required = plan.weights.source
        report.checks.extend(C.check_hubs(required=required))
    return report


def doctor_report(card: str | None, target: str | None, *, tp: int | None = None, devices: list[int] | None = None,
                  port: int | None = None, sets: list[str] | None = None, force_devices: bool = False,
                  release: str | None = None, strict: bool = False, hubs: bool = True) -> Report:
    """`deploykit doctor [CARD]`: the host checks, and with a card its plan (through the ledger, as
    `up` plans it); a plan the host cannot run is one failing check listing every reason."""
    from ..errors import Infeasible
    from ..runtime.up import make_plan

    if card is None:
        return run_doctor(target=target, hubs=hubs, port=port)
    try:
        plan = make_plan(card, target, tp=tp, devices=devices, port=port, sets=sets, force_devices=force_devices,
                         release=release, strict=strict)
    except Infeasible as exc:
        report = run_doctor(target=target or _default_target(), hubs=hubs, port=port)
        report.deployment = card
        reasons = exc.reasons or [exc.message]
        report.checks.append(Check(id="plan", title="Plan", status="fail", message="; ".join(reasons),
                                   fix=exc.hint or "", data={"reasons": reasons}))
        return report
    return run_doctor(plan=plan, hubs=hubs, force_devices=force_devices, port=port)


def _default_target() -> str:
    from ..targets import DEFAULT_TARGET

    return DEFAULT_TARGET
