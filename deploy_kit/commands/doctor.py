"""CLI commands: doctor (preflight) and triage (name the cause of a failed deployment).

Parsing and printing only; logic lives in deploy_kit.doctor and deploy_kit.runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .. import console
from .options import (DevicesOpt, ForceDevicesOpt, JsonOpt, PortOpt, ReleaseOpt, SetOpt, StrictOpt, TargetOpt,
                      TpOpt, devices_of)

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def _print_report(report: Any) -> None:
    head = "deploykit doctor" + (f" {report.deployment}" if report.deployment else "") + (
        f" (target {report.target})" if report.target else " (host)")
    console.out(head)
    for c in report.checks:
        console.out(f"{_MARK[c.status]} {c.title}: {c.message}")
        for ev in c.evidence:
            lines = ev.output.strip().splitlines()
            # skip table borders (npu-smi) so the one-line summary says something
            first = next((ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("+")), "")
            more = f" (+{len(lines) - 1} lines, see --json)" if len(lines) > 1 else ""
            console.out(f"      $ {ev.command}" + (f"  -> {first}{more}" if first else ""))
        if c.fix and c.status in ("fail", "warn"):
            console.out(f"      fix: {c.fix}")
    n = report.summary
    console.out(f"{n['pass']} pass, {n['warn']} warn, {n['fail']} fail, {n['skip']} skip: "
                + ("blocked" if report.exit_code else "ok"))


def doctor(card: Annotated[Optional[str], typer.Argument(help="card name: also check this deployment")] = None,
           target: TargetOpt = None, tp: TpOpt = None, devices: DevicesOpt = None, port: PortOpt = None,
           set_: SetOpt = None, force_devices: ForceDevicesOpt = False, release: ReleaseOpt = None,
           strict: StrictOpt = False, as_json: JsonOpt = False,
           no_hubs: Annotated[bool, typer.Option("--no-hubs", help="skip hub reachability probes")] = False,
           ) -> None:
    """Preflight: Docker, Compose, Ascend driver/NPUs/devices, disk, /dev/shm, hubs; with a card, also
    the plan (every reason it cannot run), free HBM on its NPUs, image vs driver and its port.
    Exit 3 when a blocking check fails."""
    from ..doctor.runner import doctor_report

    report = doctor_report(card, target, tp=tp, devices=devices_of(devices), port=port, sets=set_,
                           force_devices=force_devices, release=release, strict=strict, hubs=not no_hubs)
    if as_json:
        console.out(report.model_dump_json(indent=2))
    else:
        _print_report(report)
    raise typer.Exit(report.exit_code)


def _print_triage(res: Any, source: str) -> None:
    if res.known:
        console.out(f"{res.title} ({res.signature})  [from {source}]")
        console.out(f"cause: {res.cause}")
        console.out(f"fix:   {res.fix}")
        console.out("evidence (the log lines that match):")
        for ln in res.matched_lines[:5]:
            console.out(f"  | {ln}")
        if res.also_matched:
            console.out(f"also matched: {', '.join(res.also_matched)}")
        return
    console.out(f"unknown cause: no known signature matched ({source}). Last lines:")
    for ln in res.last_lines:
        console.out(f"  | {ln}")
    console.out(res.fix)


def triage(name: Annotated[Optional[str], typer.Argument(help="deployment name (reads its container log)")] = None,
           log: Annotated[Optional[Path], typer.Option("--log", help="read this log file instead")] = None,
           as_json: JsonOpt = False) -> None:
    """Read a deployment's log (live container, else the log kept from a failed start) and name the
    known cause and fix, quoting the matching line; or say the cause is unknown."""
    from ..doctor.triage import triage_text
    from ..errors import BadInput
    from ..runtime.ops import deployment_log, read_capped

    if log is None and not name:
        raise BadInput("give a deployment name or --log FILE")
    if log is not None:
        try:
            text, source = read_capped(log), str(log)
        except OSError as exc:
            raise BadInput(f"cannot read log: {exc.strerror}", file=str(log)) from exc
    else:
        from ..paths import validate_name

        name = validate_name(str(name), what="deployment name")
        text, source = deployment_log(name), f"deployment {name}"
    res = triage_text(text)
    if as_json:
        console.out(res.model_dump_json(indent=2))
    else:
        _print_triage(res, source)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
    app.command("triage")(triage)
