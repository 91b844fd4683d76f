"""Docker engine access through the Docker SDK (imported lazily: `deploykit --help` stays fast)."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..errors import RuntimeFailure

PROJECT_LABEL = "com.docker.compose.project"


@lru_cache(maxsize=1)
def client():
    try:
        import docker
    except ImportError as exc:
        raise RuntimeFailure("the Docker SDK is not installed",
                             hint="pip install 'deploykit[docker]'") from exc
    try:
        c = docker.from_env(timeout=300)
        c.ping()
    except Exception as exc:  # docker.errors.DockerException, requests errors
        raise RuntimeFailure(f"cannot reach the Docker engine: {exc}",
                             hint="start it (scripts/setup-docker.sh) or set DOCKER_HOST") from exc
    return c


def image_exists(ref: str) -> str | None:
    """Image id for ``ref`` or None."""
    import docker

    try:
        return client().images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def tag(image_id: str, ref: str) -> None:
    """Tag ``image_id`` as ``ref`` ('repo' alone means 'repo:latest'; a registry port is no tag)."""
    last = ref.rsplit("/", 1)[-1]
    repo, t = (ref.rsplit(":", 1) if ":" in last else (ref, "latest"))
    client().images.get(image_id).tag(repo, t)


BUILDER_LABEL = "org.deploykit.stage=builder"  # set on the builder stage by images/*.Dockerfile.j2


def build(ctx: Path, ref: str, buildargs: dict[str, str],
          on_line: Callable[[str], None] | None = None) -> str:
    """Build ``ctx`` (classic builder: works on engines without BuildKit) and tag it ``ref``."""
    api = client().api
    image_id = None
    tail: list[str] = []
    for chunk in api.build(path=str(ctx), tag=ref, buildargs=buildargs, rm=True,
                           forcerm=True, decode=True, nocache=False):
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                if line.strip():
                    tail = (tail + [line])[-30:]
                    if on_line:
                        on_line(line)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            raise RuntimeFailure(f"image build failed: {chunk['error'].strip()}",
                                 hint="last build lines:\n" + "\n".join(tail))
    prune_build_stages()
    return image_id or client().images.get(ref).id


def prune_build_stages() -> None:
    """Remove the dangling builder-stage images of deploykit's own multi-stage builds (the classic
    builder keeps each as a multi-GB `<none>` image). Only images carrying deploykit's builder label
    are touched; a failure here never fails the build."""
    import docker

    try:
        client().images.prune(filters={"dangling": True, "label": BUILDER_LABEL})
    except docker.errors.DockerException:
        pass


def project_containers(project: str, all_: bool = True) -> list:
    return client().containers.list(all=all_, filters={"label": f"{PROJECT_LABEL}={project}"})


def container(cid: str):
    import docker

    try:
        return client().containers.get(cid)
    except docker.errors.NotFound:
        return None


def container_state(cid: str) -> dict | None:
    """{'Status': 'running'|'exited'|..., 'ExitCode': int, 'OOMKilled': bool, 'RestartCount': int}
    or None if gone."""
    c = container(cid)
    if c is None:
        return None
    c.reload()
    return {**c.attrs.get("State", {}), "RestartCount": int(c.attrs.get("RestartCount") or 0)}


def logs(cid: str, tail: int | str = "all", since: float | None = None) -> str:
    c = container(cid)
    if c is None:
        return ""
    kw = {"tail": tail, "stdout": True, "stderr": True}
    if since is not None:
        kw["since"] = int(since)
    return c.logs(**kw).decode("utf-8", "replace")


def log_bytes(cid: str, cap: int) -> bytes:
    """The container's whole log, or its last ``cap`` bytes: read as a stream, never all in memory."""
    c = container(cid)
    if c is None:
        return b""
    kept: list[bytes] = []
    size = 0
    for chunk in c.logs(stream=True, follow=False, stdout=True, stderr=True):
        kept.append(chunk)
        size += len(chunk)
        while size - len(kept[0]) >= cap:  # the oldest chunk is not needed for the last cap bytes
            size -= len(kept.pop(0))
    return b"".join(kept)[-cap:]


def follow_logs(cid: str):
    """Generator of decoded log lines, following."""
    c = container(cid)
    if c is None:
        return
    buf = ""
    for chunk in c.logs(stream=True, follow=True, stdout=True, stderr=True):
        buf += chunk.decode("utf-8", "replace")
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            yield line
    if buf:
        yield buf


def kill(cid: str) -> None:
    c = container(cid)
    if c is not None:
        c.kill()


def remove(cid: str) -> None:
    c = container(cid)
    if c is not None:
        c.remove(force=True)


def image_history_env(ref: str) -> list[str]:
    """Env of an image (tests check no secrets leak into it)."""
    return client().images.get(ref).attrs.get("Config", {}).get("Env", []) or []


def dump(obj) -> str:  # pragma: no cover - debugging aid
    return json.dumps(obj, indent=2, default=str)


def wait_gone(cid: str, timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if container(cid) is None:
            return True
        time.sleep(0.5)
    return False
