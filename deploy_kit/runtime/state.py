"""Deployment records and the device/port ledger, under one file lock.

One JSON record per deployment in ``state_dir()/deployments/<name>.json``. Every claim of
devices or a port happens while holding ``state_dir()/ledger.lock`` so two concurrent `up`s can
never take the same device or port; `down` deletes the record and thereby frees them.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field, ValidationError, field_validator

from ..errors import BadInput, Infeasible
from ..paths import state_dir, validate_name
from ..planner import Plan

LOCK_TIMEOUT_S = 60.0


class Record(BaseModel):
    """What `up` created; enough for down/status/logs/smoke without re-planning."""

    name: str
    card_name: str
    target: str
    image: str = ""              # content-addressed tag actually run
    image_id: str = ""
    context_hash: str = ""
    plan_hash: str = ""          # hash of plan.json + rendered files; changed => recreate
    render_dir: str = ""
    project: str = ""            # compose project name
    container_ids: list[str] = Field(default_factory=list)
    host_devices: list[str] = Field(default_factory=list)
    port: int | None = None
    bind_host: str = "127.0.0.1"
    served_model_name: str = ""
    phase: str = "starting"      # starting | ready | failed | smoke-failed
    created_at: float = Field(default_factory=time.time)
    ready_at: float | None = None
    timings: dict[str, Any] = Field(default_factory=dict)  # seconds; "phases": {phase: s}
    plan: Plan | None = None     # None: an older deploykit wrote a plan this one cannot read

    @field_validator("plan", mode="before")
    @classmethod
    def _old_plan(cls, value: Any) -> Any:
        """A plan dict from an older deploykit: kept out (down/status/logs still work), not guessed at."""
        if isinstance(value, dict):
            try:
                return Plan.model_validate(value)
            except ValidationError:
                return None
        return value

    def need_plan(self) -> Plan:
        if self.plan is None:
            raise BadInput(f"the record of {self.name!r} holds no plan this deploykit can read "
                           "(written by an older version)", hint=f"run `deploykit up {self.card_name}` again")
        return self.plan

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "", "::") else self.bind_host
        return f"http://{host}:{self.port}"


def _root() -> Path:
    d = state_dir()
    (d / "deployments").mkdir(parents=True, exist_ok=True)
    return d


def record_path(name: str) -> Path:
    """The record file of ``name``; BadInput (exit 2) for a name that is not one safe path segment,
    so '../../x' never reaches a path (load, save and delete all come through here)."""
    return _root() / "deployments" / f"{validate_name(name, what='deployment name')}.json"


def run_dir(name: str) -> Path:
    """Per-deployment scratch: smoke request/response, readiness log."""
    d = _root() / "runs" / validate_name(name, what="deployment name")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def locked(timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(_root() / "ledger.lock"))
    try:
        with lock.acquire(timeout=timeout):
            yield
    except Timeout as exc:
        raise Infeasible("state ledger is locked by another deploykit process",
                         hint=f"wait, or remove {lock.lock_file} if no deploykit is running") from exc


def load(name: str) -> Record | None:
    p = record_path(name)
    if not p.is_file():
        return None
    return Record.model_validate_json(p.read_text())


def save(rec: Record) -> None:
    p = record_path(rec.name)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(rec.model_dump_json(indent=2))
    os.replace(tmp, p)  # atomic: readers never see half a record


def delete(name: str) -> bool:
    p = record_path(name)
    if p.exists():
        p.unlink()
        return True
    return False


def all_records() -> list[Record]:
    out = []
    for p in sorted((_root() / "deployments").glob("*.json")):
        try:
            out.append(Record.model_validate_json(p.read_text()))
        except ValueError:
            continue  # a corrupt record must not hide the others
    return out


def claim(rec: Record) -> None:
    """Atomically check the ledger and write the record (raises Infeasible on conflict)."""
    with locked():
        from ..stack.ledger import conflicts

        reasons = conflicts(rec.name, rec.host_devices, rec.port, rec.target)
        if reasons:
            raise Infeasible(f"cannot start {rec.name!r}", reasons=reasons,
                             hint="`deploykit status` lists deployments; `deploykit down NAME` frees them")
        save(rec)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    from ..planner import port_in_use

    return not port_in_use(port, host)


def records_json() -> str:
    return json.dumps([r.model_dump() for r in all_records()], indent=2)
