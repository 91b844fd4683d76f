"""`deploykit cache ls|verify|rm`: what is in the weights cache, whether it proves itself, and
removing only what deploykit wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

from deploy_kit import paths
from deploy_kit.errors import BadInput, RuntimeFailure, VerificationFailed
from deploy_kit.weights import verify
from deploy_kit.weights.manifest import (
    CLIENT_DIR, MANIFEST, is_complete, owned_files, partial_files, read_manifest,
)


def _root(cache: Path | None) -> Path:
    return Path(cache or paths.cache_dir())


def _model_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def list_cache(cache: Path | None = None) -> list[dict]:
    """One row per model dir. `bytes` counts model files only: interrupted downloads
    (`*.incomplete`) are `partial_bytes`, never part of a model's size or of "complete"."""
    out = []
    for d in _model_dirs(_root(cache)):
        man = read_manifest(d) or {}
        size = sum(p.stat().st_size for p in verify.payload_files(d))
        partial = sum(p.stat().st_size for p in partial_files(d))
        out.append({"name": d.name, "path": str(d), "bytes": size, "partial_bytes": partial,
                    "source": man.get("source"), "repo": man.get("repo"), "commit": man.get("commit"),
                    "complete": is_complete(d)})
    return out


def _model_dir(name: str, cache: Path | None) -> Path:
    root = _root(cache)
    d = root / paths.validate_name(name, "cache entry")
    if d.is_symlink() or not d.is_dir():
        raise BadInput(f"'{name}' is not in the cache ({root})")
    return d


def verify_cache(name: str | None = None, cache: Path | None = None) -> list[dict]:
    """Re-hash every cached file against its manifest: [{name, files, problems}] per model.
    Raises VerificationFailed (exit 5) naming the first bad file when any model fails."""
    dirs = [_model_dir(name, cache)] if name else _model_dirs(_root(cache))
    results = []
    for d in dirs:
        man = read_manifest(d)
        if man is None:
            problems = {MANIFEST: f"{MANIFEST}: missing (an interrupted pull, or not written by deploykit)"}
        else:
            problems = verify.check_against_manifest(d, man.get("files", []))
        results.append({"name": d.name, "path": str(d), "files": len((man or {}).get("files", [])),
                        "problems": sorted(problems.values())})
    return results


def raise_if_bad(results: list[dict]) -> None:
    bad = [r for r in results if r["problems"]]
    if bad:
        first = bad[0]
        more = sum(len(r["problems"]) for r in bad) - 1
        raise VerificationFailed(f"{first['name']}: {first['problems'][0]}"
                                 + (f" (and {more} more)" if more else ""), file=first["path"],
                                 hint=f"deploykit pull {first['name']} fetches what is wrong again")


def removal_plan(name: str, cache: Path | None = None) -> dict:
    """What `cache rm NAME` deletes: files named by deploykit's manifest or pending record and the hub
    clients' hidden bookkeeping dir. Everything else is kept (the empty `.NAME.lock` beside the dir
    stays too: deleting a lock file another process may be opening breaks its mutual exclusion)."""
    d = _model_dir(name, cache)
    owned = owned_files(d)
    if not owned:
        raise BadInput(f"{d} holds no deploykit manifest: not written by deploykit, nothing removed")
    client_dir = d / CLIENT_DIR
    remove = [str(p) for p in owned]
    if client_dir.is_symlink() or client_dir.is_dir():
        remove.append(str(client_dir))
    mine = {Path(p) for p in remove}
    kept = [str(p) for p in sorted(d.rglob("*"))
            if (p.is_file() or p.is_symlink()) and p not in mine and client_dir not in p.parents]
    return {"name": d.name, "path": str(d), "remove": remove, "kept": kept}


def remove(name: str, cache: Path | None = None, dry_run: bool = False) -> dict:
    """Delete what removal_plan names (never following symlinks); empty dirs go too. Holds the
    model's pull lock: a pull in progress is never cut from under it."""
    if dry_run:
        return dict(removal_plan(name, cache), dry_run=True)
    from deploy_kit.weights.hubs import client

    filelock = client("filelock", "filelock")
    d = _model_dir(name, cache)
    try:
        with filelock.FileLock(str(d.parent / f".{d.name}.lock"), timeout=0):
            return _remove_planned(dict(removal_plan(name, cache), dry_run=False), d)
    except filelock.Timeout:
        raise RuntimeFailure(f"a pull of {d.name} is in progress: nothing removed",
                             hint="wait for it to finish, then run cache rm again") from None


def _remove_planned(plan: dict, d: Path) -> dict:
    for p in map(Path, plan["remove"]):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    # directories that held only removed files (e.g. a sharded model's subdir) go too
    emptied = {q for p in map(Path, plan["remove"]) for q in p.parents if d in q.parents}
    for sub in sorted(emptied, key=lambda q: len(q.parts), reverse=True):
        if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
            sub.rmdir()
    if not any(d.iterdir()):
        d.rmdir()
    plan["dir_removed"] = not d.exists()
    return plan
