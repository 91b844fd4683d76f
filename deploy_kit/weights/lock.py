"""Remote-code locks: the commit a `trust_remote_code` card's branch resolved to at first pull.

A card that runs the repository's own Python code but pins no revision is not refused: the first
`deploykit pull` resolves the branch to its commit through the hub API, prints the commit and the
URL to review the code at that commit, and records it here. Later pulls, plans and `up`s use the
locked commit, so the code that runs is the code that was (or could have been) reviewed.

One small JSON file per card in the weights cache: ``$DEPLOYKIT_CACHE/.locks/<card>.json``, with
an entry per (source, model id). Kept beside, not inside, the model directory, so `cache rm`
(which deletes the weights) does not forget what was reviewed.

This module is imported by the planner: standard library only, no hub client, no network.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from deploy_kit import paths
from deploy_kit.errors import BadInput

LOCK_DIR = ".locks"
_MAX_LOCK_BYTES = 256 * 1024  # a lock file holds a handful of entries; anything larger is not ours
REQUIRE_PINNED_ENV = "DEPLOYKIT_REQUIRE_PINNED"


def lock_path(card_name: str, cache: Path | None = None) -> Path:
    root = Path(cache or paths.cache_dir())
    return root / LOCK_DIR / f"{paths.validate_name(card_name, 'card name')}.json"


def require_pinned_from_env() -> bool:
    """Strict shops opt in to refusing unpinned remote code (DEPLOYKIT_REQUIRE_PINNED=1)."""
    return os.environ.get(REQUIRE_PINNED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_LOCK_BYTES + 1)
    except FileNotFoundError:
        return {"locks": []}
    except OSError as exc:
        raise BadInput(f"cannot read remote-code lock file: {exc.strerror}", file=str(path)) from None
    try:
        if len(raw) > _MAX_LOCK_BYTES:
            raise ValueError(f"larger than {_MAX_LOCK_BYTES} bytes")
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("locks"), list):
            raise ValueError("no 'locks' list")
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        # Never ignore a broken lock: that would silently run unreviewed code.
        raise BadInput(f"remote-code lock file is not valid ({exc})", file=str(path),
                       hint="fix or delete it; the next pull locks the branch head again") from None
    return data


def lock_entry(card_name: str, model_id: str, source: str | None = None,
               cache: Path | None = None) -> dict[str, Any] | None:
    """The recorded entry {model_id, source, commit, locked_at, review_url, requested}, or None."""
    for e in _read(lock_path(card_name, cache))["locks"]:
        if (isinstance(e, dict) and e.get("model_id") == model_id
                and (source is None or e.get("source") == source)):
            return e
    return None


def locked_revision(card_name: str, model_id: str, source: str | None = None,
                    cache: Path | None = None) -> str | None:
    """The commit locked for this card's model id (optionally: on this hub), or None."""
    e = lock_entry(card_name, model_id, source, cache)
    commit = e.get("commit") if e else None
    return commit if isinstance(commit, str) and commit else None


def record_lock(card_name: str, model_id: str, commit: str, *, source: str,
                requested: str | None = None, review_url: str | None = None,
                cache: Path | None = None) -> Path:
    """Record (or replace) the locked commit for (source, model id); return the lock file."""
    path = lock_path(card_name, cache)
    data = _read(path)
    keep = [e for e in data["locks"]
            if not (isinstance(e, dict) and e.get("model_id") == model_id and e.get("source") == source)]
    keep.append({"model_id": model_id, "source": source, "commit": commit,
                 "requested": requested or None, "review_url": review_url,
                 "locked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    data = {"card": card_name, "locks": sorted(keep, key=lambda e: (str(e.get("source")),
                                                                      str(e.get("model_id"))))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # readers never see half a file
    return path
