"""Thin CLI: parse arguments, call the core, print. No heavy imports at module level.

Each command group lives in deploy_kit/commands/<group>.py and exposes ``register(app)``.
Commands import torch, vllm, docker or the hub clients only inside their function bodies,
so `deploykit --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import DeployKitError

# Order = order in --help. Each module defines register(app: typer.Typer) -> None.
COMMAND_MODULES = [
    "catalog",   # list, show, plan, render, validate, schema        (issue: cards/plan/render)
    "weights",   # pull, cache ls/rm                                   (issue: weights)
    "runtime",   # up, down, status, logs, smoke                       (issue: runtime)
    "verify",    # bench, eval, report                                 (issue: verification)
    "stack",     # stack plan/render/up/down, devices                  (issue: stacks/k8s)
    "doctor",    # doctor, triage                                      (issue: preflight/triage)
]

app = typer.Typer(
    name="deploykit",
    help="Model card -> validated plan -> proven vLLM deployment (Ascend NPU, CUDA, CPU).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain (click) help: typer's rich help formatter imports rich.markdown & co. and doubled the
    # time of `deploykit --help` on a 2-core box (0.39 s vs 0.2 s, measured). Output stays rich.
    rich_markup_mode=None,
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    _state["debug"] = debug


def _register_all() -> None:
    for name in COMMAND_MODULES:
        mod = importlib.import_module(f"deploy_kit.commands.{name}")
        mod.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: maps DeployKitError to one line and its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # standalone_mode: typer/click print usage errors themselves and exit 2 (bad input).
        app(args=args, prog_name="deploykit", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except DeployKitError as exc:
        if debug:
            raise
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"[bold red]error:[/] {exc.one_line()}", markup=True
        )
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in deploykit
        if debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
