"""The services a stack runs beside its model servers: LiteLLM front door, Prometheus, Grafana.

    stack_companions(plans, out, *, front_door, observability=None, host_network=False,
                     front_door_image=None) -> dict[str, dict]

writes litellm-config.yaml and the observability files into ``out`` and returns the compose
services to add. Two network layouts:
- ``stack render`` (host_network=False): one compose project; companions reach each model server
  by its service name on the project network; ports are published on 127.0.0.1.
- ``stack up`` (host_network=True): each deployment is its own compose project (the runtime's
  `up`); the companions form one more project on the host network and reach each server at its
  published port; they listen on 127.0.0.1 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import frontdoor, observe

RENDER_IMAGE = f"{frontdoor.IMAGE_REPO}:{frontdoor.LITELLM_VERSION}"  # stable name; `stack up` builds it


def npu_exporter_address(observability: Any, target: str, *, host_network: bool) -> str | None:
    """host:port of MindCluster NPU Exporter: the stack file's value, else the default on Ascend hosts."""
    if observability.npu_exporter:
        return str(observability.npu_exporter)
    if not target.startswith("ascend"):
        return None
    host = "127.0.0.1" if host_network else "host.docker.internal"
    return f"{host}:{observe.NPU_EXPORTER_PORT}"


def _routes(plans: list, host_network: bool) -> list[tuple[str, str]]:
    if host_network:
        return frontdoor.routes_on_host(plans)
    return [(p.served_model_name or p.name, f"http://{p.name}:{p.container_port}/v1") for p in plans]


def _observability(plans: list, out: Path, observability: Any, target: str, host_network: bool) -> dict:
    targets = observe.targets_on_host(plans) if host_network else observe.targets_in_network(plans)
    exporter = npu_exporter_address(observability, target, host_network=host_network)
    prom_url = (f"http://127.0.0.1:{observability.prometheus_port}" if host_network
                else "http://prometheus:9090")
    observe.write_observability(out, targets, npu_exporter=exporter, prometheus_url=prom_url)
    services = observe.observability_services(observability, host_network=host_network)
    if exporter and exporter.startswith("host.docker.internal:"):
        services["prometheus"]["extra_hosts"] = ["host.docker.internal:host-gateway"]
    if not host_network:
        services["prometheus"]["depends_on"] = sorted(p.name for p in plans)
    return services


def stack_companions(plans: list, out: Path, *, front_door: Any, observability: Any = None,
                     host_network: bool = False, front_door_image: str | None = None) -> dict[str, dict]:
    """Compose services (front-door, prometheus, grafana) enabled by the stack file; their files in ``out``."""
    services: dict[str, dict] = {}
    target = plans[0].target if plans else ""  # one host target per stack
    if front_door is not None and front_door.enabled:
        cfg = frontdoor.litellm_config(_routes(plans, host_network))
        (out / frontdoor.CONFIG_NAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
        image = front_door_image or front_door.image or RENDER_IMAGE
        services["front-door"] = frontdoor.front_door_service(
            image, front_door.port, host_network=host_network,
            depends_on=None if host_network else [p.name for p in plans])
    if observability is not None and observability.enabled:
        services.update(_observability(plans, out, observability, target, host_network))
    return services
