"""CLI commands: up, down, status, logs, smoke. They parse and print; deploy_kit.runtime does the work.

Heavy imports (docker SDK, rich) happen inside the command functions.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from .. import console
from .options import (DevicesOpt, DryRunOpt, ForceDevicesOpt, JsonOpt, PortOpt, ReleaseOpt, SetOpt, StrictOpt,
                      TargetOpt, TpOpt, devices_of)

NameArg = Annotated[str, typer.Argument(help="Deployment name (the card name unless a stack named it).")]
CardArg = Annotated[str, typer.Argument(help="Card name (models/<name>.yaml); the deployment gets its name.")]


class _Progress:
    """Live phase + last log line while the server starts (plain phase lines when not a terminal)."""

    def __init__(self, name: str) -> None:
        self.name, self.phase, self.last = name, "starting container", ""
        self.live: Any = None
        con = console.stdout_console()
        if console.is_terminal():
            from rich.live import Live
            from rich.spinner import Spinner

            self.spinner = Spinner("dots", text=self._text())
            self.live = Live(self.spinner, console=con, refresh_per_second=8, transient=True)

    def _text(self) -> Any:
        from rich.text import Text

        return Text(console.clean(f"{self.name}: {self.phase}  {self.last[:110]}"))

    def __enter__(self) -> _Progress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def event(self, kind: str, text: str) -> None:
        if kind == "phase":
            self.phase = text
            console.out(f"  {self.name}: {text}")
        elif kind == "log":
            self.last = text.strip()
        if self.live:
            self.spinner.text = self._text()


def _valid(name: str) -> str:
    """Refuse a deployment name that is not one safe path segment before it reaches a state dir,
    a run dir or a compose project name (exit 2, one line)."""
    from ..paths import validate_name

    return validate_name(name, what="deployment name")


def _print_ready(res: Any) -> None:
    t = res.timings
    console.out(f"ready {res.name} at {res.url}  model={res.model}  image={res.image}"
                f"{' (built)' if res.built else ' (cached)'}")
    console.out(f"  proven in {t.get('up_to_proven', 0):.1f} s after start (total {t.get('total', 0):.1f} s); "
                f"smoke: {sum(1 for r in res.smoke if r.get('ok'))}/{len(res.smoke)} checks passed")
    for r in res.smoke:
        if "text" in r:
            console.out(f"  {r['check']}: {r['text'].strip()[:80]!r}")


def up(name: CardArg, target: TargetOpt = None, tp: TpOpt = None, devices: DevicesOpt = None,
       port: PortOpt = None, set_: SetOpt = None, force_devices: ForceDevicesOpt = False,
       release: ReleaseOpt = None, strict: StrictOpt = False, dry_run: DryRunOpt = False,
       timeout: Annotated[Optional[float], typer.Option("--timeout", help="readiness deadline in seconds")] = None,
       ) -> None:
    """Deploy a card: preflight, weights, image, container, readiness, smoke test."""
    from ..runtime import deploy
    from ..runtime.readiness import StartFailed

    prog = _Progress(name)
    try:
        with prog:
            res = deploy.up(name, target, tp=tp, devices=devices_of(devices), port=port, sets=set_,
                            force_devices=force_devices, release=release, strict=strict, dry_run=dry_run,
                            timeout=timeout,
                            say=console.out, on_event=prog.event)
    except StartFailed as exc:
        console.err("--- last container log lines ---")
        console.err(exc.log_tail)
        console.err("--- end ---")
        raise
    if not (dry_run or res.noop):
        _print_ready(res)


def down(name: NameArg, dry_run: DryRunOpt = False) -> None:
    """Stop and remove a deployment; frees its port and devices."""
    from ..runtime import deploy

    _valid(name)
    if dry_run:
        console.out(f"would remove {name}:")
        for line in deploy.down_plan(name):
            console.out(f"  {line}")
        return
    rec = deploy.down(name)
    console.out(f"removed {rec.name} (port {rec.port} freed)")


def _print_metrics(as_json: bool, watch: bool, interval: float) -> None:
    import time

    from ..operate.metrics import COLUMNS, rows
    from ..runtime import deploy

    snaps = deploy.metrics()
    while True:
        if as_json:
            console.emit_json({name: {k: v for k, v in s.items() if k != "histograms"} for name, s in snaps.items()})
        else:
            console.table(COLUMNS, rows(snaps), title=time.strftime("%H:%M:%S") if watch else None)
        if not watch:
            return
        time.sleep(interval)
        snaps = deploy.metrics(snaps)  # rates and percentiles over the last interval


def status(as_json: JsonOpt = False,
           metrics: Annotated[bool, typer.Option("--metrics", help="live vLLM metrics of each deployment")] = False,
           watch: Annotated[bool, typer.Option("--watch", help="with --metrics: refresh until Ctrl-C")] = False,
           interval: Annotated[float, typer.Option("--interval", min=0.5, help="seconds between refreshes")] = 2.0,
           ) -> None:
    """Deployments, reconciled with what Docker runs (restart count, last failure); --metrics: load."""
    from ..runtime import deploy

    if metrics:
        _print_metrics(as_json, watch, interval)
        return
    rows = deploy.status()
    if as_json:
        console.emit_json(rows)
        return
    if not rows:
        console.out("no deployments")
        return
    console.table(["name", "state", "healthy", "restarts", "url", "model", "image", "devices", "problem"],
                  [[r["name"], r.get("state", "?"), "yes" if r.get("healthy") else "no", r.get("restarts", 0),
                    r["url"], r["model"], r["image"], r["devices"],
                    "; ".join(x for x in (r.get("problem", ""), r.get("last_failure", "")) if x)] for r in rows])


def logs(name: NameArg,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="follow the log")] = False,
         tail: Annotated[Optional[int], typer.Option("--tail", help="only the last N lines")] = None) -> None:
    """Container log of a deployment (or the log kept from a failed start)."""
    from ..runtime import deploy

    _valid(name)
    for line in deploy.logs(name, follow=follow, tail=tail if tail is not None else "all"):
        console.out(line)


def smoke(name: NameArg) -> None:
    """Re-run the card's smoke test against a running deployment (exit 5 on failure)."""
    from ..runtime import deploy

    _valid(name)
    for r in deploy.run_smoke(name):
        console.out(f"ok {r['check']}" + (f": {r['text'].strip()[:80]!r}" if "text" in r else ""))


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(logs)
    app.command()(smoke)
