"""CLI commands: pull, cache ls/rm. Logic lives in deploy_kit.weights; heavy imports stay lazy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def pull(
    name: str = typer.Argument(..., help="Card name (or path to a card YAML)."),
    source: Optional[str] = typer.Option(None, "--source", help="modelscope | huggingface (overrides the card)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Commit sha or tag (overrides the card)."),
    offline: bool = typer.Option(False, "--offline", help="Verify the cache only; no network."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Weights cache (default: DEPLOYKIT_CACHE)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be fetched; download nothing."),
) -> None:
    """Download a card's weights into the cache, verified and resumable."""
    from deploy_kit.cardload import load_card
    from deploy_kit.weights.pull import pull as do_pull
    from deploy_kit.weights.spec import spec_from_card

    spec = spec_from_card(load_card(name), source=source, revision=revision)
    res = do_pull(spec, cache=cache_dir, offline=offline, dry_run=dry_run,
                  log=lambda m: typer.echo(m, err=True))
    typer.echo(str(res.path))


def cache_ls(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
) -> None:
    """List cached weights."""
    from deploy_kit.weights.cache import list_cache

    rows = list_cache(cache_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = (r["commit"] or "")[:12] if r["complete"] else "incomplete"
        typer.echo(f"{r['name']:<32} {r['bytes'] / 2**30:8.2f} GiB  {r['source'] or '-':<12} {state}")


def cache_rm(
    name: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
) -> None:
    """Remove one model from the cache."""
    from deploy_kit.weights.cache import remove

    if not yes and not typer.confirm(f"remove {name} from the weights cache?"):
        raise typer.Exit(1)
    typer.echo(f"removed {remove(name, cache_dir)}")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
    cache = typer.Typer(help="Inspect and prune the weights cache.", no_args_is_help=True, rich_markup_mode=None)
    cache.command("ls")(cache_ls)
    cache.command("rm")(cache_rm)
    app.add_typer(cache, name="cache")
