"""CLI commands: stack plan/render/up/down, devices, k8s. Heavy imports go inside the command functions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import DryRunOpt, JsonOpt, ReleaseOpt, SetOpt, TargetOpt, TpOpt

stack_app = typer.Typer(help="Several deployments on one host: NPU allocation, one compose project.",
                        no_args_is_help=True, rich_markup_mode=None)   # plain help: see cli.py


SETS_HELP = "DEPLOYMENT:key=value card override, e.g. internlm:model.revision=<reviewed sha>"
StackSetOpt = Annotated[Optional[list[str]], typer.Option("--set", help=SETS_HELP)]
ObservabilityOpt = Annotated[Optional[bool], typer.Option(
    "--observability/--no-observability",
    help="Prometheus + Grafana beside the stack (default: the stack file's observability.enabled)")]


def _load_and_plan(path: Path, use_ledger: bool = True, sets: list[str] | None = None,
                   observability: bool | None = None):
    from ..stack import ledger
    from ..stack.stackfile import apply_sets, load_stack, plan_stack, with_observability
    from .catalog import print_warnings

    st = with_observability(apply_sets(load_stack(path), sets), observability)
    # Deployments of this very stack that are already up are not "busy" against themselves.
    own = {d.name for d in st.deployments}
    busy_d = ledger.busy_devices(st.host.target, exclude=own) if use_ledger else {}
    busy_p = ledger.busy_ports(exclude=own) if use_ledger else {}
    plans = plan_stack(st, busy_devices=busy_d, busy_ports=busy_p, source=str(path))
    for p in plans:  # first, as `plan` does: e.g. upstream marks a model NOT SUPPORTED
        print_warnings(p, prefix=f"{p.name}: ")
    return st, plans


@stack_app.command("plan")
def stack_plan(path: Path = typer.Argument(..., help="stack file (compose/*.yaml)"),
               no_ledger: bool = typer.Option(False, "--no-ledger", help="ignore what runs on this host"),
               sets: StackSetOpt = None, as_json: JsonOpt = False) -> None:
    """Assign devices to every deployment and check every memory fit; print the device map."""
    from ..console import emit_json, table

    st, plans = _load_and_plan(path, not no_ledger, sets)
    if as_json:
        emit_json({"stack": st.name, "target": st.host.target,
                   "deployments": [p.model_dump(mode="json") for p in plans]})
        return
    rows = []
    for p in plans:
        m = p.memory
        rows.append((p.name, p.card_name, p.tensor_parallel_size, ",".join(map(str, p.host_devices)) or "-",
                     p.port, f"{m.need_per_device_gib:.1f}/{m.available_per_device_gib:.1f}"))
    table(("deployment", "card", "TP", "devices", "port", "need/avail GiB per device"), rows,
          title=f"stack {st.name} on {st.host.target}")


@stack_app.command("render")
def stack_render(path: Path = typer.Argument(...), out: Path = typer.Option(..., "--out"),
                 no_ledger: bool = typer.Option(True, "--no-ledger/--ledger"),
                 sets: StackSetOpt = None, observability: ObservabilityOpt = None,
                 dry_run: DryRunOpt = False) -> None:
    """Write one compose project: a service per deployment, LiteLLM front door, Prometheus + Grafana."""
    import shutil
    import tempfile

    from ..console import out as say
    from ..stack.compose_render import render_stack

    st, plans = _load_and_plan(path, not no_ledger, sets, observability)
    target = Path(tempfile.mkdtemp(prefix="deploykit-stack-")) if dry_run else out
    try:
        f = render_stack(st.name, plans, target, front_door=st.front_door, observability=st.observability)
        if dry_run:
            for p in sorted(q for q in target.rglob("*") if q.is_file()):
                say(f"would write {out / p.relative_to(target)}")
        else:
            say(f"wrote {f}")
    finally:
        if dry_run:
            shutil.rmtree(target, ignore_errors=True)


@stack_app.command("up")
def stack_up(path: Path = typer.Argument(...), dry_run: DryRunOpt = False, sets: StackSetOpt = None,
             observability: ObservabilityOpt = None) -> None:
    """Plan against the device ledger, start each deployment, then the front door and observability."""
    from ..console import out as say
    from ..operate import stackops

    st, plans = _load_and_plan(path, True, sets, observability)
    if not dry_run:
        stackops.preflight(st)  # key, ports, images: refused before any deployment starts
    for name, url in stackops.up(st, plans, say, dry_run=dry_run).items():
        say(f"{name}: {url}")
    say(f"stack {st.name}: {len(plans)} deployment(s) " + ("would be up" if dry_run else "up"))


@stack_app.command("down")
def stack_down(path: Path = typer.Argument(...), dry_run: DryRunOpt = False) -> None:
    """Stop the stack's companions and every deployment of the stack."""
    from ..console import out as say
    from ..operate import stackops
    from ..runtime import state
    from ..runtime.deploy import down, down_plan
    from ..stack.stackfile import load_stack

    st = load_stack(path)
    found = stackops.stop(st.name, say, dry_run=dry_run)
    for d in st.deployments:
        if state.load(d.name) is None:
            continue
        found = True
        if dry_run:
            for line in down_plan(d.name):
                say(f"would remove {line}")
            continue
        down(d.name)
        say(f"down {d.name}")
    if not found:
        say(f"stack {st.name}: nothing of it is running")


def devices(target: TargetOpt = None, as_json: JsonOpt = False) -> None:
    """Which NPU belongs to which deployment (deploykit records + npu-smi processes)."""
    from ..console import emit_json, out, table
    from ..stack import ledger

    busy = ledger.busy_devices(target)
    if as_json:
        emit_json([{"device": d, "holder": h} for d, h in sorted(busy.items())])
        return
    if not busy:
        out("no device is held by a deploykit deployment or an NPU process")
        return
    table(("device", "holder"), [(str(d), h) for d, h in sorted(busy.items())], title="devices")


def k8s(card: str = typer.Argument(...), out: Path = typer.Option(..., "--out"),
        target: TargetOpt = None, tp: TpOpt = None,
        nodes: int = typer.Option(1, "--nodes", min=1),
        resource: str = typer.Option("huawei.com/Ascend910", "--k8s-resource"),
        pvc: str = typer.Option(None, "--pvc", help="weights PVC name (default: hostPath of the cache)"),
        sets: SetOpt = None,
        registry: str = typer.Option(None, "--registry", help="registry the pods pull from (host[:port]/path); "
                                     "prints the docker commands that copy the upstream image there"),
        ascend_runtime: bool = typer.Option(False, "--ascend-runtime", help="nodes run the Ascend Docker "
                                            "Runtime: it injects the driver files (no hostPath mounts)"),
        ifname: str = typer.Option("eth0", "--ifname", help="NIC for GLOO/TP sockets (--nodes > 1)"),
        release: ReleaseOpt = None) -> None:
    """Kubernetes manifests: Deployment + Service, or LeaderWorkerSet + Ray for --nodes > 1."""
    from ..console import out as say
    from ..planner import plan
    from ..stack.k8s import push_commands, render_k8s
    from ..targets import DEFAULT_TARGET

    p = plan(card, target=target or DEFAULT_TARGET, tp=tp, sets=sets, release=release)
    for f in render_k8s(p, out, nodes=nodes, resource_name=resource, weights_claim=pvc, ifname=ifname,
                        registry=registry, ascend_runtime=ascend_runtime):
        say(f"wrote {f}")
    for line in push_commands(p, registry):
        say(line)


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
    app.command("devices")(devices)
    app.command("k8s")(k8s)
