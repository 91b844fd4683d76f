"""`deploykit cache ls|rm`: what is in the weights cache."""

from __future__ import annotations

import shutil
from pathlib import Path

from deploy_kit import paths
from deploy_kit.errors import BadInput
from deploy_kit.weights.pull import read_manifest


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def list_cache(cache: Path | None = None) -> list[dict]:
    root = Path(cache or paths.cache_dir())
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        man = read_manifest(d) or {}
        out.append({"name": d.name, "path": str(d), "bytes": _size(d), "source": man.get("source"),
                    "repo": man.get("repo"), "commit": man.get("commit"), "complete": bool(man)})
    return out


def remove(name: str, cache: Path | None = None) -> Path:
    root = Path(cache or paths.cache_dir())
    d = root / name
    if "/" in name or name.startswith(".") or not d.is_dir():
        raise BadInput(f"'{name}' is not in the cache ({root})")
    shutil.rmtree(d)
    (root / f".{name}.lock").unlink(missing_ok=True)
    return d
