"""Docker side of bundles through the Docker SDK: inspect, streamed save, streamed load, tag."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

from ..errors import RuntimeFailure
from .fmt import CHUNK
from .write import ImagePart

# Saving/loading gigabytes outlasts the runtime client's 300 s socket timeout.
_TIMEOUT_S = 3600
_LOADED = re.compile(r"^Loaded image(?: ID)?: (\S+)")


@lru_cache(maxsize=1)
def _client():
    from ..runtime import dockerapi

    dockerapi.client()  # engine reachable and SDK installed, with the runtime's one-line errors
    import docker

    return docker.from_env(timeout=_TIMEOUT_S)


def image_part(index: int, ref: str) -> ImagePart:
    """What a bundle records about ``ref``, and its `docker save` stream (opened when written)."""
    import docker

    try:
        img = _client().images.get(ref)
    except docker.errors.ImageNotFound:
        raise RuntimeFailure(f"image {ref} is not on this Docker engine",
                             hint="build or pull it before bundling") from None
    attrs = img.attrs
    named = ref if ref in img.tags else False

    def chunks() -> Iterator[bytes]:
        return img.save(chunk_size=CHUNK, named=named)

    return ImagePart(index=index, ref=ref, image_id=img.id, architecture=str(attrs.get("Architecture", "")),
                     os=str(attrs.get("Os", "")), size=int(attrs.get("Size") or 0), chunks=chunks)


def load_stream(stream: Iterator[bytes]) -> list[str]:
    """`docker load` of a tar stream (chunked upload: nothing buffered); the refs/ids it loaded."""
    import docker

    loaded: list[str] = []
    try:
        for msg in _client().api.load_image(stream):
            if msg.get("error"):
                raise RuntimeFailure(f"docker load failed: {msg['error'].strip()}")
            match = _LOADED.match(str(msg.get("stream", "")).strip())
            if match:
                loaded.append(match.group(1))
    except docker.errors.APIError as exc:
        raise RuntimeFailure(f"docker load failed: {exc.explanation or exc}") from None
    return loaded


def image_id(ref: str) -> str | None:
    from ..runtime import dockerapi

    return dockerapi.image_exists(ref)


def tag(image_id_: str, ref: str) -> None:
    from ..runtime import dockerapi

    dockerapi.tag(image_id_, ref)


def docker_root() -> str | None:
    """The engine's data root (for the free-disk check of a load), when the engine says."""
    try:
        return str(_client().info().get("DockerRootDir") or "") or None
    except Exception:  # an engine that hides it: the check is skipped, the load still works
        return None
