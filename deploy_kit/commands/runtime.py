"""CLI commands: up, down, status, logs, smoke. Logic lives in deploy_kit.runtime.deploy.

Heavy imports (docker SDK) happen inside the command functions.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_failure(exc) -> None:
    tail = getattr(exc, "log_tail", None)
    if tail:
        err = _console(stderr=True)
        err.print("[dim]--- last container log lines ---[/]")
        err.print(tail, markup=False)
        err.print("[dim]--- end ---[/]")


class _Progress:
    """Live phase + last log line while the server starts (plain lines when not a terminal)."""

    def __init__(self, console, name: str) -> None:
        self.console, self.name, self.phase, self.last = console, name, "starting container", ""
        self.live = None
        if console.is_terminal:
            from rich.live import Live
            from rich.spinner import Spinner

            self.spinner = Spinner("dots", text=self._text())
            self.live = Live(self.spinner, console=console, refresh_per_second=8, transient=True)

    def _text(self) -> str:
        return f"{self.name}: {self.phase}  [dim]{self.last[:110]}[/]"

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *a) -> None:
        if self.live:
            self.live.__exit__(*a)

    def event(self, kind: str, text: str) -> None:
        if kind == "phase":
            self.phase = text
            self.console.print(f"  [bold]{self.name}[/]: {text}")
        elif kind == "log":
            self.last = text.strip()
        if self.live:
            from rich.markup import escape

            self.spinner.text = f"{self.name}: {self.phase}  [dim]{escape(self.last[:110])}[/]"


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        name: str = typer.Argument(..., help="Card name (models/<name>.yaml)."),
        target: str = typer.Option("ascend-a2", "--target", "-t", help="Target profile (default ascend-a2; cpu for the demo)."),
        tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size."),
        devices: Optional[str] = typer.Option(None, "--devices", help="Host device ids, comma separated."),
        port: Optional[int] = typer.Option(None, "--port", help="Host port."),
        set_: List[str] = typer.Option([], "--set", help="Override a card field: key=value (repeatable)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print what would happen; change nothing."),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Readiness deadline in seconds."),
    ) -> None:
        """Deploy a card: weights, image, container, readiness, smoke test."""
        from ..errors import RuntimeFailure
        from ..runtime import deploy

        out = _console()
        devs = [d.strip() for d in devices.split(",") if d.strip()] if devices else None
        prog = _Progress(out, name)
        try:
            with prog:
                res = deploy.up(name, target, tp=tp, devices=devs, port=port, sets=set_,
                                dry_run=dry_run, timeout=timeout,
                                say=lambda s: out.print(s, markup=False), on_event=prog.event)
        except RuntimeFailure as exc:
            _print_failure(exc)
            raise
        if dry_run or res.noop:
            return
        t = res.timings
        out.print(f"[green]ready[/] {res.name} at {res.url}  model={res.model}  image={res.image}"
                  f"{' (built)' if res.built else ' (cached)'}")
        out.print(f"  proven in {t.get('up_to_proven', 0):.1f} s after start "
                  f"(total {t.get('total', 0):.1f} s); smoke: {sum(1 for r in res.smoke if r.get('ok'))}"
                  f"/{len(res.smoke)} checks passed")
        for r in res.smoke:
            if "text" in r:
                out.print(f"  {r['check']}: {r['text'].strip()[:80]!r}", markup=False)

    @app.command()
    def down(name: str = typer.Argument(..., help="Deployment name.")) -> None:
        """Stop and remove a deployment; frees its port and devices."""
        from ..runtime import deploy

        rec = deploy.down(name)
        _console().print(f"removed {rec.name} (port {rec.port} freed)")

    @app.command()
    def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """Deployments, reconciled with what Docker runs."""
        from ..runtime import deploy

        rows = deploy.status()
        if as_json:
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        from rich.table import Table

        if not rows:
            _console().print("no deployments")
            return
        t = Table("name", "state", "healthy", "url", "model", "image", "devices", "problem")
        for r in rows:
            t.add_row(r["name"], r.get("state", "?"), "yes" if r.get("healthy") else "no", r["url"],
                      r["model"], r["image"], ",".join(r["devices"]) or "-", r.get("problem", ""))
        _console().print(t)

    @app.command()
    def logs(
        name: str = typer.Argument(..., help="Deployment name."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Follow the log."),
        tail: Optional[int] = typer.Option(None, "--tail", help="Only the last N lines."),
    ) -> None:
        """Container log of a deployment (or the log kept from a failed start)."""
        from ..runtime import deploy

        for line in deploy.logs(name, follow=follow, tail=tail if tail is not None else "all"):
            sys.stdout.write(line + "\n")
            if follow:
                sys.stdout.flush()

    @app.command()
    def smoke(name: str = typer.Argument(..., help="Deployment name.")) -> None:
        """Re-run the card's smoke test against a running deployment (exit 5 on failure)."""
        from ..runtime import deploy

        results = deploy.run_smoke(name)
        out = _console()
        for r in results:
            out.print(f"ok {r['check']}" + (f": {r['text'].strip()[:80]!r}" if "text" in r else ""),
                      markup=False)
