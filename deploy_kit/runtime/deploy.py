"""`up`, `down`, `status`, `logs`, `smoke`: plain functions over the Plan and the state records.

up = plan -> weights -> render -> image (content-addressed; unchanged => no build) -> compose up
-> readiness (log-driven progress) -> smoke -> record. The CLI (deploy_kit/commands/runtime.py)
only parses and prints.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, DeployKitError, Infeasible, RuntimeFailure
from ..paths import cache_dir, state_dir
from . import compose, context, readiness, smoke, state

Say = Callable[[str], None]


def _g(obj: Any, key: str, default: Any = None) -> Any:
    """Field of a pydantic Plan or of its JSON dict."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def plan_dict(plan: Any) -> dict:
    return plan.model_dump(mode="json") if hasattr(plan, "model_dump") else dict(plan)


@dataclass
class UpResult:
    name: str
    url: str
    model: str
    image: str
    built: bool
    noop: bool
    timings: dict[str, float] = field(default_factory=dict)
    smoke: list[dict] = field(default_factory=list)
    record: state.Record | None = None


# ---------------------------------------------------------------- planning / rendering (adapters)

def make_plan(name: str, target: str = "cpu", *, tp: int | None = None, devices: list[str] | None = None,
              port: int | None = None, sets: list[str] | None = None) -> Any:
    """Call the planner with the CLI overrides and what the state ledger already holds.

    Ports/devices of OTHER deployments are passed as busy; the host-port probe ignores the port
    of this deployment's own running version (an unchanged `up` must stay a no-op)."""
    try:
        from ..planner import plan as _plan
    except ImportError as exc:
        raise RuntimeFailure("the planner (deploy_kit.planner) is not available") from exc
    import inspect

    own = state.load(name)
    busy_ports: dict[int, str] = {}
    busy_devices: dict[int, str] = {}
    for rec in state.all_records():
        if rec.name == name:
            continue
        if rec.port is not None:
            busy_ports[int(rec.port)] = f"deployment {rec.name!r}"
        if rec.target == target:
            for d in rec.host_devices:
                if str(d).isdigit():
                    busy_devices[int(d)] = f"deployment {rec.name!r}"

    def probe(p: int) -> bool:
        if own is not None and own.port == p:
            return False
        return not state.port_free(p)

    params = inspect.signature(_plan).parameters
    kw: dict[str, Any] = {"target": target}
    overrides = list(sets or [])
    if tp is not None:
        if "tp" in params:
            kw["tp"] = tp
        else:
            overrides.append(f"serve.tensor_parallel_size={tp}")
    for key, val in (("devices", ",".join(devices) if devices else None), ("port", port),
                     ("sets", overrides or None), ("busy_ports", busy_ports), ("busy_devices", busy_devices),
                     ("port_probe", probe)):
        if key in params and val is not None:
            kw[key] = val
    if overrides and "sets" not in params:
        raise BadInput("this planner takes no --set overrides")
    return _plan(name, **kw)


def render_plan(plan: Any, out_dir: Path) -> Path:
    from ..render import render

    if out_dir.exists():
        shutil.rmtree(out_dir)  # no stale files from an earlier render
    out_dir.mkdir(parents=True, exist_ok=True)
    render(plan, out_dir)
    return out_dir


def ensure_weights(plan: Any, say: Say) -> Path | None:
    """Make the weights the plan mounts exist on the host (gguf demo conversion or `pull`)."""
    w = _g(plan, "weights") or {}
    host = _g(w, "host_path")
    source = _g(w, "source")
    dest = Path(host) if host else cache_dir() / _g(plan, "card_name")
    if source == "gguf":
        from ..weights.gguf_convert import convert_gguf_package, is_valid_checkpoint

        pkg, fname = gguf_source(plan)
        if not is_valid_checkpoint(dest, pkg, fname):
            say(f"converting {pkg}:{fname} -> {dest}")
        return convert_gguf_package(pkg, fname, dest)
    if source == "local":
        if not dest.exists():
            raise BadInput(f"local weights not found: {dest}", field="model.path")
        return dest
    if dest.exists() and any(dest.iterdir()):
        return dest
    hint = f"run `deploykit pull {_g(plan, 'card_name')}`"
    try:
        from ..cardload import load_card
        from ..weights.pull import pull as _pull
        from ..weights.spec import spec_from_card
    except ImportError as exc:
        raise RuntimeFailure(f"weights missing at {dest}", hint=hint) from exc
    say(f"pulling weights for {_g(plan, 'card_name')}")
    card = load_card(_g(plan, "card_path") or _g(plan, "card_name"))
    _pull(spec_from_card(card), cache=dest.parent)
    if not (dest.exists() and any(dest.iterdir())):
        raise RuntimeFailure(f"weights missing at {dest} after pull", hint=hint)
    return dest


def gguf_source(plan: Any) -> tuple[str, str]:
    """(package, file) of a gguf-sourced card: from plan.weights.id 'package/file' or the card."""
    w = _g(plan, "weights") or {}
    wid = _g(w, "id") or ""
    if wid.endswith(".gguf") and ("/" in wid or ":" in wid):
        sep = ":" if ":" in wid else "/"
        pkg, fname = wid.split(sep, 1)
        return pkg, fname
    try:
        from ..cardload import load_card

        card = load_card(_g(plan, "card_name"))
        card = getattr(card, "card", card)  # cardload.LoadedCard -> cards.Card
        g = card.model.gguf
        return _g(g, "package"), _g(g, "file")
    except (ImportError, AttributeError) as exc:
        raise BadInput("cannot tell the gguf package/file of this card", field="model.gguf") from exc


# ---------------------------------------------------------------- image

def ensure_image(plan: Any, rendered: Path, say: Say, dry_run: bool = False,
                 ctx_dir: Path | None = None) -> tuple[str, str, str, bool]:
    """(content tag, image id, context hash, built?) — builds only when the context changed."""
    from . import dockerapi

    ctx = context.prepare_context(rendered, ctx_dir)
    digest = context.context_hash(ctx)
    plan_image = _g(plan, "image") or f"deploykit/vllm-{_g(plan, 'target')}:latest"
    ref = context.content_tag(context.image_repo(plan_image), digest)
    if dry_run:
        return ref, "", digest, False
    image_id = dockerapi.image_exists(ref)
    built = False
    if image_id is None:
        say(f"building image {ref} (context {digest[:12]})")
        t0 = time.monotonic()
        image_id = dockerapi.build(ctx, ref, context.build_args(), on_line=lambda ln: say("  " + ln, ) if ln.startswith("Step") else None)
        built = True
        say(f"built {ref} in {time.monotonic() - t0:.0f} s")
    if plan_image != ref:
        dockerapi.tag(image_id, plan_image)  # compose.yaml refers to plan.image
    return ref, image_id, digest, built


def pin_compose_image(rendered: Path, plan_image: str, ref: str) -> None:
    """Point the compose service(s) running plan.image at the content-addressed tag just built.

    The renderer cannot know the build-context hash; pinning the exact tag means a later build
    for another deployment can never change what this one runs."""
    import yaml

    f = _compose_file(rendered)
    doc = yaml.safe_load(f.read_text()) or {}
    repo = context.image_repo(plan_image) if plan_image else None
    changed = False
    for svc in (doc.get("services") or {}).values():
        img = svc.get("image") if isinstance(svc, dict) else None
        if img and (repo is None or context.image_repo(img) == repo) and img != ref:
            svc["image"] = ref
            changed = True
    if changed:
        f.write_text(yaml.safe_dump(doc, sort_keys=False))


def rendered_hash(rendered: Path, image_id: str) -> str:
    """What defines a running deployment: rendered runtime files + the image they run."""
    h = hashlib.sha256(image_id.encode())
    for name in sorted(p.name for p in rendered.iterdir() if p.is_file() and p.name != "README.md"):
        h.update(name.encode() + b"\0" + (rendered / name).read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- helpers on records

def _compose_file(rendered: Path) -> Path:
    for n in ("compose.yaml", "compose.yml", "docker-compose.yml"):
        if (rendered / n).is_file():
            return rendered / n
    raise RuntimeFailure(f"no compose file in {rendered}")


def _containers(rec: state.Record) -> list:
    from . import dockerapi

    found = dockerapi.project_containers(rec.project) if rec.project else []
    if found:
        return found
    return [c for c in (dockerapi.container(cid) for cid in rec.container_ids) if c is not None]


def _dead_reason(cid: str) -> Callable[[], str | None]:
    from . import dockerapi

    def check() -> str | None:
        st = dockerapi.container_state(cid)
        if st is None:
            return "container was removed"
        if st.get("Status") in ("exited", "dead"):
            oom = " OOMKilled" if st.get("OOMKilled") else ""
            return f"exit code {st.get('ExitCode')}{oom}"
        if st.get("Restarting"):  # a restart policy hides the exit; a crash loop is a failure too
            return f"restarting after exit code {st.get('ExitCode')}"
        return None
    return check


def _served_name(plan: Any) -> str:
    if _g(plan, "served_model_name"):
        return _g(plan, "served_model_name")
    argv = list(_g(plan, "argv") or [])
    if "--served-model-name" in argv:
        i = argv.index("--served-model-name")
        if i + 1 < len(argv):
            return argv[i + 1]
    for a in argv:
        if a.startswith("--served-model-name="):
            return a.split("=", 1)[1]
    return _g(plan, "card_name") or _g(plan, "name")


def _smoke_search(plan: Any) -> list[Path]:
    from ..paths import data_dir

    return [Path.cwd(), data_dir("models")]


def teardown(rec: state.Record, remove_volumes: bool = False) -> None:
    from . import dockerapi

    rendered = Path(rec.render_dir) if rec.render_dir else None
    if rendered and rendered.exists():
        try:
            compose.run_compose(rec.project, _compose_file(rendered), "down", "--remove-orphans",
                                "-t", "10", check=True)
        except RuntimeFailure:
            pass
    for c in _containers(rec):  # removed by hand or compose file gone: remove what is left
        dockerapi.remove(c.id)


# ---------------------------------------------------------------- up

def up(name: str, target: str = "cpu", *, tp: int | None = None, devices: list[str] | None = None,
       port: int | None = None, sets: list[str] | None = None, dry_run: bool = False,
       timeout: float | None = None, say: Say = print,
       on_event: Callable[[str, str], None] | None = None, plan: Any = None) -> UpResult:
    t_start = time.monotonic()
    timings: dict[str, float] = {}

    def lap(key: str, t0: float) -> None:
        timings[key] = round(time.monotonic() - t0, 2)

    t0 = time.monotonic()
    plan = plan if plan is not None else make_plan(name, target, tp=tp, devices=devices, port=port, sets=sets)
    if port is not None and _g(plan, "port") != port:  # planner without a port parameter
        plan = plan.model_copy(update={"port": port}) if hasattr(plan, "model_copy") else {**plan, "port": port}
    lap("plan", t0)
    dep = _g(plan, "name") or name
    port_ = int(port or _g(plan, "port") or 8000)
    host_devices = [str(d) for d in (_g(plan, "host_devices") or [])]
    model = _served_name(plan)
    rendered = state.run_dir(dep) / "rendered"
    project = compose.project_name(dep, str(state_dir()))

    if dry_run:
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="deploykit-dry-"))
        try:
            render_plan(plan, tmp)
            ref, _, digest, _ = ensure_image(plan, tmp, say, dry_run=True)
            w = _g(plan, "weights") or {}
            say(f"would deploy {dep} (card {_g(plan, 'card_name')}, target {_g(plan, 'target')})")
            say(f"  weights: {_g(w, 'source')} {_g(w, 'id')} -> {_g(w, 'host_path')}")
            say(f"  image:   {ref} (build context {digest[:12]}; built only if missing)")
            try:
                ccmd = " ".join(compose.compose_cmd())
            except RuntimeFailure:
                ccmd = "docker compose (not found: pip install 'deploykit[docker]')"
            say(f"  run:     {ccmd} -p {project} -f {rendered}/compose.yaml up -d")
            say(f"  argv:    {' '.join(map(str, _g(plan, 'argv') or []))}")
            say(f"  port:    {_g(plan, 'bind_host') or '127.0.0.1'}:{port_}  devices: {host_devices or '-'}")
            say(f"  ready:   /health + /v1/models lists {model!r} within "
                f"{timeout or readiness.deadline_for(None, _g(plan, 'readiness_timeout_s')):.0f} s")
            say(f"  smoke:   {len(smoke.prompts_of(_g(plan, 'smoke')))} prompt(s)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return UpResult(dep, f"http://127.0.0.1:{port_}", model, ref, False, True, timings)

    # Preflight before pulling gigabytes: driver/NPUs/device nodes/free HBM on Ascend, Docker,
    # Compose, disk for the weights, CPU features. A blocking failure is exit 3 with every reason.
    t0 = time.monotonic()
    from ..doctor.runner import raise_if_blocked, run_doctor

    raise_if_blocked(run_doctor(plan=plan, hubs=False))
    lap("preflight", t0)
    t0 = time.monotonic()
    ensure_weights(plan, say)
    lap("weights", t0)
    # Render into a staging dir: a no-op or refused `up` must not touch the files of what runs.
    staged = rendered.with_name("rendered.next")
    t0 = time.monotonic()
    render_plan(plan, staged)
    lap("render", t0)
    t0 = time.monotonic()
    ref, image_id, digest, built = ensure_image(plan, staged, say,
                                                ctx_dir=state.run_dir(dep) / "build-context")
    lap("image", t0)
    pin_compose_image(staged, _g(plan, "image") or "", ref)
    phash = rendered_hash(staged, image_id)

    rec = state.Record(name=dep, card_name=_g(plan, "card_name") or name, target=_g(plan, "target") or target,
                       image=ref, image_id=image_id, context_hash=digest, plan_hash=phash,
                       render_dir=str(rendered), project=project, host_devices=host_devices,
                       port=port_, bind_host=_g(plan, "bind_host") or "127.0.0.1",
                       served_model_name=model, plan=plan_dict(plan))
    old = state.load(dep)
    if old is not None:
        alive = [c for c in _containers(old) if c.status == "running"]
        if old.plan_hash == phash and old.phase == "ready" and alive:
            ok, why, _ = readiness.probe(old.url, old.served_model_name)
            if ok:
                shutil.rmtree(staged, ignore_errors=True)
                say(f"{dep} is already up and unchanged at {old.url} (nothing to do)")
                return UpResult(dep, old.url, old.served_model_name, old.image, built, True,
                                timings, record=old)
    # Check the ledger and the host port BEFORE touching a running old version: a refused
    # `up` must leave what runs alone.
    with state.locked():
        reasons = state.conflicts(dep, host_devices, port_, rec.target)
        own_port = old is not None and old.port == port_
        if not reasons and not own_port and not state.port_free(port_, rec.bind_host):
            reasons.append(f"port {port_} is already in use on this host")
        if reasons:
            shutil.rmtree(staged, ignore_errors=True)
            raise Infeasible(f"cannot start {dep!r}", reasons=reasons,
                             hint="choose another --port/--devices or `deploykit down` the holder")
    if old is not None:
        say(f"{dep}: {'configuration changed' if old.plan_hash != phash else 'not healthy'}; recreating")
        teardown(old)
    shutil.rmtree(rendered, ignore_errors=True)
    staged.rename(rendered)
    with state.locked():
        reasons = state.conflicts(dep, host_devices, port_, rec.target)
        if reasons:  # someone claimed them while we tore down
            raise Infeasible(f"cannot start {dep!r}", reasons=reasons)
        state.save(rec)  # claim while locked: a concurrent `up` now sees these devices/port

    t_run = time.monotonic()
    try:
        compose.run_compose(project, _compose_file(rendered), "up", "-d", "--no-build",
                            "--force-recreate", "--remove-orphans")
        conts = _containers(rec)
        if not conts:
            raise RuntimeFailure("compose started no container")
        rec.container_ids = [c.id for c in conts]
        state.save(rec)
        cid = conts[0].id
        from . import dockerapi

        deadline = timeout or readiness.deadline_for(_g(_g(plan, "memory") or {}, "weights_gib"),
                                                     _g(plan, "readiness_timeout_s"))
        res = readiness.wait_ready(rec.url, model, deadline, _dead_reason(cid),
                                   log_stream=dockerapi.follow_logs(cid), on_event=on_event)
        timings["ready"] = res.seconds
        timings["phases"] = res.phases  # type: ignore[assignment]
        t0 = time.monotonic()
        results = smoke.run_smoke(rec.url, model, _g(plan, "smoke"), out_dir=state.run_dir(dep),
                                  search=_smoke_search(plan))
        lap("smoke", t0)
    except RuntimeFailure as exc:
        _fail(rec, exc)
        raise
    except DeployKitError as exc:  # smoke failed (exit 5): keep it running for inspection
        rec.phase = "smoke-failed"
        state.save(rec)
        raise exc
    timings["up_to_proven"] = round(time.monotonic() - t_run, 2)
    timings["total"] = round(time.monotonic() - t_start, 2)
    rec.phase, rec.ready_at, rec.timings = "ready", time.time(), timings
    state.save(rec)
    return UpResult(dep, rec.url, model, ref, built, False, timings, results, rec)


def _fail(rec: state.Record, exc: RuntimeFailure) -> None:
    """Keep the evidence (log), then free the port/devices: a failed deployment holds nothing."""
    from . import dockerapi

    logs = ""
    for cid in rec.container_ids:
        logs += dockerapi.logs(cid)
    d = state.run_dir(rec.name)
    (d / "failure.log").write_text(logs or getattr(exc, "log_tail", "") or "")
    (d / "failure.json").write_text(json.dumps({"error": exc.one_line(),
                                                "cause": getattr(exc, "cause", None)}, indent=2))
    teardown(rec)
    with state.locked():
        state.delete(rec.name)


# ---------------------------------------------------------------- down / status / logs / smoke

def _need(name: str) -> state.Record:
    rec = state.load(name)
    if rec is None:
        known = ", ".join(r.name for r in state.all_records()) or "none"
        raise BadInput(f"no deployment named {name!r}", hint=f"deployments: {known}")
    return rec


def down(name: str) -> state.Record:
    rec = _need(name)
    teardown(rec)
    with state.locked():
        state.delete(name)
    return rec


def status() -> list[dict]:
    """Records reconciled with what Docker actually runs."""
    out = []
    docker_ok = True
    for rec in state.all_records():
        row = {"name": rec.name, "card": rec.card_name, "target": rec.target, "url": rec.url,
               "model": rec.served_model_name, "image": rec.image, "port": rec.port,
               "devices": rec.host_devices, "phase": rec.phase, "containers": [], "healthy": False}
        try:
            conts = _containers(rec) if docker_ok else []
        except RuntimeFailure as exc:
            docker_ok = False
            row["state"], row["problem"] = "unknown", str(exc)
            out.append(row)
            continue
        row["containers"] = [{"id": c.short_id, "name": c.name, "status": c.status} for c in conts]
        if not conts:
            row["state"] = "missing"
            row["problem"] = "container(s) not found: removed outside deploykit; `deploykit down` clears the record"
        elif any(c.status != "running" for c in conts):
            row["state"] = "exited"
            row["problem"] = "container not running; see `deploykit logs " + rec.name + "`"
        else:
            ok, why, _ = readiness.probe(rec.url, rec.served_model_name, timeout=2.0)
            row["state"], row["healthy"] = ("running", ok)
            if not ok:
                row["problem"] = why
        out.append(row)
    return out


def logs(name: str, follow: bool = False, tail: int | str = "all"):
    """Yield log lines (live container, else the log saved when it failed)."""
    from . import dockerapi

    rec = state.load(name)
    if rec is not None:
        conts = _containers(rec)
        if conts:
            if follow:
                yield from dockerapi.follow_logs(conts[0].id)
            else:
                yield from dockerapi.logs(conts[0].id, tail=tail).splitlines()
            return
    saved = state.run_dir(name) / "failure.log"
    if saved.is_file():
        yield from saved.read_text().splitlines()
        return
    raise BadInput(f"no running container or saved log for {name!r}")


def run_smoke(name: str) -> list[dict]:
    rec = _need(name)
    return smoke.run_smoke(rec.url, rec.served_model_name, rec.plan.get("smoke"),
                           out_dir=state.run_dir(name), search=_smoke_search(rec.plan))
