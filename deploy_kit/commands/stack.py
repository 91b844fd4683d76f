"""CLI commands: stack plan/render/up/down, devices, k8s. Heavy imports go inside the command functions."""

from __future__ import annotations

from pathlib import Path

import typer

stack_app = typer.Typer(help="Several deployments on one host: NPU allocation, one compose project.",
                        no_args_is_help=True, rich_markup_mode=None)   # plain help: see cli.py


SETS_HELP = "DEPLOYMENT:key=value card override, e.g. internlm:model.revision=<reviewed sha>"


def _holder(text: str) -> str | None:
    """Deployment name of a ledger holder ('deployment NAME (compose project P)'); None for processes."""
    if not text.startswith("deployment "):
        return None
    return text.removeprefix("deployment ").split(" ")[0]


def _load_and_plan(path: Path, use_ledger: bool = True, sets: list[str] | None = None):
    from ..stack import ledger
    from ..stack.stackfile import apply_sets, load_stack, plan_stack

    st = apply_sets(load_stack(path), sets)
    busy_d = ledger.busy_devices(st.host.target) if use_ledger else {}
    busy_p = ledger.busy_ports() if use_ledger else {}
    # Deployments of this very stack that are already up are not "busy" against themselves.
    own = {d.name for d in st.deployments}
    busy_d = {k: v for k, v in busy_d.items() if _holder(v) not in own}
    busy_p = {k: v for k, v in busy_p.items() if _holder(v) not in own}
    return st, plan_stack(st, busy_devices=busy_d, busy_ports=busy_p, source=str(path))


def _device_table(title: str, rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("deployment", "card", "TP", "devices", "port", "need/avail GiB per device"):
        t.add_column(col)
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console().print(t)


@stack_app.command("plan")
def stack_plan(path: Path = typer.Argument(..., help="stack file (compose/*.yaml)"),
               no_ledger: bool = typer.Option(False, "--no-ledger", help="ignore what runs on this host"),
               sets: list[str] = typer.Option(None, "--set", help=SETS_HELP)) -> None:
    """Assign devices to every deployment and check every memory fit; print the device map."""
    st, plans = _load_and_plan(path, not no_ledger, sets)
    rows = []
    for p in plans:
        m = p.memory
        rows.append((p.name, p.card_name, p.tensor_parallel_size, ",".join(map(str, p.host_devices)) or "-",
                     p.port, f"{getattr(m, 'need_per_device_gib', 0):.1f}/{getattr(m, 'available_per_device_gib', 0):.1f}"))
    _device_table(f"stack {st.name} on {st.host.target}", rows)


@stack_app.command("render")
def stack_render(path: Path = typer.Argument(...), out: Path = typer.Option(..., "--out"),
                 no_ledger: bool = typer.Option(True, "--no-ledger/--ledger"),
                 sets: list[str] = typer.Option(None, "--set", help=SETS_HELP)) -> None:
    """Write one compose project (one service per deployment, optional LiteLLM front door)."""
    from ..stack.compose_render import render_stack

    st, plans = _load_and_plan(path, not no_ledger, sets)
    f = render_stack(st.name, plans, out, front_door=st.front_door)
    typer.echo(f"wrote {f}")


@stack_app.command("up")
def stack_up(path: Path = typer.Argument(...), dry_run: bool = typer.Option(False, "--dry-run"),
             sets: list[str] = typer.Option(None, "--set", help=SETS_HELP)) -> None:
    """Plan against the device ledger, then start each deployment with the runtime (refused if busy)."""
    from ..runtime import deploy

    st, plans = _load_and_plan(path, True, sets)
    for p in plans:
        deploy.up(p.name, st.host.target, plan=p, dry_run=dry_run, say=typer.echo)
    typer.echo(f"stack {st.name}: {len(plans)} deployment(s) up")


@stack_app.command("down")
def stack_down(path: Path = typer.Argument(...)) -> None:
    """Stop every deployment of the stack."""
    from ..runtime import deploy, state
    from ..stack.stackfile import load_stack

    st = load_stack(path)
    for d in st.deployments:
        if state.load(d.name):
            deploy.down(d.name)
            typer.echo(f"down {d.name}")


def devices(target: str = typer.Option(None, "--target", help="only this target's deployments")) -> None:
    """Which NPU belongs to which deployment (deploykit records + npu-smi processes)."""
    from rich.console import Console
    from rich.table import Table

    from ..stack import ledger

    busy = ledger.busy_devices(target)
    t = Table(title="devices")
    t.add_column("device")
    t.add_column("holder")
    for d, h in sorted(busy.items()):
        t.add_row(str(d), h)
    Console().print(t if busy else "no device is held by a deploykit deployment or an NPU process")


def k8s(card: str = typer.Argument(...), out: Path = typer.Option(..., "--out"),
        target: str = typer.Option("ascend-a2", "--target"), tp: int = typer.Option(None, "--tp"),
        nodes: int = typer.Option(1, "--nodes", min=1),
        resource: str = typer.Option("huawei.com/Ascend910", "--k8s-resource"),
        pvc: str = typer.Option(None, "--pvc", help="weights PVC name (default: hostPath of the cache)"),
        sets: list[str] = typer.Option(None, "--set")) -> None:
    """Kubernetes manifests: Deployment + Service, or LeaderWorkerSet + Ray for --nodes > 1."""
    from ..planner import plan
    from ..stack.k8s import render_k8s

    p = plan(card, target=target, tp=tp, sets=sets, port_probe=None)
    for f in render_k8s(p, out, nodes=nodes, resource_name=resource, weights_claim=pvc):
        typer.echo(f"wrote {f}")


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
    app.command("devices")(devices)
    app.command("k8s")(k8s)
