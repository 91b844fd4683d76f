"""CLI: list, show, plan, render, validate, schema. Parsing and printing only."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

TARGET_HELP = "Target profile (ascend-a2, ascend-a3, cuda, cpu, or your own)."


def _console():
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)
    if not con.is_terminal:  # pipes and CI logs: don't fold tables to 80 columns
        con.width = 160
    return con


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")




def make_plan(card: str, target: str, tp: Optional[int], devices: Optional[str], port: Optional[int],
              sets: Optional[List[str]], expose: bool):
    from ..planner import plan

    busy_devices, busy_ports = {}, {}
    try:  # the device/port ledger (deployments deploykit runs on this host), when present
        from ..stack import ledger

        busy_devices = ledger.busy_devices(target)
        busy_ports = ledger.busy_ports()
    except Exception:  # noqa: BLE001 - no ledger yet: plan without it
        pass
    return plan(card, target=target, tp=tp, devices=devices, port=port, sets=list(sets or []),
                expose=expose, busy_devices=busy_devices, busy_ports=busy_ports)


def print_plan(plan) -> None:
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{plan.name}[/] on [bold]{plan.target}[/] ({plan.target_kind})")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="cyan")
    t.add_column()
    t.add_row("model", f"{plan.weights.id} ({plan.weights.source}"
              + (f", revision {plan.weights.revision}" if plan.weights.revision else "") + ")")
    t.add_row("image", f"{plan.image}  FROM {plan.base_image}")
    t.add_row("devices", ", ".join(map(str, plan.host_devices)) or "none")
    t.add_row("numbering", plan.visible_devices_note)
    t.add_row("endpoint", f"http://{plan.bind_host}:{plan.port}/v1  (model '{plan.served_model_name}')")
    t.add_row("shm", plan.shm_size)
    t.add_row("ready within", f"{plan.readiness_timeout_s} s")
    con.print(t)
    m = plan.memory
    mt = Table(title="memory per device (GiB)", title_justify="left")
    for col in ("weights", "KV cache", "reserve", "need", "available", "fits"):
        mt.add_column(col, justify="right")
    mt.add_row(f"{m.weights_gib:.2f}", f"{m.kv_cache_gib:.2f}", f"{m.reserve_gib:.2f}",
               f"{m.need_per_device_gib:.2f}", f"{m.available_per_device_gib:.2f}", "yes" if m.fits else "NO")
    con.print(mt)
    con.print(f"[dim]{m.formula}[/]")
    con.print("[cyan]argv[/] " + " ".join(plan.argv))
    con.print("[cyan]env[/]  " + " ".join(f"{k}={v}" for k, v in sorted(plan.env.items())))
    for w in plan.warnings:
        con.print(f"[yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """The catalog: name, model id, parameters, modality, default TP."""
        from ..cardload import list_cards

        rows = []
        for lc in list_cards():
            c = lc.card
            rows.append({"name": c.name, "model": c.model.id, "source": c.model.source,
                         "params_b": c.model.params_b, "modalities": c.model.modalities,
                         "tp": c.serve.tensor_parallel_size or 1,
                         "unsupported_targets": sorted(k for k, v in c.targets.items() if v.unsupported)})
        if as_json:
            _print_json(rows)
            return
        from rich.table import Table

        t = Table()
        t.add_column("name", no_wrap=True)
        t.add_column("model", no_wrap=True)
        for col in ("source", "params", "modality", "TP", "not on"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["name"], r["model"], r["source"], f"{r['params_b']}B",
                      "+".join(r["modalities"]), str(r["tp"]), ", ".join(r["unsupported_targets"]))
        _console().print(t)

    @app.command("show")
    def show_cmd(card: str = typer.Argument(..., help="Catalog name or path to a card."),
                 target: str = typer.Option("ascend-a2", "--target", "-t", help=TARGET_HELP),
                 sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key=value."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
        """The card resolved for a target (defaults < target < card < override < --set)."""
        from ..cardload import load_card, resolve
        from ..targets import load_target

        lc = load_card(card)
        prof = load_target(target)
        res = resolve(lc, prof.name, prof.serve_defaults, prof.env, sets)
        data = res.card.model_dump(mode="json", exclude={"targets"})
        data["target"] = prof.name
        data["unsupported_on_target"] = res.override_unsupported
        if as_json:
            _print_json(data)
        else:
            import yaml

            _console().print(f"# {lc.path} resolved for target {prof.name}")
            sys.stdout.write(yaml.safe_dump(data, sort_keys=False))

    @app.command("plan")
    def plan_cmd(card: str = typer.Argument(..., help="Catalog name or path to a card."),
                 target: str = typer.Option("ascend-a2", "--target", "-t", help=TARGET_HELP),
                 tp: Optional[int] = typer.Option(None, "--tp", help="Tensor parallel size."),
                 devices: Optional[str] = typer.Option(None, "--devices", help="Host device ids, e.g. 4,5."),
                 port: Optional[int] = typer.Option(None, "--port", help="Host port (default 8000)."),
                 sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key=value."),
                 expose: bool = typer.Option(False, "--expose", help="Publish on all interfaces (needs VLLM_API_KEY)."),
                 as_json: bool = typer.Option(False, "--json")) -> None:
        """Plan a deployment and print it (nothing is written)."""
        p = make_plan(card, target, tp, devices, port, sets, expose)
        if as_json:
            _print_json(p.model_dump(mode="json"))
        else:
            print_plan(p)

    @app.command("render")
    def render_cmd(card: str = typer.Argument(..., help="Catalog name or path to a card."),
                   out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
                   target: str = typer.Option("ascend-a2", "--target", "-t", help=TARGET_HELP),
                   tp: Optional[int] = typer.Option(None, "--tp"),
                   devices: Optional[str] = typer.Option(None, "--devices"),
                   port: Optional[int] = typer.Option(None, "--port"),
                   sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key=value."),
                   expose: bool = typer.Option(False, "--expose"),
                   k8s: bool = typer.Option(False, "--k8s", help="Kubernetes manifests instead of compose."),
                   nodes: int = typer.Option(1, "--nodes", help="Nodes (k8s LeaderWorkerSet / compose per node)."),
                   k8s_resource: Optional[str] = typer.Option(None, "--k8s-resource",
                                                              help="Device plugin resource, e.g. huawei.com/ascend-1980."),
                   force: bool = typer.Option(False, "--force", help="Overwrite a non-empty --out."),
                   dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be written.")) -> None:
        """Render Dockerfile, model.env, compose.yaml, plan.json and README.md into --out."""
        p = make_plan(card, target, tp, devices, port, sets, expose)
        con = _console()
        if k8s or nodes > 1:
            from ..stack import k8s as k8s_mod

            if dry_run:
                con.print(f"would write Kubernetes manifests for {p.name} ({nodes} node(s)) into {out}")
                return
            written = (k8s_mod.render_k8s(p, out, nodes=nodes, resource_name=k8s_resource) if k8s
                       else k8s_mod.render_compose_nodes(p, out, nodes=nodes))
            for f in written:
                con.print(f"wrote {f}")
            return
        from ..render import FILES, check_out_dir, render, render_files

        if dry_run:
            check_out_dir(out, force)
            render_files(p)  # proves every template renders
            con.print(f"would write {', '.join(FILES)} into {out}")
            return
        for f in render(p, out, force=force):
            con.print(f"wrote {f}")

    @app.command("validate")
    def validate_cmd(path: str = typer.Argument(..., help="A card file (or catalog name)."),
                     sets: Optional[List[str]] = typer.Option(None, "--set"),
                     as_json: bool = typer.Option(False, "--json")) -> None:
        """Validate a card and plan it for every target; exit 0, 2 (bad card) or 3 (runs nowhere)."""
        from ..cardload import load_card
        from ..errors import DeployKitError, Infeasible
        from ..planner import plan
        from ..targets import target_names

        lc = load_card(path)  # schema errors: exit 2 with file:line
        results = {}
        for t in target_names():
            try:
                plan(lc, target=t, sets=list(sets or []), port_probe=None)
                results[t] = "ok"
            except Infeasible as exc:
                results[t] = "infeasible: " + "; ".join(exc.reasons or [exc.message])
            except DeployKitError:
                raise
        if as_json:
            _print_json({"card": str(lc.path), "targets": results})
        else:
            con = _console()
            for t, r in results.items():
                con.print(f"{t:12s} {r}")
        if all(r != "ok" for r in results.values()):
            raise Infeasible(f"{lc.name} can run on no target", file=str(lc.path))

    @app.command("schema")
    def schema_cmd() -> None:
        """JSON Schema of the card format (for editor completion)."""
        from ..cards import json_schema

        _print_json(json_schema())
