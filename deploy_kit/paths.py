"""Where deploykit finds its shipped data and keeps its caches and state.

Overrides (for tests and for operators): DEPLOYKIT_DATA (data root with models/, targets/,
templates/, images/, compose/, evals/), DEPLOYKIT_CACHE (weights cache), DEPLOYKIT_STATE (deployment records).
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """Directory of shipped data: 'models', 'targets', 'templates', 'images', 'compose' or 'evals'
    (local lm-eval tasks)."""
    root = os.environ.get("DEPLOYKIT_DATA")
    if root:
        return Path(root) / kind
    # Installed wheel: data lives inside the package.
    packaged = _PKG / "_data" / kind
    if packaged.is_dir():
        return packaged
    # Source checkout / editable install: data lives at the repository root.
    return _PKG.parent / kind


def cache_dir() -> Path:
    """Host weights cache; containers mount it read-only."""
    env = os.environ.get("DEPLOYKIT_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("deploykit")) / "models"


def state_dir() -> Path:
    """Deployment records, device/port ledger and their lock."""
    env = os.environ.get("DEPLOYKIT_STATE")
    if env:
        return Path(env)
    from platformdirs import user_state_dir

    return Path(user_state_dir("deploykit"))
