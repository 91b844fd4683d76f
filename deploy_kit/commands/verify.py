"""CLI commands: verify. Heavy imports go inside the command functions."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
