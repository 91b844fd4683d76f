"""`up` as named phases: preflight -> stage -> unchanged? -> claim -> start -> prove -> record.

Each phase is a plain function over the typed Plan. A refused `up` (preflight, claim) leaves what
runs alone; a failed start keeps its evidence (the container's log) and holds nothing.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BadInput, DeployKitError, Infeasible, RuntimeFailure
from ..planner import Plan
from . import compose, readiness, smoke, state
from .ops import containers, dead_reason, save_failure, smoke_search, teardown
from .stage import Say, Staged, ensure_weights, stage

OnEvent = Callable[[str, str], None]


@dataclass
class UpResult:
    name: str
    url: str
    model: str
    image: str
    built: bool
    noop: bool
    timings: dict[str, Any] = field(default_factory=dict)
    smoke: list[dict] = field(default_factory=list)
    record: state.Record | None = None


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.timings: dict[str, Any] = {}

    def lap(self, key: str, t0: float) -> float:
        self.timings[key] = round(time.monotonic() - t0, 2)
        return time.monotonic()


class _Background:
    """One call on a daemon thread: `up` fetches the weights while the image builds (a multi-GB
    download and a minutes-long build overlap instead of adding up). Daemon, so a failure of the
    foreground work exits at once; an interrupted pull resumes next time (weights.lock, .partial)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn, self.seconds = fn, 0.0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="deploykit-weights", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self._fn()
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc
        self.seconds = round(time.monotonic() - t0, 2)

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


# ---------------------------------------------------------------- preflight

def make_plan(name: str, target: str | None = None, *, tp: int | None = None, devices: list[int] | None = None,
              port: int | None = None, sets: list[str] | None = None, force_devices: bool = False,
              release: str | None = None, strict: bool = False) -> Plan:
    """The planner, given what the ledger holds for OTHER deployments.

    The host-port probe ignores this deployment's own running port (an unchanged `up` stays a no-op)."""
    from ..planner import plan as plan_card
    from ..stack import ledger
    from ..targets import DEFAULT_TARGET

    if force_devices and not devices:
        raise BadInput("--force-devices needs the devices named with --devices", field="--force-devices")
    own = state.load(name)
    mine = frozenset({name})

    def port_busy(p: int) -> bool:
        return not (own is not None and own.port == p) and not state.port_free(p)

    return plan_card(name, target=target or DEFAULT_TARGET, tp=tp, devices=devices, port=port,
                     sets=list(sets or []), busy_ports=ledger.busy_ports(exclude=mine),
                     busy_devices=ledger.busy_devices(target or DEFAULT_TARGET, force=force_devices, exclude=mine),
                     port_probe=port_busy, release=release, strict=strict, force_devices=force_devices)


def host_reasons(target: str | None, plan: Plan | None, force_devices: bool = False) -> list[str]:
    """Blocking preflight failures (driver/NPUs/device nodes/free HBM, Docker, Compose, disk, CPU)."""
    from ..doctor.runner import blocking_reasons, run_doctor

    return blocking_reasons(run_doctor(target=target, plan=plan, hubs=False, force_devices=force_devices))


def preflight(name: str, target: str | None, force_devices: bool = False, warn: Say | None = None,
              **choices: Any) -> Plan:
    """Plan and check the host; every reason at once, the host's first (exit 3). The plan's
    warnings (e.g. upstream: not supported) are said first, before any refusal."""
    from ..targets import DEFAULT_TARGET

    target = target or DEFAULT_TARGET
    plan: Plan | None = None
    refused: list[str] = []
    try:
        plan = make_plan(name, target, force_devices=force_devices, **choices)
        if warn is not None:
            for w in plan.warnings:
                warn(f"warning: {w}")
    except Infeasible as exc:
        refused = exc.reasons or [exc.message]
    host = host_reasons(target, plan, force_devices)
    if host or refused:
        raise Infeasible(f"preflight failed for {name}", reasons=host + refused,
                         hint="details: deploykit doctor " + name + " --json")
    assert plan is not None
    return plan


# ---------------------------------------------------------------- unchanged? / claim / start

def unchanged(plan: Plan, staged: Staged, say: Say) -> state.Record | None:
    """The running record when it runs exactly what ``staged`` holds and answers; else None."""
    old = state.load(plan.name)
    if old is None or old.plan_hash != staged.plan_hash or old.phase != "ready":
        return None
    if not any(c.status == "running" for c in containers(old)):
        return None
    ok, _, _ = readiness.probe(old.url, old.served_model_name)
    if ok:
        say(f"{plan.name} is already up and unchanged at {old.url} (nothing to do)")
        return old
    return None


def _refuse_if_taken(rec: state.Record, old: state.Record | None) -> None:
    from ..stack.ledger import conflicts

    reasons = conflicts(rec.name, rec.host_devices, rec.port, rec.target)
    own_port = old is not None and old.port == rec.port
    if not reasons and not own_port and rec.port is not None and not state.port_free(rec.port, rec.bind_host):
        reasons.append(f"port {rec.port} is already in use on this host")
    if reasons:
        raise Infeasible(f"cannot start {rec.name!r}", reasons=reasons,
                         hint="choose another --port/--devices or `deploykit down` the holder")


def new_record(plan: Plan, staged: Staged) -> state.Record:
    from ..composefile import project_name
    from ..paths import state_dir

    return state.Record(name=plan.name, card_name=plan.card_name, target=plan.target, image=staged.image,
                        image_id=staged.image_id, context_hash=staged.context_hash, plan_hash=staged.plan_hash,
                        render_dir=str(state.run_dir(plan.name) / "rendered"),
                        project=project_name(plan.name, state_dir()),
                        host_devices=[str(d) for d in plan.host_devices], port=plan.port,
                        bind_host=plan.bind_host, served_model_name=plan.served_model_name, plan=plan)


def claim(plan: Plan, staged: Staged, say: Say) -> state.Record:
    """Take the devices and port (checked before a running old version is touched), then swap in
    the staged files."""
    rec = new_record(plan, staged)
    old = state.load(plan.name)
    with state.locked():
        try:
            _refuse_if_taken(rec, old)
        except Infeasible:
            shutil.rmtree(staged.rendered, ignore_errors=True)
            raise
    if old is not None:
        why = "configuration changed" if old.plan_hash != staged.plan_hash else "not healthy"
        say(f"{plan.name}: {why}; recreating")
        teardown(old)
    rendered = state.run_dir(plan.name) / "rendered"
    shutil.rmtree(rendered, ignore_errors=True)
    staged.rendered.rename(rendered)
    staged.rendered = rendered
    with state.locked():
        _refuse_if_taken(rec, None)  # someone may have claimed them while we tore down
        state.save(rec)  # claimed while locked: a concurrent `up` now sees these devices/port
    return rec


def start(rec: state.Record, staged: Staged) -> str:
    """`compose up` of the staged files; the id of the (first) container."""
    compose.run_compose(rec.project, staged.compose_file, "up", "-d", "--no-build", "--force-recreate",
                        "--remove-orphans")
    found = containers(rec)
    if not found:
        raise RuntimeFailure("compose started no container")
    rec.container_ids = [c.id for c in found]
    state.save(rec)
    return found[0].id


# ---------------------------------------------------------------- prove / record

def prove(rec: state.Record, plan: Plan, cid: str, clock: _Clock, timeout: float | None = None,
          on_event: OnEvent | None = None) -> list[dict]:
    """Readiness (log-driven progress) then the card's smoke test."""
    from . import dockerapi

    deadline = timeout or readiness.deadline_for(plan.memory.weights_gib, plan.readiness_timeout_s)
    res = readiness.wait_ready(rec.url, rec.served_model_name, deadline, dead_reason(cid),
                               log_stream=dockerapi.follow_logs(cid), on_event=on_event)
    clock.timings["ready"], clock.timings["phases"] = res.seconds, res.phases
    t0 = time.monotonic()
    results = smoke.run_smoke(rec.url, rec.served_model_name, plan.smoke, out_dir=state.run_dir(rec.name),
                              search=smoke_search())
    clock.lap("smoke", t0)
    return results


def record(rec: state.Record, clock: _Clock, t_run: float) -> state.Record:
    clock.timings["up_to_proven"] = round(time.monotonic() - t_run, 2)
    clock.timings["total"] = round(time.monotonic() - clock.start, 2)
    rec.phase, rec.ready_at, rec.timings = "ready", time.time(), clock.timings
    state.save(rec)
    return rec


def run_and_prove(rec: state.Record, plan: Plan, staged: Staged, clock: _Clock, timeout: float | None,
                  on_event: OnEvent | None) -> list[dict]:
    """start + prove; a failed start keeps its evidence and frees what it held."""
    try:
        cid = start(rec, staged)
        return prove(rec, plan, cid, clock, timeout, on_event)
    except RuntimeFailure as exc:
        save_failure(rec, exc)
        raise
    except DeployKitError:  # smoke failed (exit 5): keep it running for inspection
        rec.phase = "smoke-failed"
        state.save(rec)
        raise


# ---------------------------------------------------------------- up

def describe(plan: Plan, say: Say, timeout: float | None = None) -> UpResult:
    """Dry run: what `up` would do, changing nothing."""
    from ..composefile import project_name
    from ..paths import state_dir

    staged = stage(plan, say, dry_run=True)
    shutil.rmtree(staged.rendered, ignore_errors=True)
    w = plan.weights
    rendered = state.run_dir(plan.name) / "rendered"
    say(f"would deploy {plan.name} (card {plan.card_name}, target {plan.target})")
    say(f"  weights: {w.source} {w.id} -> {w.host_path}")
    say(f"  image:   {staged.image} (build context {staged.context_hash[:12]}; built only if missing)")
    say(f"  run:     {compose.describe_cmd()} -p {project_name(plan.name, state_dir())} "
        f"-f {rendered}/compose.yaml up -d")
    say(f"  argv:    {' '.join(plan.argv)}")
    say(f"  port:    {plan.bind_host}:{plan.port}  devices: {[str(d) for d in plan.host_devices] or '-'}")
    say(f"  ready:   /health + /v1/models lists {plan.served_model_name!r} within "
        f"{timeout or readiness.deadline_for(None, plan.readiness_timeout_s):.0f} s")
    say(f"  smoke:   {len(smoke.prompts_of(plan.smoke))} prompt(s)")
    return UpResult(plan.name, f"http://127.0.0.1:{plan.port}", plan.served_model_name, staged.image,
                    False, True)


def _stage_with_weights(plan: Plan, say: Say, clock: _Clock) -> Staged:
    """Weights (background) and render + image (foreground) at once; a weights failure is raised
    after the build, a build failure at once. Timings: each part's own seconds, and both together."""
    t0 = time.monotonic()
    weights = _Background(lambda: ensure_weights(plan, say))
    staged = stage(plan, say)
    clock.timings["stage"] = round(time.monotonic() - t0, 2)
    weights.result()
    clock.timings["weights"] = weights.seconds
    clock.timings["weights_and_stage"] = round(time.monotonic() - t0, 2)
    return staged


def up(name: str, target: str | None = None, *, tp: int | None = None, devices: list[int] | None = None,
       port: int | None = None, sets: list[str] | None = None, force_devices: bool = False,
       release: str | None = None, strict: bool = False, dry_run: bool = False, timeout: float | None = None,
       say: Say = print, on_event: OnEvent | None = None, plan: Plan | None = None) -> UpResult:
    """Deploy a card (or a ready Plan, as `stack up` does) and prove it."""
    clock = _Clock()
    t0 = time.monotonic()
    choices: dict[str, Any] = {"tp": tp, "devices": devices, "port": port, "sets": sets, "release": release,
                               "strict": strict}
    if dry_run:
        return describe(plan or make_plan(name, target, force_devices=force_devices, **choices), say, timeout)
    if plan is None:
        plan = preflight(name, target, force_devices, warn=say, **choices)
    else:
        reasons = host_reasons(plan.target, plan, force_devices)
        if reasons:
            raise Infeasible(f"preflight failed for {plan.name}", reasons=reasons)
    t0 = clock.lap("preflight", t0)
    staged = _stage_with_weights(plan, say, clock)
    old = unchanged(plan, staged, say)
    if old is not None:
        shutil.rmtree(staged.rendered, ignore_errors=True)
        return UpResult(plan.name, old.url, old.served_model_name, old.image, staged.built, True,
                        clock.timings, record=old)
    rec = claim(plan, staged, say)
    t_run = time.monotonic()
    results = run_and_prove(rec, plan, staged, clock, timeout, on_event)
    rec = record(rec, clock, t_run)
    return UpResult(plan.name, rec.url, rec.served_model_name, staged.image, staged.built, False,
                    clock.timings, results, rec)
