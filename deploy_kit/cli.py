"""Thin CLI: parse arguments, call the core, print. No heavy imports at module level.

Each command group lives in deploy_kit/commands/<group>.py and exposes ``register(app)``.
Commands import torch, vllm, docker or the hub clients only inside their function bodies,
so `deploykit --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

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
    "bundle",    # bundle, load                                        (issue: air-gapped bundles)
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


# Exceptions the world or the user causes, by fully qualified class name anywhere in the MRO
# (matched by name so that the boundary imports none of these libraries): exit code and what to say.
_WORLD_ERRORS: list[tuple[str, int, str]] = [
    ("yaml.error.YAMLError", 2, "not valid YAML"),
    ("pydantic_core._pydantic_core.ValidationError", 2, "invalid value"),
    ("builtins.UnicodeError", 2, "not valid UTF-8 text"),
    ("builtins.RecursionError", 2, "input nested too deeply"),
    ("builtins.FileNotFoundError", 2, "no such file"),
    ("builtins.IsADirectoryError", 2, "is a directory, not a file"),
    ("builtins.NotADirectoryError", 2, "not a directory"),
    ("builtins.PermissionError", 2, "permission denied"),
    ("builtins.MemoryError", 4, "out of memory"),
    ("builtins.OSError", 4, "system error"),
    ("httpx.HTTPError", 4, "HTTP request failed"),
    ("httpx.InvalidURL", 2, "invalid URL"),
    ("docker.errors.DockerException", 4, "Docker failed"),
    ("requests.exceptions.RequestException", 4, "HTTP request failed"),
    ("huggingface_hub.errors.HfHubHTTPError", 4, "hub request failed"),
]


def classify(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an exception the user or the world caused; None for a bug."""
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
    for name, code, what in _WORLD_ERRORS:
        if name in names:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            return code, f"{what}: {detail}"
    return None


def _report(line: str) -> None:
    from .console import err

    err(f"error: {line}")


def _usage_message(exc: Any) -> str:
    return str(exc.format_message())


def _usage_line(exc: Any) -> str:
    """click's usage error as one line: the command, the error, where help is."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "deploykit"
    return f"{path}: {exc.format_message()} (see `{path} --help`)"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: the one error boundary (one line and an exit code)."""
    # typer may vendor click: take the exception classes from typer itself.
    click_error: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Not standalone: click's usage errors come here and are printed as one line (exit 2).
        rv = app(args=args, prog_name="deploykit", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except click_error as exc:  # bad flags, arguments or option values
        if type(exc).__name__ == "NoArgsIsHelpError":  # `deploykit` or a group alone: its help
            print(_usage_message(exc))
            return 0
        _report(_usage_line(exc))
        return 2
    except (typer.Abort, KeyboardInterrupt):
        return 130
    except DeployKitError as exc:
        if debug:
            raise
        _report(exc.one_line())
        return exc.exit_code
    except Exception as exc:
        if debug:
            raise
        known = classify(exc)
        if known is not None:
            _report(known[1])
            return known[0]
        # A bug in deploykit.
        _report(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
