"""`deploykit bundle` / `deploykit load`: carry a deployment across an air gap (stub)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Nothing registered yet."""
