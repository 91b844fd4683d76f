"""CLI commands: pull, cache ls/verify/rm. Logic lives in deploy_kit.weights; heavy imports stay lazy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deploy_kit.commands.options import DryRunOpt, JsonOpt

CacheDirOpt = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="weights cache (default: $DEPLOYKIT_CACHE or the user cache dir)")]


def pull(
    name: str = typer.Argument(..., help="Card name (or path to a card YAML)."),
    source: Optional[str] = typer.Option(None, "--source", help="modelscope | huggingface (overrides the card)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Commit sha or tag (overrides the card)."),
    offline: bool = typer.Option(False, "--offline", help="Verify the cache only; no network."),
    cache_dir: CacheDirOpt = None,
    dry_run: DryRunOpt = False,
    require_pinned: bool = typer.Option(
        False, "--require-pinned",
        help="refuse a trust_remote_code card with no pinned or locked revision "
             "(default: resolve the branch to its commit and lock it; env DEPLOYKIT_REQUIRE_PINNED=1)"),
) -> None:
    """Download a card's weights into the cache, verified and resumable."""
    from deploy_kit.cardload import load_card
    from deploy_kit.console import err, out
    from deploy_kit.weights.pull import pull as do_pull
    from deploy_kit.weights.spec import spec_from_card

    spec = spec_from_card(load_card(name), source=source, revision=revision)
    res = do_pull(spec, cache=cache_dir, offline=offline, dry_run=dry_run,
                  require_pinned=require_pinned, log=err)
    out(str(res.path))


def cache_ls(as_json: JsonOpt = False, cache_dir: CacheDirOpt = None) -> None:
    """List cached weights (sizes exclude interrupted downloads, shown as partial)."""
    from deploy_kit.console import emit_json, table
    from deploy_kit.weights.cache import list_cache

    rows = list_cache(cache_dir)
    if as_json:
        emit_json(rows)
        return
    table(["name", "GiB", "source", "commit", "partial MiB", "path"],
          [[r["name"], f"{r['bytes'] / 2**30:.2f}", r["source"] or "-",
            (r["commit"] or "-")[:12] if r["complete"] else "incomplete",
            f"{r['partial_bytes'] / 2**20:.1f}" if r["partial_bytes"] else "-", r["path"]] for r in rows],
          title="weights cache")


def cache_verify(
    name: Optional[str] = typer.Argument(None, help="One cache entry (default: all)."),
    as_json: JsonOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Re-hash cached files against the manifest recorded at pull time (exit 5 naming a bad file)."""
    from deploy_kit.console import emit_json, out
    from deploy_kit.weights.cache import raise_if_bad, verify_cache

    results = verify_cache(name, cache_dir)
    if as_json:
        emit_json(results)
    elif not results:
        out("no cached weights")
    else:
        for r in results:
            out(f"{r['name']}: " + ("ok, " + f"{r['files']} files verified" if not r["problems"]
                                    else "; ".join(r["problems"])))
    raise_if_bad(results)


def cache_rm(
    name: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    dry_run: DryRunOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Remove one model from the cache: only the files deploykit wrote (its manifest)."""
    from deploy_kit.console import out, warn
    from deploy_kit.weights.cache import remove, removal_plan

    if dry_run:
        plan = remove(name, cache_dir, dry_run=True)
        for p in plan["remove"]:
            out(f"would remove {p}")
        for p in plan["kept"]:
            out(f"would keep {p} (not written by deploykit)")
        return
    if not yes:
        removal_plan(name, cache_dir)  # refuse a foreign dir before asking
        if not typer.confirm(f"remove {name} from the weights cache?"):
            raise typer.Exit(1)
    plan = remove(name, cache_dir)
    out(f"removed {len(plan['remove'])} paths from {plan['path']}")
    for p in plan["kept"]:
        warn(f"kept {p}: not written by deploykit")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    cache = typer.Typer(help="Inspect, verify and prune the weights cache.", no_args_is_help=True,
                        rich_markup_mode=None)
    cache.command("ls")(cache_ls)
    cache.command("verify")(cache_verify)
    cache.command("rm")(cache_rm)
    app.add_typer(cache, name="cache")
