"""What bench, eval and report point at: a running deployment by name, or a URL.

A deployment NAME resolves through the runtime state (deploy_kit/runtime/state.py): its URL, the
served model name, the card, and the weights directory the container mounts (for exact token
counts and the transformers reference). A URL is taken as given after a syntax check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadInput


@dataclass
class Target:
    url: str                         # base URL without a trailing slash
    model: str = ""                  # served model name; "" = the server's only model
    name: str = ""                   # deployment name ("" for a URL target)
    card_name: str = ""
    weights_dir: str | None = None   # host directory of the weights, when it exists
    facts: dict[str, Any] = field(default_factory=dict)   # report: image, plan file, smoke file, argv


def check_url(url: str) -> str:
    """http(s)://host[:port][/path] without a trailing slash, or BadInput (exit 2)."""
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BadInput(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"not a valid URL: {url!r}", hint="pass http://host:port or a deployment name")
    return url.rstrip("/")


def _record(name: str) -> Any:
    try:
        from ..runtime import state
    except ImportError:
        raise BadInput(f"{name!r} is not a URL and the runtime is not available",
                       hint="pass http://host:port") from None
    return state.load(name)


def _facts(name: str, rec: Any) -> dict[str, Any]:
    from ..runtime import state

    plan = rec.plan
    plan_file = Path(rec.render_dir) / "plan.json" if rec.render_dir else None
    smoke = sorted(state.run_dir(name).glob("smoke*.json"))
    return {"image": rec.image, "image_id": rec.image_id,
            "plan_file": plan_file if plan_file and plan_file.is_file() else None,
            "smoke_file": smoke[-1] if smoke else None,
            "argv": list(plan.argv) if plan is not None else None,
            "weights_host_path": plan.weights.host_path if plan is not None else None}


def resolve_target(name_or_url: str, model: str | None = None) -> Target:
    """A Target for a URL or the name of a running deployment (BadInput when there is none)."""
    if name_or_url.startswith(("http://", "https://")):
        return Target(url=check_url(name_or_url), model=model or "")
    rec = _record(name_or_url)
    if rec is None or rec.port is None:
        raise BadInput(f"no running deployment named {name_or_url!r}",
                       hint=f"run `deploykit up {name_or_url}` or pass a URL")
    facts = _facts(name_or_url, rec)
    host = facts["weights_host_path"]
    if not host:   # a record whose plan this deploykit cannot read: the cache layout
        from ..paths import cache_dir

        host = str(cache_dir() / rec.card_name)
    return Target(url=rec.url, model=model or rec.served_model_name or rec.card_name, name=name_or_url,
                  card_name=rec.card_name, weights_dir=host if Path(host).is_dir() else None, facts=facts)


def deployment_facts(name: str) -> Target | None:
    """The Target of deployment `name` for a report, or None when there is no record of it
    (a report may be built from evidence alone)."""
    rec = _record(name)
    if rec is None:
        return None
    facts = _facts(name, rec)
    return Target(url=rec.url if rec.port else "", model=rec.served_model_name, name=name,
                  card_name=rec.card_name, weights_dir=facts["weights_host_path"], facts=facts)
