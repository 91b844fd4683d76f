"""The one compose contract: project names, the service builder, the label namespace.

Every compose file deploykit writes (`render`, `up`, `stack render`, multi-node) gets its services
from ``service()``; every command that finds a deployment's containers (`up`, `down`, `status`,
`logs`, `triage`, `doctor`) names the project with ``project_name()``.

Values from a card are untrusted: Compose interpolates ``$`` in ``command:`` and ``environment:``,
so the builder writes them as ``$$`` (a literal dollar). Env files are not interpolated when a value
is single-quoted (render.env_file_text quotes such values).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from .planner import Plan

LABEL_PREFIX = "org.deploykit."
DOCKERFILE = "Dockerfile"
COMPOSE_HEAD = ("# Rendered by deploykit from plan.json. Start: docker compose -f compose.yaml up -d\n"
                "# Weights are mounted read-only from the host cache; nothing runs privileged.\n")


def label(key: str) -> str:
    """A label name in deploykit's one namespace (org.deploykit.<key>)."""
    return LABEL_PREFIX + key


def project_name(name: str, state: Path | None = None) -> str:
    """Compose project of deployment ``name`` (lowercase letters, digits, '-', '_').

    Rendered files carry the plain name (``state`` None). Deployments deploykit runs add a hash of
    their state dir, so two state dirs (a user's and a test's) never share, and so never recreate,
    one project."""
    base = "deploykit-" + re.sub(r"[^a-z0-9_-]", "-", name.lower())
    if state is None:
        return base
    return f"{base}-{hashlib.sha256(str(state).encode()).hexdigest()[:6]}"


def escape(value: str) -> str:
    """A literal string for Compose: ``$`` would start an interpolation."""
    return value.replace("$", "$$")


def service_env(plan: Plan) -> dict[str, str]:
    """The container's environment: the plan's env, minus what the device rule keeps unset."""
    env = {k: str(v) for k, v in plan.env.items()}
    if plan.visible_devices_rule == "ascend-unset":
        env.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    return env


def labels(plan: Plan) -> dict[str, str]:
    return {label("name"): plan.name, label("card"): plan.card_name, label("target"): plan.target,
            label("devices"): ",".join(map(str, plan.host_devices))}


def _devices(plan: Plan, svc: dict[str, Any]) -> None:
    if plan.device_nodes:
        svc["devices"] = [f"{d}:{d}" for d in plan.device_nodes]
    if plan.target_kind == "cuda":
        svc["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "device_ids": [str(d) for d in plan.host_devices], "capabilities": ["gpu"]}
        ]}}}


def service(plan: Plan, *, env_file: str | None = "model.env", build_context: str | None = ".",
            image: str | None = None, publish: bool = True) -> dict[str, Any]:
    """One compose service for a plan: single deployments, stacks and multi-node nodes.

    ``env_file`` None puts the environment inline (escaped); ``build_context`` None leaves out
    ``build:`` (the image must then be pullable or already built); ``publish`` False drops ports
    (host networking)."""
    from .operate.heal import service_policy

    svc: dict[str, Any] = {"image": image or plan.image}
    if build_context is not None:
        svc["build"] = {"context": build_context, "dockerfile": DOCKERFILE}
    svc["command"] = [escape(a) for a in plan.argv]
    if env_file is not None:
        svc["env_file"] = [env_file]
    else:
        svc["environment"] = {k: escape(v) for k, v in service_env(plan).items()}
    if publish:
        svc["ports"] = [f"{plan.bind_host}:{plan.port}:{plan.container_port}"]
    svc["volumes"] = [f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in plan.mounts]
    svc.update({"shm_size": plan.shm_size, "labels": labels(plan)})
    if plan.secret_env:
        # null = passed through from the operator's environment at `up` time, never written.
        svc.setdefault("environment", {}).update({k: None for k in plan.secret_env})
    _devices(plan, svc)
    svc.update(service_policy(plan))
    return svc


def compose_dict(plan: Plan) -> dict:
    return {"name": project_name(plan.name), "services": {plan.name: service(plan)}}


def compose_text(plan: Plan) -> str:
    return COMPOSE_HEAD + yaml.safe_dump(compose_dict(plan), sort_keys=False, width=1000)
