"""`bundle` and `load` as plain functions (the CLI only parses and prints)."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import paths
from ..errors import BadInput, DeployKitError
from .fmt import Meter
from .install import ImageLoader, Installed, install
from .read import Verified, check_arch, read_head, verify_bundle
from .write import estimate, write_bundle

Say = Callable[[str], None]
Tagger = Callable[[str, str], None]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _check_disk(where: Path, need: int) -> None:
    from ..weights.pull import check_disk

    check_disk(where, need)


def make_bundle(what: str, out: Path, *, target: str | None = None, sets: list[str] | None = None,
                wheels: bool = True, python: str | None = None, force: bool = False,
                say: Say = print, meter: Meter | None = None) -> dict:
    """Gather, estimate (printed, checked against free disk), then stream into ``out``."""
    from .gather import gather

    out = Path(out)
    if out.suffix != ".tar":
        raise BadInput(f"{out}: the bundle is a plain tar; name it FILE.tar", field="--out")
    if out.exists() and not force:
        raise BadInput(f"{out} exists", field="--out", hint="--force replaces it")
    if python is not None and not re.fullmatch(r"3\.\d{1,2}", python):
        raise BadInput(f"--python takes a version like 3.10, got {python!r}", field="--python")
    wheel_fn = None
    if wheels:
        from . import wheels as wheels_mod

        def wheel_fn(dest: Path, arch: str) -> list[Path]:
            say(f"fetching deploykit and dependency wheels for {arch}")
            return wheels_mod.collect(dest, arch, python)

    with tempfile.TemporaryDirectory(prefix="deploykit-bundle-") as tmp:
        content = gather(what, target=target, sets=sets, workdir=Path(tmp), say=say, wheels=wheel_fn)
        need = estimate(content)
        say(f"bundle size: about {human(need)} -> {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        _check_disk(out.parent, need)
        return write_bundle(content, out, meter)


def localize(v: Verified, installed: Installed, tagger: Tagger, say: Say) -> list[str]:
    """Tag each loaded image with the content tag `up` computes on THIS host (its CA bundle and
    wheel folder are part of the build-context hash), so `up` finds the image and builds nothing."""
    from ..planner import Plan
    from ..runtime.stage import ensure_image

    tags = []
    for dep in v.head.get("deployments", []):
        rendered = installed.rendered.get(dep["name"])
        image = v.head["images"][dep["image"]]
        if rendered is None or not (rendered / "plan.json").is_file():
            continue
        with tempfile.TemporaryDirectory(prefix="deploykit-ctx-") as ctx:
            try:
                plan = Plan.model_validate(json.loads((rendered / "plan.json").read_text()))
                ref = ensure_image(plan, rendered, say, dry_run=True, ctx_dir=Path(ctx))[0]
            except (DeployKitError, ValueError) as exc:
                say(f"warning: {dep['name']}: cannot compute this host's image tag ({exc}); "
                    "`up` will build the image")
                continue
        for r in dict.fromkeys([ref, dep.get("image_ref") or ref]):
            tagger(image["id"], r)
            tags.append(r)
    door = v.head.get("front_door")
    if door:
        from ..operate.frontdoor import IMAGE_REPO, LITELLM_VERSION
        from .gather import front_door_ref

        image_id = v.head["images"][door["image"]]["id"]
        for r in dict.fromkeys([front_door_ref(say, dry_run=True), f"{IMAGE_REPO}:{LITELLM_VERSION}"]):
            tagger(image_id, r)
            tags.append(r)
    return tags


@dataclass
class Loaded:
    verified: Verified
    installed: Installed | None = None
    tags: list[str] = field(default_factory=list)


def _loader_defaults(loader: ImageLoader | None, tagger: Tagger | None) -> tuple[ImageLoader, Tagger]:
    if loader is not None and tagger is not None:
        return loader, tagger
    from . import images

    return loader or images.load_stream, tagger or images.tag


def _check_image_disk(need: int) -> None:
    from .images import docker_root

    root = docker_root()
    if root and Path(root).is_dir():  # a remote engine's root is not ours to measure
        _check_disk(Path(root), need)


def next_commands(res: Loaded) -> list[str]:
    """What to run after a load: the catalog name when the bundled card is the installed one,
    else the card file the load placed; a stack runs with `stack up`."""
    from ..cardload import load_card

    head = res.verified.head
    if head.get("kind") == "stack":
        return [f"deploykit stack up {head.get('source')}   (the stack file, with the same --set values)"]
    cmds = []
    for dep in head.get("deployments", []):
        card = dep["card"]
        try:
            same = load_card(card).digest() == head.get("cards", {}).get(card)
        except DeployKitError:
            same = False
        ref = card if same or res.installed is None else str(res.installed.cards.get(card, card))
        sets = "".join(f" --set {s}" for s in head.get("sets", []))
        cmds.append(f"deploykit up {ref} --target {dep['target']} --port {dep['port']}{sets}")
    return cmds


def load_bundle(path: Path, *, verify_only: bool = False, say: Say = print, meter: Meter | None = None,
                loader: ImageLoader | None = None, tagger: Tagger | None = None,
                cache: Path | None = None, place_root: Path | None = None) -> Loaded:
    """Architecture (exit 3) -> every checksum (exit 5) -> images, weights, files -> local tags."""
    path = Path(path)
    if not verify_only:
        check_arch(read_head(path))  # before reading gigabytes
    v = verify_bundle(path, meter)
    say(f"verified {len(v.entries)} members ({human(v.payload_bytes)}) against the manifest")
    if verify_only:
        return Loaded(v)
    check_arch(v.head)
    from .. import __version__

    if v.head.get("deploykit_version") != __version__:
        say(f"warning: bundle made by deploykit {v.head.get('deploykit_version')}, this is {__version__}: "
            "install the bundled wheels (see the bundle's wheels/) so `up` renders the same files")
    cache = Path(cache or paths.cache_dir())
    place_root = Path(place_root or paths.state_dir() / "bundles")
    weights = sum(e.size for n, e in v.entries.items() if n.startswith("weights/"))
    cache.mkdir(parents=True, exist_ok=True)
    _check_disk(cache, weights)
    if loader is None:
        _check_image_disk(sum(e.size for n, e in v.entries.items() if n.startswith("images/")))
    loader, tagger = _loader_defaults(loader, tagger)
    installed = install(v, cache=cache, place_root=place_root, load_images=loader, meter=meter)
    tags = localize(v, installed, tagger, say)
    return Loaded(v, installed, tags)

