"""What runs, after `up`: containers of a deployment, its logs (live or kept), status, down, smoke.

A deployment's containers are found by its compose project (deploy_kit.composefile.project_name,
recorded in its state record); when a start fails, the container's log is kept under its run dir
(``failure.log``, bounded) before the container is removed, so `triage NAME` still has the evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import BadInput, RuntimeFailure
from . import compose, readiness, smoke, state

LOG_CAP_BYTES = 8 * 1024 * 1024   # what a kept or triaged log may hold (the end of it)
FAILURE_LOG = "failure.log"


def containers(rec: state.Record) -> list:
    from . import dockerapi

    found = dockerapi.project_containers(rec.project) if rec.project else []
    if found:
        return found
    return [c for c in (dockerapi.container(cid) for cid in rec.container_ids) if c is not None]


def dead_reason(cid: str) -> Callable[[], str | None]:
    from . import dockerapi

    def check() -> str | None:
        st = dockerapi.container_state(cid)
        if st is None:
            return "container was removed"
        if st.get("Status") in ("exited", "dead"):
            oom = " OOMKilled" if st.get("OOMKilled") else ""
            return f"exit code {st.get('ExitCode')}{oom}"
        # A restart policy hides the exit (the container is soon "running" again): a server that
        # exits before it was ever ready is a failed start, not something to wait for.
        if st.get("Restarting") or st.get("RestartCount"):
            return f"restarted {st.get('RestartCount') or 1} time(s) by its restart policy"
        return None
    return check


def smoke_search() -> list[Path]:
    from ..paths import data_dir

    return [Path.cwd(), data_dir("models")]


def teardown(rec: state.Record) -> None:
    from . import dockerapi

    compose_file = Path(rec.render_dir) / "compose.yaml" if rec.render_dir else None
    if compose_file is not None and compose_file.is_file():
        try:
            compose.run_compose(rec.project, compose_file, "down", "--remove-orphans", "-t", "10")
        except RuntimeFailure:
            pass  # removed below, container by container
    for c in containers(rec):  # removed by hand or compose file gone: remove what is left
        dockerapi.remove(c.id)


def save_failure(rec: state.Record, exc: RuntimeFailure) -> Path:
    """Keep the evidence (the containers' whole log, bounded), then free the port/devices."""
    from . import dockerapi

    parts = [dockerapi.log_bytes(cid, LOG_CAP_BYTES) for cid in rec.container_ids]
    text = b"\n".join(p for p in parts if p)[-LOG_CAP_BYTES:]
    d = state.run_dir(rec.name)
    log = d / FAILURE_LOG
    log.write_bytes(text or str(getattr(exc, "log_tail", "") or "").encode())
    (d / "failure.json").write_text(json.dumps({"error": exc.one_line(), "cause": getattr(exc, "cause", None),
                                                "project": rec.project}, indent=2))
    teardown(rec)
    with state.locked():
        state.delete(rec.name)
    return log


def need(name: str) -> state.Record:
    rec = state.load(name)
    if rec is None:
        known = ", ".join(r.name for r in state.all_records()) or "none"
        raise BadInput(f"no deployment named {name!r}", hint=f"deployments: {known}")
    return rec


def down_plan(name: str) -> list[str]:
    """What `down NAME` removes (for --dry-run): containers, compose project, the record."""
    rec = need(name)
    found = containers(rec)
    lines = [f"container {c.name} ({c.short_id}, {c.status})" for c in found]
    lines.append(f"compose project {rec.project}" + (f" ({rec.render_dir}/compose.yaml)" if rec.render_dir else ""))
    devices = ",".join(rec.host_devices) or "-"
    lines.append(f"record {state.record_path(name)} (frees port {rec.port}, devices {devices})")
    return lines


def down(name: str) -> state.Record:
    rec = need(name)
    teardown(rec)
    with state.locked():
        state.delete(name)
    return rec


def deployment_log(name: str, cap: int = LOG_CAP_BYTES) -> str:
    """The end (``cap`` bytes) of a deployment's log: its live container, else the log kept when it
    failed. Works for every deployment `up` or `stack up` started."""
    from ..composefile import project_name
    from ..paths import state_dir
    from . import dockerapi

    rec = state.load(name)
    project = rec.project if rec is not None else project_name(name, state_dir())
    saved = state.run_dir(name) / FAILURE_LOG
    try:
        found = dockerapi.project_containers(project)
    except RuntimeFailure:  # no Docker here: the kept log is still evidence
        if not saved.is_file():
            raise
        found = []
    if found:
        return dockerapi.log_bytes(found[0].id, cap).decode("utf-8", "replace")
    if saved.is_file():
        return read_capped(saved, cap)
    raise BadInput(f"no logs for deployment {name!r}: no container in compose project {project} "
                   "and no log kept from a failed start", hint="`deploykit status` lists deployments; "
                   "or give a file: deploykit triage --log FILE")


def read_capped(path: Path, cap: int = LOG_CAP_BYTES) -> str:
    """The last ``cap`` bytes of a regular file, or the first ``cap`` of a stream (/dev/zero ends)."""
    with open(path, "rb") as f:
        if path.is_file():
            f.seek(max(0, path.stat().st_size - cap))
        data = f.read(cap)
    return data.decode("utf-8", "replace")


def logs(name: str, follow: bool = False, tail: int | str = "all") -> Iterator[str]:
    """Log lines (live container, else the log saved when it failed)."""
    from . import dockerapi

    rec = state.load(name)
    found = containers(rec) if rec is not None else []
    if found and follow:
        yield from dockerapi.follow_logs(found[0].id)
    elif found:
        yield from dockerapi.logs(found[0].id, tail=tail).splitlines()
    else:
        yield from deployment_log(name).splitlines()


def run_smoke(name: str) -> list[dict]:
    rec = need(name)
    plan = rec.need_plan()
    return smoke.run_smoke(rec.url, rec.served_model_name, plan.smoke, out_dir=state.run_dir(name),
                           search=smoke_search())


# ---------------------------------------------------------------- status

def _restarts(found: list) -> int:
    return sum(int((c.attrs or {}).get("RestartCount") or 0) for c in found)


def last_failure(rec: state.Record, found: list) -> str:
    """The triage line of a restarted deployment's log: the matched line, or 'unknown cause'."""
    from ..doctor.triage import triage_text
    from . import dockerapi

    res = triage_text(dockerapi.log_bytes(found[0].id, LOG_CAP_BYTES).decode("utf-8", "replace"))
    return f"{res.title}: {res.matched_lines[0]}" if res.known and res.matched_lines else "unknown cause"


def _record_row(rec: state.Record) -> dict[str, Any]:
    """What the record says, before Docker is asked (timings: the phases of the `up` that made it)."""
    return {"name": rec.name, "card": rec.card_name, "target": rec.target, "url": rec.url,
            "model": rec.served_model_name, "image": rec.image, "port": rec.port, "devices": rec.host_devices,
            "phase": rec.phase, "containers": [], "healthy": False, "restarts": 0, "timings": rec.timings}


def status_row(rec: state.Record) -> dict[str, Any]:
    row = _record_row(rec)
    found = containers(rec)
    row["containers"] = [{"id": c.short_id, "name": c.name, "status": c.status,
                          "restarts": int((c.attrs or {}).get("RestartCount") or 0)} for c in found]
    row["restarts"] = _restarts(found)
    if row["restarts"]:
        row["last_failure"] = last_failure(rec, found)
    if not found:
        row["state"] = "missing"
        row["problem"] = "container(s) not found: removed outside deploykit; `deploykit down` clears the record"
    elif any(c.status != "running" for c in found):
        row["state"] = "exited"
        row["problem"] = f"container not running; see `deploykit logs {rec.name}`"
    else:
        ok, why, _ = readiness.probe(rec.url, rec.served_model_name, timeout=2.0)
        row["state"], row["healthy"] = "running", ok
        if not ok:
            row["problem"] = why
    return row


def status() -> list[dict]:
    """Records reconciled with what Docker actually runs."""
    out = []
    for rec in state.all_records():
        try:
            out.append(status_row(rec))
        except RuntimeFailure as exc:  # Docker unreachable: say so per record, keep listing
            out.append({**_record_row(rec), "state": "unknown", "problem": str(exc)})
    return out


def metrics(previous: dict[str, dict] | None = None) -> dict[str, dict]:
    """{deployment: vLLM /metrics snapshot} for every deployment; with the snapshots of a moment
    earlier, rates and latency percentiles cover that window (deploy_kit.operate.metrics)."""
    from ..operate.metrics import snapshot
    from ..verify.auth import auth_headers

    previous = previous or {}
    return {rec.name: snapshot(rec.url, headers=auth_headers(), previous=previous.get(rec.name))
            for rec in state.all_records()}
