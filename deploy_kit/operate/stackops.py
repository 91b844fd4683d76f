"""`stack up` / `stack down` for the companions (front door, Prometheus, Grafana) of a stack.

Each deployment of a stack is started by the runtime's `up` as its own compose project; the
companions are one more compose project, ``deploykit-stack-<name>-<hash of the state dir>``, rendered into
``state_dir()/stacks/<name>/`` with host networking (see companions.py), started after the
deployments and health-checked before `stack up` says "up".

    preflight(stack) -> None                      # before any deployment starts: key, ports, images
    up(stack, plans, say, *, dry_run=False) -> dict[str, str]   # up_all + front door build, then start
    up_all(plans, target, say, *, dry_run=False)  # every deployment side by side, each proven
    start(stack, plans, say, *, image, dry_run=False, timeout=300.0) -> dict[str, str]   # {service: URL}
    stop(stack_name, say, *, dry_run=False) -> bool
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import Infeasible, RuntimeFailure
from . import frontdoor

Say = Callable[[str], None]


def stack_dir(stack_name: str) -> Path:
    from ..paths import state_dir

    return state_dir() / "stacks" / stack_name


def project(stack_name: str) -> str:
    from ..composefile import project_name
    from ..paths import state_dir

    return project_name(f"stack-{stack_name}", state_dir())


def up_all(plans: list, target: str | None, say: Say, *, dry_run: bool = False) -> None:
    """`up` every deployment of a stack side by side: N models load at once instead of one after
    another (each `up` still waits for its own readiness and smoke test; builds of a shared image
    are serialised by runtime.stage). Every deployment is waited for; each failure is said on its
    own line and the first one is raised, so the front door starts only over a complete stack."""
    from concurrent.futures import ThreadPoolExecutor

    from ..runtime.deploy import up

    if dry_run or len(plans) < 2:
        for p in plans:
            up(p.name, target, plan=p, dry_run=dry_run, say=say)
        return
    with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="stack-up") as pool:
        futures = [(p.name, pool.submit(up, p.name, target, plan=p, say=say)) for p in plans]
    failed = [(name, exc) for name, f in futures if (exc := f.exception()) is not None]
    for name, exc in failed:
        say(f"{name}: failed: {exc}")
    if failed:
        raise failed[0][1]


def up(stack: Any, plans: list, say: Say, *, dry_run: bool = False) -> dict[str, str]:
    """`stack up` after its preflight: every deployment (up_all) while the front door image builds,
    then the companions over the complete stack; their URLs. The build (about a minute from PyPI
    on a first run, mostly download and install) overlaps the vLLM starts (mostly single-threaded
    imports) instead of following them. A failed deployment still waits for a build in progress (a
    Docker build cannot be cancelled from here); its image is then cached for the next try."""
    from concurrent.futures import ThreadPoolExecutor

    target = stack.host.target
    door = "front-door" in enabled(stack)
    if dry_run or not door or stack.front_door.image:
        up_all(plans, target, say, dry_run=dry_run)
        return start(stack, plans, say, dry_run=dry_run, image=(stack.front_door.image or "") if door else "")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="front-door-image") as pool:
        build = pool.submit(frontdoor.ensure_image, stack_dir(stack.name) / "front-door-context", say)
        up_all(plans, target, say)
        image = build.result()
    return start(stack, plans, say, image=image)


def enabled(stack: Any) -> list[str]:
    out = []
    if stack.front_door is not None and stack.front_door.enabled:
        out.append("front-door")
    if stack.observability is not None and stack.observability.enabled:
        out += ["prometheus", "grafana"]
    return out


def _running(stack_name: str) -> bool:
    from ..runtime import dockerapi

    return any(c.status == "running" for c in dockerapi.project_containers(project(stack_name)))


def preflight(stack: Any) -> None:
    """Every reason the companions could not start, raised before any deployment is touched."""
    from ..runtime import dockerapi, state
    from ..stack.stackfile import companion_ports

    wanted = enabled(stack)
    if not wanted:
        return
    reasons = []
    if "front-door" in wanted:
        frontdoor.require_key()
    if not _running(stack.name):  # our own companions already hold their ports
        reasons += [f"port {p} (stack companions) is already in use on this host"
                    for p in companion_ports(stack) if not state.port_free(p)]
    obs = stack.observability
    if "prometheus" in wanted:
        for image in (obs.prometheus_image, obs.grafana_image):
            if dockerapi.image_exists(image) is None:
                reasons.append(f"image {image} is not on this host (no registry is assumed reachable)")
    if reasons:
        raise Infeasible(f"the companions of stack {stack.name} cannot start", reasons=reasons,
                         hint="free the ports / `docker load` the images, or disable them in the stack file "
                              "(front_door.enabled / observability.enabled: false, or --no-observability)")


def render(stack: Any, plans: list, out: Path, image: str) -> Path:
    from .companions import stack_companions

    out.mkdir(parents=True, exist_ok=True)
    services = stack_companions(plans, out, front_door=stack.front_door, observability=stack.observability,
                                host_network=True, front_door_image=image)
    f = out / "compose.yaml"
    f.write_text(yaml.safe_dump({"name": project(stack.name), "services": services}, sort_keys=False, width=200))
    return f


def urls(stack: Any) -> dict[str, str]:
    """Where each enabled companion answers, and the path that proves it is up."""
    out = {}
    if stack.front_door is not None and stack.front_door.enabled:
        out["front-door"] = f"http://127.0.0.1:{stack.front_door.port}"
    if stack.observability is not None and stack.observability.enabled:
        out["prometheus"] = f"http://127.0.0.1:{stack.observability.prometheus_port}"
        out["grafana"] = f"http://127.0.0.1:{stack.observability.grafana_port}"
    return out


HEALTH_PATHS = {"front-door": "/health/liveliness", "prometheus": "/-/ready", "grafana": "/api/health"}


def wait_healthy(services: dict[str, str], deadline_s: float, logs: Callable[[], str]) -> None:
    import httpx

    end = time.monotonic() + deadline_s
    for name, base in services.items():
        last = ""
        while True:
            try:
                r = httpx.get(base + HEALTH_PATHS[name], timeout=3)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > end:
                raise RuntimeFailure(f"{name} did not answer {HEALTH_PATHS[name]} within {deadline_s:.0f} s ({last})",
                                     hint="last log lines:\n" + logs())
            time.sleep(1)


def _dry_run_image() -> str:
    """The tag the front door image would get, computed in a throw-away context (writes nothing)."""
    import shutil
    import tempfile

    ctx = Path(tempfile.mkdtemp(prefix="deploykit-front-door-"))
    try:
        return frontdoor.ensure_image(ctx, lambda _: None, dry_run=True)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def start(stack: Any, plans: list, say: Say, *, image: str, dry_run: bool = False,
          timeout: float = 300.0) -> dict[str, str]:
    """Render and start the companions, the front door from `image` (up() names or builds it; in a
    dry run, empty means "the tag it would build"); wait until each answers."""
    from ..runtime import compose

    wanted = enabled(stack)
    if not wanted:
        return {}
    out = stack_dir(stack.name)
    if dry_run:
        if "front-door" in wanted:
            image = image or _dry_run_image()
        say(f"would start {', '.join(wanted)} (compose project {project(stack.name)}, host network"
            + (f", image {image}" if image else "") + ")")
        return urls(stack)
    f = render(stack, plans, out, image)
    compose.run_compose(project(stack.name), f, "up", "-d", "--remove-orphans", timeout=timeout)

    def tail() -> str:
        res = compose.run_compose(project(stack.name), f, "logs", "--tail", "20", "--no-color", check=False)
        return (res.stdout or "")[-3000:]

    wait_healthy(urls(stack), timeout, tail)
    return urls(stack)


def stop(stack_name: str, say: Say, *, dry_run: bool = False) -> bool:
    """compose down of the companions project, when it was rendered; True if there was one."""
    from ..runtime import compose

    f = stack_dir(stack_name) / "compose.yaml"
    if not f.is_file():
        return False
    if dry_run:
        say(f"would stop the companions of {stack_name} (compose project {project(stack_name)})")
        return True
    compose.run_compose(project(stack_name), f, "down", "--remove-orphans", "-t", "10")
    f.unlink()
    return True
