"""Write a bundle: stream every part into FILE.tar.partial, hashing on the way; rename at the end."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..errors import BadInput
from .fmt import (CHUNK, HEAD, MANIFEST, MANIFEST_SUM, MEMBER_OVERHEAD, TAR_FORMAT, Entry, HashingReader,
                  IterReader, Meter, file_info, kind_of)


@dataclass
class ImagePart:
    """One image: what `docker image inspect` says and a way to open its `docker save` stream."""

    index: int
    ref: str
    image_id: str
    architecture: str
    os: str
    size: int                                  # inspect Size: the estimate of the saved tar
    chunks: Callable[[], Iterable[bytes]]      # opens the save stream (called once, while writing)

    def head(self) -> dict:
        return {"index": self.index, "ref": self.ref, "id": self.image_id,
                "architecture": self.architecture, "os": self.os, "size": self.size}


@dataclass
class DirPart:
    """A directory stored under ``prefix`` (weights/<card>, rendered/<deployment>, wheels)."""

    prefix: str
    path: Path
    label: str
    skip: Callable[[str], bool] = lambda rel: False
    # Weights without a deploykit manifest get one written after their files (from the hashes).
    synth_manifest: dict | None = None
    files: list[tuple[str, int]] = field(default_factory=list)

    def scan(self) -> list[tuple[str, int]]:
        if not self.files:
            for p in sorted(self.path.rglob("*")):
                rel = p.relative_to(self.path).as_posix()
                if p.is_file() and not p.is_symlink() and not self.skip(rel):
                    self.files.append((rel, p.stat().st_size))
        return self.files


@dataclass
class Content:
    head: dict
    images: list[ImagePart] = field(default_factory=list)
    dirs: list[DirPart] = field(default_factory=list)
    files: list[tuple[str, Path]] = field(default_factory=list)   # (member name, source file)


def estimate(content: Content) -> int:
    """Bytes the bundle will take: payload + a bounded per-member tar overhead."""
    total, members = 0, 3
    for img in content.images:
        total += img.size * 102 // 100  # `docker save` adds layer tar headers and metadata: ~1 %
        members += 64  # layers/config/index of one image: generous
    for d in content.dirs:
        for _, size in d.scan():
            total += size
            members += 1
    for _, p in content.files:
        total += p.stat().st_size
        members += 1
    return total + members * MEMBER_OVERHEAD + (1 << 16)


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, entries: list[Entry] | None) -> None:
    import io

    tf.addfile(file_info(name, len(data)), io.BytesIO(data))
    if entries is not None:
        entries.append(Entry(name, "file", len(data), hashlib.sha256(data).hexdigest()))


def _add_image(tf: tarfile.TarFile, img: ImagePart, entries: list[Entry], meter: Meter) -> None:
    meter.start(f"image {img.ref}", img.size)
    with tarfile.open(fileobj=IterReader(img.chunks()), mode="r|", bufsize=CHUNK) as inner:
        for m in inner:
            kind = kind_of(m)
            info = tarfile.TarInfo(f"images/{img.index}/{m.name.removeprefix('./')}")
            info.type, info.mode, info.mtime, info.linkname = m.type, m.mode, int(m.mtime), m.linkname
            if kind == "file":
                info.size = m.size
                reader = HashingReader(inner.extractfile(m), meter)  # type: ignore[arg-type]
                tf.addfile(info, reader)
                entries.append(Entry(info.name, kind, m.size, reader.hexdigest()))
            else:
                tf.addfile(info)
                entries.append(Entry(info.name, kind, link=m.linkname if kind == "symlink" else ""))
    meter.finish()


def _add_dir(tf: tarfile.TarFile, part: DirPart, entries: list[Entry], meter: Meter) -> None:
    files = part.scan()
    meter.start(part.label, sum(s for _, s in files))
    hashed = []
    for rel, size in files:
        src = part.path / rel
        with open(src, "rb") as f:
            reader = HashingReader(f, meter)
            tf.addfile(file_info(f"{part.prefix}/{rel}", size, src.stat().st_mtime), reader)
        entries.append(Entry(f"{part.prefix}/{rel}", "file", size, reader.hexdigest()))
        hashed.append({"path": rel, "size": size, "sha256": reader.hexdigest()})
    if part.synth_manifest is not None:
        from ..weights.pull import MANIFEST as WEIGHTS_MANIFEST

        data = json.dumps({**part.synth_manifest, "files": hashed}, indent=2, sort_keys=True) + "\n"
        _add_bytes(tf, f"{part.prefix}/{WEIGHTS_MANIFEST}", data.encode(), entries)
    meter.finish()


def _finish(tf: tarfile.TarFile, head: dict, entries: list[Entry]) -> dict:
    manifest = {**head, "members": [e.as_dict() for e in entries]}
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _add_bytes(tf, MANIFEST, data, None)
    _add_bytes(tf, MANIFEST_SUM, f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n".encode(), None)
    return manifest


def write_bundle(content: Content, out: Path, meter: Meter | None = None) -> dict:
    """Stream ``content`` into ``out``; returns the manifest. Nothing named ``out`` exists until
    the last byte is on disk: the data goes to ``out.partial``, removed on any failure."""
    meter = meter or Meter()
    out = Path(out)
    if out.suffix != ".tar":
        raise BadInput(f"{out}: the bundle is a plain tar; name it FILE.tar", field="--out")
    partial = out.with_name(out.name + ".partial")
    entries: list[Entry] = []
    try:
        with open(partial, "wb") as raw:
            # Plain "w" on a file writes straight through (the "w|" stream mode re-buffers every chunk).
            with tarfile.open(fileobj=raw, mode="w", format=TAR_FORMAT) as tf:
                _add_bytes(tf, HEAD, json.dumps(content.head, indent=1, sort_keys=True).encode(), entries)
                for img in content.images:
                    _add_image(tf, img, entries, meter)
                for d in content.dirs:
                    _add_dir(tf, d, entries, meter)
                for name, src in content.files:
                    with open(src, "rb") as f:
                        reader = HashingReader(f)
                        tf.addfile(file_info(name, src.stat().st_size), reader)
                    entries.append(Entry(name, "file", reader.count, reader.hexdigest()))
                manifest = _finish(tf, content.head, entries)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest
