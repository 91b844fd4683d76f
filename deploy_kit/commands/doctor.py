"""CLI commands: doctor (preflight) and triage (name the cause of a failed deployment).

Parsing and printing only; logic lives in deploy_kit.doctor. Heavy imports inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

_MARK = {"pass": "[green]PASS[/]", "warn": "[yellow]WARN[/]", "fail": "[red]FAIL[/]", "skip": "[dim]SKIP[/]"}


def _make_plan(card: str, target: str | None, tp: int | None, devices: list[int] | None):
    """Build a Plan with the planner when it exists (it is another module's contract)."""
    from ..errors import BadInput

    try:
        from .. import planner  # noqa: PLC0415
    except ImportError as exc:
        raise BadInput(f"cannot plan {card!r}: deploy_kit.planner is not available ({exc})",
                       hint="run `deploykit doctor` without a card for host checks") from exc
    card_obj = card
    for modname, fn in (("cardload", "load_card"), ("cards", "load_card"), ("cardload", "load")):
        try:
            mod = __import__(f"deploy_kit.{modname}", fromlist=[fn])
        except ImportError:
            continue
        if hasattr(mod, fn):
            card_obj = getattr(mod, fn)(card)
            break
    kwargs = {k: v for k, v in (("target", target), ("tp", tp), ("devices", devices)) if v is not None}
    return planner.plan(card_obj, **kwargs)


def _print_report(report) -> None:
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)
    head = "deploykit doctor" + (f" {report.deployment}" if report.deployment else "") + (
        f" (target {report.target})" if report.target else " (host)")
    con.print(f"[bold]{head}[/]")
    for c in report.checks:
        con.print(f"{_MARK[c.status]} {c.title}: {c.message}", markup=True)
        for ev in c.evidence:
            out = ev.output.strip().splitlines()
            # skip table borders (npu-smi) so the one-line summary says something
            first = next((ln.strip() for ln in out if ln.strip() and not ln.lstrip().startswith("+")), "")
            more = f" (+{len(out) - 1} lines, see --json)" if len(out) > 1 else ""
            con.print(f"      $ {ev.command}" + (f"  -> {first}{more}" if first else ""), markup=False)
        if c.fix and c.status in ("fail", "warn"):
            con.print(f"      fix: {c.fix}", markup=False)
    n = {s: sum(c.status == s for c in report.checks) for s in _MARK}
    verdict = "[red]blocked[/]" if report.exit_code else "[green]ok[/]"
    con.print(f"{n['pass']} pass, {n['warn']} warn, {n['fail']} fail, {n['skip']} skip: {verdict}")


def _deployment_logs(name: str) -> str:
    """Logs of deployment `name`: the runtime's own accessor when present, else Compose/Docker."""
    from ..errors import RuntimeFailure

    try:
        import deploy_kit.runtime as rt  # noqa: PLC0415
    except ImportError:
        rt = None
    if rt is not None:
        for modname in ("", ".state", ".docker", ".compose"):
            try:
                mod = __import__(f"deploy_kit.runtime{modname}", fromlist=["_"])
            except ImportError:
                continue
            for fn in ("get_logs", "read_logs", "deployment_logs"):
                f = getattr(mod, fn, None)
                if not callable(f):
                    continue
                try:
                    out = f(name)
                except Exception:  # noqa: BLE001 - unknown deployment or other signature: Compose below
                    continue
                if out:
                    return out if isinstance(out, str) else "\n".join(map(str, out))
    from ..doctor.checks import compose_candidates, run_cmd

    project = f"deploykit-{name}"
    errors = []
    for base in compose_candidates():
        rc, out = run_cmd(base + ["-p", project, "logs", "--no-color", "--tail", "3000"], timeout=30)
        if rc == 0 and out.strip():
            return out
        errors.append(out.strip().splitlines()[-1] if out.strip() else f"rc={rc}")
    rc, ids = run_cmd(["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}"])
    if rc == 0 and ids.strip():
        parts = []
        for cid in ids.split():
            _, out = run_cmd(["docker", "logs", "--tail", "3000", cid], timeout=30)
            parts.append(out)
        return "\n".join(parts)
    raise RuntimeFailure(f"no logs found for deployment {name!r} (compose project {project})",
                         hint="; ".join(errors[-2:]) or "is it deployed? try --log FILE")


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        card: Optional[str] = typer.Argument(None, help="Card name: also check that this deployment fits."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="Target profile (ascend-a2, cpu, ...)."),
        tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size."),
        devices: Optional[str] = typer.Option(None, "--devices", help="Host NPU ids, e.g. 0,1."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
        no_hubs: bool = typer.Option(False, "--no-hubs", help="Skip hub reachability probes."),
    ) -> None:
        """Preflight: Docker, Compose, Ascend driver/NPUs/devices, disk, /dev/shm, hubs; with a card,
        also free HBM on the planned NPUs and image vs driver. Exit 3 when a blocking check fails."""
        from ..doctor import run_doctor

        dev_list = [int(x) for x in devices.split(",") if x.strip()] if devices else None
        plan = _make_plan(card, target, tp, dev_list) if card else None
        report = run_doctor(target=target, plan=plan, hubs=not no_hubs)
        if as_json:
            typer.echo(report.model_dump_json(indent=2))
        else:
            _print_report(report)
        raise typer.Exit(report.exit_code)

    @app.command("triage")
    def triage(
        name: Optional[str] = typer.Argument(None, help="Deployment name (reads its container logs)."),
        log: Optional[Path] = typer.Option(None, "--log", help="Read this log file instead."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Read a deployment's logs and name the known cause and fix (or say the cause is unknown)."""
        from ..doctor.triage import triage_text
        from ..errors import BadInput

        if log is None and not name:
            raise BadInput("give a deployment name or --log FILE")
        if log is not None:
            try:
                text = log.read_text(errors="replace")
            except OSError as exc:
                raise BadInput(f"cannot read log: {exc.strerror}", file=str(log)) from exc
        else:
            text = _deployment_logs(name)
        res = triage_text(text)
        if as_json:
            typer.echo(res.model_dump_json(indent=2))
            return
        from rich.console import Console

        con = Console(highlight=False, soft_wrap=True)
        if res.known:
            con.print(f"[bold red]{res.title}[/] ({res.signature})")
            con.print(f"cause: {res.cause}", markup=False)
            con.print(f"fix:   {res.fix}", markup=False)
            con.print("evidence:")
            for ln in res.matched_lines[:5]:
                con.print(f"  | {ln}", markup=False)
            if res.also_matched:
                con.print(f"also matched: {', '.join(res.also_matched)}", markup=False)
        else:
            con.print("[bold yellow]unknown cause[/]: no known signature matched. Last lines:")
            for ln in res.last_lines:
                con.print(f"  | {ln}", markup=False)
            con.print(res.fix, markup=False)
