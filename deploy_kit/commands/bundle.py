"""`deploykit bundle` / `deploykit load`: carry a deployment across an air gap (logic: deploy_kit.bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..console import err, out
from .options import ForceOpt, SetOpt, TargetOpt

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="bundle file to write (FILE.tar)")]
NoWheelsOpt = Annotated[bool, typer.Option(
    "--no-wheels", help="do not include deploykit's wheel and its dependency wheels")]
PythonOpt = Annotated[Optional[str], typer.Option(
    "--python", metavar="X.Y", help="Python version of the offline host, for the wheels (default: this one's)")]
VerifyOnlyOpt = Annotated[bool, typer.Option(
    "--verify-only", help="check every checksum and change nothing (works on any architecture)")]


def bundle(
    what: Annotated[str, typer.Argument(help="card name, card file or stack file (STACK.yaml)")],
    out_file: OutOpt,
    target: TargetOpt = None,
    set_: SetOpt = None,
    no_wheels: NoWheelsOpt = False,
    python: PythonOpt = None,
    force: ForceOpt = False,
) -> None:
    """Pack images, weights, rendered files and wheels into one verified tar for an offline host."""
    from ..bundle.ops import human, make_bundle
    from ..bundle.progress import ConsoleMeter

    meter = ConsoleMeter()
    try:
        manifest = make_bundle(what, out_file, target=target, sets=set_, wheels=not no_wheels, python=python,
                               force=force, say=err, meter=meter)
    finally:
        meter.close()
    images = ", ".join(f"{i['ref']} ({i['architecture']})" for i in manifest["images"])
    out(f"wrote {out_file} ({human(out_file.stat().st_size)}, {len(manifest['members'])} members)")
    out(f"  images: {images}")
    out(f"  deployments: {', '.join(d['name'] for d in manifest['deployments'])} on {manifest['target']}")
    out(f"  on the offline host: deploykit load {out_file.name}")


def load(
    file: Annotated[Path, typer.Argument(help="bundle written by `deploykit bundle`")],
    verify_only: VerifyOnlyOpt = False,
) -> None:
    """Verify every checksum, then load the images, install the weights and place the files."""
    from ..bundle.ops import load_bundle, next_commands
    from ..bundle.progress import ConsoleMeter

    meter = ConsoleMeter()
    try:
        res = load_bundle(file, verify_only=verify_only, say=err, meter=meter)
    finally:
        meter.close()
    head = res.verified.head
    if verify_only or res.installed is None:
        out(f"{file}: every checksum matches (made {head.get('created')} by deploykit "
            f"{head.get('deploykit_version')}, images for "
            f"{', '.join(sorted({i['architecture'] for i in head.get('images', [])})) or '-'})")
        return
    inst = res.installed
    out(f"loaded {file}")
    for ref in inst.images:
        out(f"  image: {ref}")
    for ref in res.tags:
        out(f"  tagged: {ref}")
    for card, path in inst.weights.items():
        out(f"  weights: {card} -> {path}")
    for dep, path in inst.rendered.items():
        out(f"  rendered: {dep} -> {path}")
    for cmd in next_commands(res):
        out(f"  next (no network needed): {cmd}")


def register(app: typer.Typer) -> None:
    app.command("bundle")(bundle)
    app.command("load")(load)
