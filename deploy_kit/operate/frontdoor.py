"""The stack's front door: a LiteLLM proxy built locally from PyPI, routing by model name.

    ensure_image(say, *, base_image=BASE_IMAGE) -> str          # content-addressed tag, built if missing
    litellm_config(routes: list[tuple[str, str]]) -> dict       # [(served model name, http://host:port/v1)]
    front_door_service(image, port, *, host_network) -> dict    # compose service, health-checked

The master key comes from the operator's environment at `up` time (Compose interpolation of
LITELLM_MASTER_KEY); it is never written into a rendered file. LiteLLM refuses to run without one,
and without it every request would be accepted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput

LITELLM_VERSION = "1.106.2"
BASE_IMAGE = "deploykit/base:bookworm"
IMAGE_REPO = "deploykit/litellm"
CONFIG_NAME = "litellm-config.yaml"
CONTAINER_PORT = 4000
KEY_VAR = "LITELLM_MASTER_KEY"
MASTER_KEY_REF = "${LITELLM_MASTER_KEY:?export LITELLM_MASTER_KEY=sk-<secret> for the front door}"


def dockerfile(base_image: str = BASE_IMAGE) -> str:
    """The proxy's Dockerfile (images/litellm.Dockerfile.j2) on `base_image`."""
    from ..render import render_template

    return render_template("litellm.Dockerfile.j2", base_image=base_image, litellm_version=LITELLM_VERSION)


def litellm_config(routes: list[tuple[str, str]]) -> dict:
    """LiteLLM model_list: each served model name to its own vLLM server's OpenAI base URL."""
    return {"model_list": [{"model_name": name,
                            "litellm_params": {"model": f"hosted_vllm/{name}", "api_base": base}}
                           for name, base in routes]}


def routes_on_host(plans: list) -> list[tuple[str, str]]:
    """(served model name, base URL) of each deployment's published port, seen from the host."""
    out = []
    for p in plans:
        host = p.bind_host if p.bind_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        out.append((p.served_model_name or p.name, f"http://{host}:{p.port}/v1"))
    return out


def healthcheck(port: int) -> dict:
    # /health/liveliness answers without the master key; python3 is in the image, curl is not.
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health/liveliness', timeout=5)"
    return {"test": ["CMD", "python3", "-c", probe], "interval": "10s", "timeout": "10s",
            "retries": 3, "start_period": "120s"}


def front_door_service(image: str, port: int, *, host_network: bool, config: str = f"./{CONFIG_NAME}",
                       depends_on: list[str] | None = None) -> dict[str, Any]:
    """Compose service for the proxy: published on 127.0.0.1 (or listening there with host networking)."""
    listen = port if host_network else CONTAINER_PORT
    svc: dict[str, Any] = {
        "image": image,
        "entrypoint": ["litellm"],
        "command": ["--config", "/app/config.yaml", "--port", str(listen)]
        + (["--host", "127.0.0.1"] if host_network else []),
        "environment": {KEY_VAR: MASTER_KEY_REF, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        "volumes": [f"{config}:/app/config.yaml:ro"],
        "healthcheck": healthcheck(listen),
        "restart": "on-failure:5",
        "labels": {"org.deploykit.component": "front-door"},
    }
    if host_network:
        svc["network_mode"] = "host"
    else:
        svc["ports"] = [f"127.0.0.1:{port}:{CONTAINER_PORT}"]
    if depends_on:
        svc["depends_on"] = sorted(depends_on)
    return svc


def require_key() -> None:
    if not os.environ.get(KEY_VAR):
        raise BadInput(f"the front door needs {KEY_VAR} in the environment (clients send it as their bearer token)",
                       hint=f"export {KEY_VAR}=sk-$(openssl rand -hex 16), or set front_door.enabled: false")


def prepare_context(ctx: Path, base_image: str) -> Path:
    from ..runtime.context import ca_bundle

    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile(base_image))
    ca = ca_bundle()
    if ca is not None:
        shutil.copyfile(ca, ctx / "ca.crt")
    else:
        (ctx / "ca.crt").write_bytes(b"")
    return ctx


def image_ref(ctx: Path) -> str:
    from ..runtime.context import content_tag, context_hash

    return content_tag(IMAGE_REPO, context_hash(ctx))


def ensure_image(ctx: Path, say: Callable[[str], None], *, base_image: str = BASE_IMAGE,
                 dry_run: bool = False) -> str:
    """The proxy image's content-addressed tag; built (minutes, from PyPI) only when missing."""
    import time

    prepare_context(ctx, base_image)
    ref = image_ref(ctx)
    if dry_run:
        return ref
    from ..runtime import dockerapi
    from ..runtime.context import build_args

    image_id = dockerapi.image_exists(ref)
    if image_id is None:
        say(f"building front door image {ref} (litellm[proxy]=={LITELLM_VERSION} from PyPI)")
        t0 = time.monotonic()
        image_id = dockerapi.build(ctx, ref, build_args())
        say(f"built {ref} in {time.monotonic() - t0:.0f} s")
    dockerapi.tag(image_id, f"{IMAGE_REPO}:{LITELLM_VERSION}")  # the name `stack render` writes
    return ref
