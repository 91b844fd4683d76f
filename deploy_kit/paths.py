"""Where deploykit finds its shipped data and keeps its caches and state.

Overrides (for tests and for operators): DEPLOYKIT_DATA (data root with models/, targets/,
templates/, images/, compose/, evals/), DEPLOYKIT_CACHE (weights cache), DEPLOYKIT_STATE (deployment records).
"""

from __future__ import annotations

import os
import re
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


# A name that becomes a path component (state/run dirs, render dirs, compose project, container
# name) is one safe segment: no separator, no "..", no hidden file, no shell or Compose syntax.
# Same alphabet as card names (cards.Card.name), so every card name is a valid deployment name.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)


def validate_name(name: str, what: str = "name") -> str:
    """``name`` unchanged when it is safe as one path segment; BadInput (exit 2) otherwise.

    Use it before joining a user-supplied name onto a directory: ``state_dir() / validate_name(n)``.
    """
    from .errors import BadInput

    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise BadInput(f"{what} {name!r} is not a valid name",
                       hint="lower-case letters, digits, '.', '_' and '-', starting with a letter "
                            "or digit, at most 63 characters")
    return name
