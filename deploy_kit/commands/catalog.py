"""CLI: list, show, plan, render, validate, schema. Parsing and printing only: cards are loaded by
deploy_kit.cardload, planned by deploy_kit.planner, written by deploy_kit.render."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deploy_kit.commands.options import (
    DevicesOpt,
    DryRunOpt,
    ForceDevicesOpt,
    ForceOpt,
    JsonOpt,
    PortOpt,
    ReleaseOpt,
    SetOpt,
    StrictOpt,
    TargetOpt,
    TpOpt,
    devices_of,
)

CardArg = Annotated[str, typer.Argument(help="catalog name (deploykit list) or path to a card YAML")]
ExposeOpt = Annotated[bool, typer.Option(
    "--expose", help="publish on all interfaces (needs a non-blank VLLM_API_KEY in your environment)")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output directory (new, empty, or an earlier render)")]


def _target(target: Optional[str]) -> str:
    from deploy_kit.targets import DEFAULT_TARGET

    return target or DEFAULT_TARGET


def make_plan(card: str, target: Optional[str], tp: Optional[int], devices: Optional[str], port: Optional[int],
              sets: Optional[list[str]], expose: bool, release: Optional[str] = None, strict: bool = False,
              force_devices: bool = False) -> Any:
    """The Plan, with the devices and ports deploykit's own deployments hold (the ledger)."""
    from deploy_kit.planner import plan
    from deploy_kit.stack import ledger

    name = _target(target)
    return plan(card, target=name, tp=tp, devices=devices_of(devices), port=port, sets=list(sets or []),
                expose=expose, busy_devices=ledger.busy_devices(name, force=force_devices),
                busy_ports=ledger.busy_ports(), release=release, strict=strict, force_devices=force_devices)


def print_warnings(p: Any, prefix: str = "") -> None:
    """The plan's warnings (e.g. upstream marks the model not supported), before anything else, so
    they are the first lines a person reads; `prefix` names the deployment when several are planned."""
    from deploy_kit.console import warn

    for w in p.warnings:
        warn(prefix + w)


def print_plan(p: Any) -> None:
    from deploy_kit.console import out, table
    from deploy_kit.planner import summary_rows

    print_warnings(p)
    out(f"{p.name} on {p.target} ({p.target_kind})")
    rev = f", revision {p.weights.revision}" if p.weights.revision else ""
    rows = [("model", f"{p.weights.id} ({p.weights.source}{rev})"),
            ("image", f"{p.image}  FROM {p.base_image}"),
            *summary_rows(p),
            ("devices", ", ".join(map(str, p.host_devices)) or "none"),
            ("numbering", p.visible_devices_note),
            ("endpoint", f"http://{p.bind_host}:{p.port}/v1  (model '{p.served_model_name}')"),
            ("shm", p.shm_size), ("ready within", f"{p.readiness_timeout_s} s")]
    table(["field", "value"], rows)
    m = p.memory
    table(["weights", "KV cache", "reserve", "need", "available", "fits"],
          [[f"{m.weights_gib:.2f}", f"{m.kv_cache_gib:.2f}", f"{m.reserve_gib:.2f}", f"{m.need_per_device_gib:.2f}",
            f"{m.available_per_device_gib:.2f}", "yes" if m.fits else "NO"]], title="memory per device (GiB)")
    out(m.formula)
    out("argv " + shlex.join(p.argv))  # quoted: what is printed is safe to paste
    out("env  " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(p.env.items())))


def list_cmd(as_json: JsonOpt = False) -> None:
    """The catalog: name, model id, parameters, modality, default TP."""
    from deploy_kit.cardload import list_cards
    from deploy_kit.console import emit_json, table

    cards = [lc.card for lc in list_cards()]
    if as_json:
        emit_json([{"name": c.name, "model": c.model.id, "source": c.model.source, "params_b": c.model.params_b,
                    "modalities": c.model.modalities, "tp": c.serve.tensor_parallel_size or 1,
                    "unsupported_targets": sorted(k for k, v in c.targets.items() if v.unsupported)}
                   for c in cards])
        return
    table(["name", "model", "source", "params", "modality", "TP", "not on"],
          [[c.name, c.model.id, c.model.source, f"{c.model.params_b}B", "+".join(c.model.modalities),
            c.serve.tensor_parallel_size or 1, ", ".join(sorted(k for k, v in c.targets.items() if v.unsupported))]
           for c in cards])


def show_cmd(card: CardArg, target: TargetOpt = None, sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """The card resolved for a target (defaults < target < card < override < --set)."""
    import yaml

    from deploy_kit.cardload import load_card, resolve
    from deploy_kit.console import emit_json, out
    from deploy_kit.targets import load_target

    lc = load_card(card)
    prof = load_target(_target(target))
    res = resolve(lc, prof.name, prof.serve_defaults, prof.env, sets)
    data = res.card.model_dump(mode="json", exclude={"targets"})
    data["target"] = prof.name
    data["unsupported_on_target"] = res.override_unsupported
    if as_json:
        emit_json(data)
        return
    out(f"# {lc.path} resolved for target {prof.name}")
    out(yaml.safe_dump(data, sort_keys=False).rstrip("\n"))


def plan_cmd(card: CardArg, target: TargetOpt = None, tp: TpOpt = None, devices: DevicesOpt = None,
             port: PortOpt = None, sets: SetOpt = None, expose: ExposeOpt = False, as_json: JsonOpt = False,
             release: ReleaseOpt = None, strict: StrictOpt = False, force_devices: ForceDevicesOpt = False) -> None:
    """Plan a deployment and print it (nothing is written)."""
    from deploy_kit.console import emit_json

    p = make_plan(card, target, tp, devices, port, sets, expose, release, strict, force_devices)
    if as_json:
        emit_json(p.model_dump(mode="json"))
    else:
        print_plan(p)


def _render_nodes(p: Any, out: Path, *, nodes: int, k8s: bool, resource: Optional[str], force: bool,
                  dry_run: bool) -> None:
    """k8s manifests or compose-per-node files, written by write_tree with the same guarantee as
    `render`: only what an earlier render wrote is ever replaced."""
    from deploy_kit.console import out as say
    from deploy_kit.render import check_out_dir, write_tree
    from deploy_kit.stack.compose_render import multinode_files
    from deploy_kit.stack.k8s import k8s_files

    check_out_dir(out.absolute(), force)
    files = k8s_files(p, nodes=nodes, resource_name=resource) if k8s else multinode_files(p, nodes)
    if dry_run:
        kind = "Kubernetes manifests" if k8s else "compose files"
        say(f"would write {kind} for {p.name} ({nodes} node(s)) into {out}: {', '.join(files)}")
        return
    for f in write_tree(out, files, force=force):
        say(f"wrote {f}")


def render_cmd(card: CardArg, out: OutOpt, target: TargetOpt = None, tp: TpOpt = None,
               devices: DevicesOpt = None, port: PortOpt = None, sets: SetOpt = None,
               expose: ExposeOpt = False,
               k8s: Annotated[bool, typer.Option("--k8s", help="Kubernetes manifests instead of compose")] = False,
               nodes: Annotated[int, typer.Option("--nodes", min=1, max=64,
                                                  help="nodes (k8s LeaderWorkerSet / compose per node)")] = 1,
               k8s_resource: Annotated[Optional[str], typer.Option(
                   "--k8s-resource", help="device plugin resource, e.g. huawei.com/ascend-1980")] = None,
               force: ForceOpt = False, dry_run: DryRunOpt = False, release: ReleaseOpt = None,
               strict: StrictOpt = False, force_devices: ForceDevicesOpt = False) -> None:
    """Render Dockerfile, model.env, compose.yaml, plan.json and README.md into --out.

    Only files an earlier render wrote (recorded with their hashes) are ever replaced."""
    from deploy_kit.console import out as say
    from deploy_kit.render import FILES, check_out_dir, render, render_files

    p = make_plan(card, target, tp, devices, port, sets, expose, release, strict, force_devices)
    print_warnings(p)
    if k8s or nodes > 1:
        _render_nodes(p, out, nodes=nodes, k8s=k8s, resource=k8s_resource, force=force, dry_run=dry_run)
        return
    if dry_run:
        check_out_dir(out.absolute(), force)
        render_files(p)  # proves every template renders
        say(f"would write {', '.join(FILES)} into {out}")
        return
    for f in render(p, out, force=force):
        say(f"wrote {f}")


def _target_results(lc: Any, sets: list[str]) -> tuple[dict[str, str], int]:
    """{target: "ok" | "infeasible: ..." | "bad input: ..."} and the exit code they add up to."""
    from deploy_kit.errors import BadInput, Infeasible
    from deploy_kit.planner import plan
    from deploy_kit.targets import target_names

    results: dict[str, str] = {}
    for t in target_names():
        try:
            plan(lc, target=t, sets=sets, port_probe=None)
            results[t] = "ok"
        except Infeasible as exc:
            results[t] = "infeasible: " + "; ".join(exc.reasons or [exc.message])
        except BadInput as exc:
            results[t] = "bad input: " + exc.one_line()
    if any(r.startswith("bad input") for r in results.values()):
        return results, 2
    return results, (0 if any(r == "ok" for r in results.values()) else 3)


def validate_cmd(path: Annotated[str, typer.Argument(help="a card file (or catalog name)")],
                 sets: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Validate a card (every error, with its line) and plan it for every target.

    Exit 0 (runs somewhere), 2 (bad card: every error listed) or 3 (runs on no target)."""
    from deploy_kit.cardload import load_card
    from deploy_kit.console import emit_json, err, out
    from deploy_kit.errors import BadInput, CardErrors, Infeasible

    try:
        lc = load_card(path)
    except CardErrors as exc:
        errors = exc.errors
        if as_json:
            emit_json({"card": path, "errors": [{"file": e.file, "line": e.line, "field": e.field,
                                                 "message": e.message, "hint": e.hint} for e in errors]})
        else:
            for e in errors:
                err(e.one_line())
        raise BadInput(f"{len(errors)} error(s) in the card", file=errors[0].file) from None
    results, code = _target_results(lc, list(sets or []))
    if as_json:
        emit_json({"card": str(lc.path), "errors": [], "targets": results})
    else:
        for t, r in results.items():
            out(f"{t:12s} {r}")
    if code == 2:
        raise BadInput(f"{lc.name} is refused as bad input on some targets (listed above)", file=str(lc.path))
    if code == 3:
        raise Infeasible(f"{lc.name} can run on no target", file=str(lc.path))


def schema_cmd() -> None:
    """JSON Schema of the card format (for editor completion)."""
    from deploy_kit.cards import json_schema
    from deploy_kit.console import emit_json

    emit_json(json_schema())


def register(app: typer.Typer) -> None:
    app.command("list")(list_cmd)
    app.command("show")(show_cmd)
    app.command("plan")(plan_cmd)
    app.command("render")(render_cmd)
    app.command("validate")(validate_cmd)
    app.command("schema")(schema_cmd)
