"""What deploykit wrote into a model directory, and the bookkeeping that proves it.

`.deploykit.json` (the manifest) is written after a verified pull: source, repo, requested
revision, resolved commit, and every file with size and sha256. `.deploykit-pending.json` is
written *before* a download starts, listing the files about to be fetched, so that an interrupted
pull still tells `cache rm` which files are ours. `cache rm` deletes only paths named by these two
records plus the hub clients' own hidden `.cache/` bookkeeping, never anything else in the dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from deploy_kit.weights.verify import safe_rel

MANIFEST = ".deploykit.json"
PENDING = ".deploykit-pending.json"
CLIENT_DIR = ".cache"  # huggingface_hub local_dir metadata; modelscope lock files (we point it here)
_MAX_MANIFEST = 16 * 1024 * 1024  # a manifest lists each file once: ~150 bytes per file


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_MANIFEST + 1)
        data = json.loads(raw) if len(raw) <= _MAX_MANIFEST else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files", []), list):
        return None
    return data


def read_manifest(d: Path) -> dict | None:
    """The manifest of a verified pull, or None (absent, unreadable, or not ours)."""
    return _read_json(Path(d) / MANIFEST)


def is_complete(d: Path) -> bool:
    """A finished, verified pull (manifest written, no download pending). Cheap: no hashing;
    `deploykit cache verify` / the next pull re-hash."""
    return read_manifest(Path(d)) is not None and not (Path(d) / PENDING).exists()


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(d: Path, data: dict) -> None:
    write_json_atomic(Path(d) / MANIFEST, data)
    (Path(d) / PENDING).unlink(missing_ok=True)


def write_pending(d: Path, files: list[str]) -> None:
    """Before downloading: the files this pull is about to write (kept until the manifest is)."""
    old = _read_json(Path(d) / PENDING) or {}
    known = {f for f in old.get("files", []) if isinstance(f, str)}
    write_json_atomic(Path(d) / PENDING, {"files": sorted(known | set(files))})


def owned_files(d: Path) -> list[Path]:
    """Files in d that deploykit wrote (manifest + pending lists, both records, and partials of
    listed files). Paths are checked to stay inside d."""
    d = Path(d)
    rels: set[str] = set()
    man = read_manifest(d) or {}
    rels |= {str(f.get("path")) for f in man.get("files", []) if isinstance(f, dict)}
    pending = _read_json(d / PENDING) or {}
    rels |= {f for f in pending.get("files", []) if isinstance(f, str)}
    out = [d / r for r in sorted(r for r in rels if safe_rel(r))]
    # the ModelScope client's resumable partial of a file we asked for
    out += [d / (r + ".incomplete") for r in sorted(r for r in rels if safe_rel(r))]
    out += [d / MANIFEST, d / PENDING]
    return [p for p in out if p.is_file() or p.is_symlink()]


def partial_files(d: Path) -> list[Path]:
    """Interrupted downloads: `*.incomplete` anywhere under d (hidden client dirs included)."""
    return sorted(p for p in Path(d).rglob("*.incomplete") if p.is_file() and not p.is_symlink())


def clean_stale_hf_partials(d: Path) -> list[Path]:
    """Remove huggingface_hub's leftover `.incomplete` files from killed pulls.

    huggingface_hub (2.x) writes each attempt to a process-unique `<etag>.<uuid>.incomplete`
    (upstream PR #4228) and never reopens one, so a file left by a killed process can never be
    resumed: it only takes disk space. Called with the per-model pull lock held, so no live
    download owns them. (The ModelScope client's `<file>.incomplete` does resume: kept.)
    """
    root = Path(d) / CLIENT_DIR / "huggingface"
    gone = [p for p in partial_files(root)] if root.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
