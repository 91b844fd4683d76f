"""The bundle format: member names, the head/manifest, streaming helpers, architecture names."""

from __future__ import annotations

import hashlib
import io
import platform
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Iterable, Iterator, Literal, Protocol

from ..errors import VerificationFailed

FORMAT = "deploykit-bundle/1"
HEAD = "bundle.json"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
PREFIXES = ("images/", "weights/", "rendered/", "cards/", "wheels/")
TAR_FORMAT: Literal[2] = tarfile.PAX_FORMAT  # long names, members over 8 GiB
CHUNK = 1 << 20
MAX_META_BYTES = 64 << 20  # head/manifest are JSON we parse: bounded before parsing
MEMBER_OVERHEAD = 3 * tarfile.BLOCKSIZE  # header + pax header + padding, upper bound per member

# Docker's GOARCH names and the kernel's (uname -m) for the same machines.
_ARCH_ALIASES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                 "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def docker_arch(name: str) -> str:
    """'x86_64' -> 'amd64', 'aarch64' -> 'arm64' (Docker's names, as `docker image inspect` says)."""
    return _ARCH_ALIASES.get(name.lower(), name.lower())


def host_arch() -> str:
    return docker_arch(platform.machine())


class Readable(Protocol):
    """Anything with ``read(n)``: files, tar member slices, hashing wrappers."""

    def read(self, n: int = -1, /) -> bytes: ...


class Meter:
    """Progress sink for the long parts; the CLI passes a Rich-backed one, tests the silent base."""

    def start(self, label: str, total: int | None) -> None:
        """A new long part begins (total bytes when known)."""

    def advance(self, n: int) -> None:
        """n more bytes of the current part went through."""

    def finish(self) -> None:
        """The current part is done."""


class HashingReader:
    """Read-through wrapper: sha256 and byte count of exactly what was read; feeds a Meter.

    A plain object with ``read`` (not io.RawIOBase): no readinto copy per chunk."""

    def __init__(self, raw: Readable, meter: Meter | None = None) -> None:
        self.raw, self.meter = raw, meter
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        # Fill the request unless the source ends: tarfile.addfile treats a short read as EOF.
        while n > 0 and data and len(data) < n:
            more = self.raw.read(n - len(data))
            if not more:
                break
            data += more
        self.sha.update(data)
        self.count += len(data)
        if self.meter is not None and data:
            self.meter.advance(len(data))
        return data

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


class IterReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the Docker SDK's `image.save()` stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(buf), len(self._buf))
        buf[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def hash_stream(f: Readable, meter: Meter | None = None) -> tuple[str, int]:
    """(sha256, size) of a stream, read in bounded chunks."""
    sha, count = hashlib.sha256(), 0
    while chunk := f.read(CHUNK):
        sha.update(chunk)
        count += len(chunk)
        if meter is not None:
            meter.advance(len(chunk))
    return sha.hexdigest(), count


def safe_name(name: str) -> str:
    """A member name a bundle may hold: relative, no '..', under a known prefix (else exit 5)."""
    p = PurePosixPath(name)
    top = name in (HEAD, MANIFEST, MANIFEST_SUM)
    if (p.is_absolute() or ".." in p.parts or "\\" in name or not name
            or not (top or any(name.startswith(pre) for pre in PREFIXES))):
        raise VerificationFailed(f"bundle member {name!r} has an unsafe or unknown path",
                                 hint="not a deploykit bundle, or a tampered one")
    return name


@dataclass(frozen=True)
class Entry:
    """One manifest line: what a member is, as recorded when the bundle was written."""

    name: str
    kind: str            # file | dir | symlink
    size: int = 0
    sha256: str = ""
    link: str = ""

    def as_dict(self) -> dict:
        d: dict = {"name": self.name, "kind": self.kind}
        if self.kind == "file":
            d.update(size=self.size, sha256=self.sha256)
        if self.kind == "symlink":
            d["link"] = self.link
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Entry":
        return cls(name=safe_name(str(d["name"])), kind=str(d["kind"]), size=int(d.get("size", 0)),
                   sha256=str(d.get("sha256", "")), link=str(d.get("link", "")))


def kind_of(info: tarfile.TarInfo) -> str:
    if info.isfile():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    raise VerificationFailed(f"bundle member {info.name!r} is a {info.type!r} entry, not a file, "
                             "folder or symlink")


def file_info(name: str, size: int, mtime: float = 0, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), mode
    info.uname = info.gname = ""
    return info


def retar(members: Iterable[tuple[tarfile.TarInfo, Callable[[], Readable | None]]]) -> Iterator[bytes]:
    """Encode (TarInfo, opener) pairs as a tar stream, chunk by chunk (what `docker load` reads).

    Pure generator over public TarInfo.tobuf: no file, no pipe, no thread; bounded memory."""
    for info, opener in members:
        yield info.tobuf(TAR_FORMAT, "utf-8", "surrogateescape")
        if info.isfile():
            f = opener()
            left = info.size
            while left > 0:
                chunk = f.read(min(CHUNK, left)) if f is not None else b""
                if not chunk:
                    raise VerificationFailed(f"bundle member {info.name!r} ended early")
                left -= len(chunk)
                yield chunk
            pad = -info.size % tarfile.BLOCKSIZE
            if pad:
                yield b"\0" * pad
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
