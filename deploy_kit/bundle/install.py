"""The install pass of `load`: images into Docker, weights into the cache, files into place.

Runs only after verify_bundle passed; re-hashes every member on the way (the file could change
between the passes) and moves staged directories into place only when everything matched.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..errors import VerificationFailed
from .fmt import CHUNK, Meter, retar
from .read import Members, TarReader, Verified, checked

ImageLoader = Callable[[Iterator[bytes]], list[str]]


@dataclass
class Installed:
    images: list[str] = field(default_factory=list)      # what Docker reported as loaded
    weights: dict[str, Path] = field(default_factory=dict)
    rendered: dict[str, Path] = field(default_factory=dict)
    cards: dict[str, Path] = field(default_factory=dict)


def _component(name: str, part: str) -> str:
    if not part or part.startswith(".") or "/" in part:
        raise VerificationFailed(f"bundle member {name!r}: {part!r} is not a valid card/deployment name")
    return part


def _image_run(tr: TarReader, members: Members, prefix: str, v: Verified, meter: Meter):
    """(TarInfo re-rooted for `docker load`, opener) for the consecutive members under ``prefix``."""
    pending = None
    for m in members:
        if pending is not None:
            pending.done()
            pending = None
        if not m.name.startswith(prefix):
            members.push(m)
            return
        info = tarfile.TarInfo(m.name[len(prefix):])
        info.type, info.mode, info.mtime, info.size, info.linkname = m.type, m.mode, m.mtime, m.size, m.linkname
        if m.isfile():
            pending = checked(tr.member(m), v.entries[m.name], meter)
            yield info, (lambda p=pending: p)
        else:
            yield info, (lambda: None)
    if pending is not None:
        pending.done()


class _Placer:
    """Staging directories beside their destinations; moved into place by ``commit``."""

    def __init__(self, cache: Path, place_root: Path) -> None:
        self.cache, self.root = cache, place_root
        self.staged: dict[Path, Path] = {}   # final -> staging
        self.out = Installed()

    def destination(self, name: str) -> tuple[Path, str] | None:
        parts = name.split("/")
        if parts[0] == "weights" and len(parts) > 2:
            card = _component(name, parts[1])
            final = self.cache / card
            self.out.weights[card] = final
        elif parts[0] == "rendered" and len(parts) > 2:
            dep = _component(name, parts[1])
            final = self.root / dep / "rendered"
            self.out.rendered[dep] = final
        elif parts[0] == "cards" and len(parts) == 2:
            card = _component(name, parts[1].removesuffix(".yaml"))
            final = self.root / "cards" / card
            self.out.cards[card] = final / parts[1]
        else:
            return None
        if final not in self.staged:
            stage = final.with_name(f".{final.name}.bundle-partial")
            shutil.rmtree(stage, ignore_errors=True)  # left by an interrupted load of ours
            stage.mkdir(parents=True)
            self.staged[final] = stage
        return self.staged[final], "/".join(parts[2:] if parts[0] != "cards" else parts[1:])

    def write(self, stage: Path, rel: str, reader) -> None:
        dest = stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            while chunk := reader.read(CHUNK):
                f.write(chunk)
        reader.done()

    def commit(self) -> None:
        from filelock import FileLock

        for final, stage in self.staged.items():
            if final.parent == self.cache:
                # The same lock `deploykit pull` takes: a pull and a load of one model serialise.
                with FileLock(str(final.parent / f".{final.name}.lock")):
                    _swap(final, stage)
            else:
                _swap(final, stage)

    def abort(self) -> None:
        for stage in self.staged.values():
            shutil.rmtree(stage, ignore_errors=True)


def _swap(final: Path, stage: Path) -> None:
    """Replace ``final`` by ``stage`` (two renames; the old copy removed only after)."""
    old = final.with_name(f".{final.name}.bundle-old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(stage, final)
    shutil.rmtree(old, ignore_errors=True)


def install(v: Verified, *, cache: Path, place_root: Path, load_images: ImageLoader,
            meter: Meter | None = None) -> Installed:
    meter = meter or Meter()
    placer = _Placer(Path(cache), Path(place_root))
    meter.start(f"load {v.path.name}", v.payload_bytes)
    try:
        with TarReader(v.path) as tr:
            members = Members(tr)
            for m in members:
                entry = v.entries.get(m.name)
                if m.name.startswith("images/"):
                    members.push(m)
                    prefix = "/".join(m.name.split("/")[:2]) + "/"
                    stream = retar(_image_run(tr, members, prefix, v, meter))
                    placer.out.images += load_images(stream)
                    for _ in stream:  # a loader that stopped early must not desynchronise the tar
                        pass
                elif entry is not None and entry.kind == "file":
                    where = placer.destination(m.name)
                    if where is not None:  # wheels and the head stay in the bundle: not read again
                        placer.write(where[0], where[1], checked(tr.member(m), entry, meter))
        placer.commit()
    except BaseException:
        placer.abort()
        raise
    meter.finish()
    return placer.out
