"""Docker build context for a rendered deployment and its content-addressed image tag.

The renderer writes the Dockerfile next to deployment-specific files (model.env, compose.yaml,
plan.json); only the build inputs go into a separate context directory so that the image tag
(a hash of exactly what the builder sees) is the same for every card on one target and an
unchanged context never rebuilds.

Closed data centres: the builder stage gets the host CA bundle (``ca.crt``) and a local wheel
folder (``wheels/``). Neither reaches the final image (see images/cpu.Dockerfile.j2).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..errors import BadInput

CONTEXT_DIRNAME = ".build-context"
# Host CA bundles tried in order; DEPLOYKIT_CA_BUNDLE / PIP_CERT / REQUESTS_CA_BUNDLE win.
_CA_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                  "/etc/ssl/cert.pem")
# Build args forwarded from the environment to `docker build` (never written to the image env).
BUILD_ARG_NAMES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST",
                   "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def ca_bundle() -> Path | None:
    for var in ("DEPLOYKIT_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        val = os.environ.get(var)
        if val and Path(val).is_file():
            return Path(val)
    for cand in _CA_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    try:  # last resort: certifi's bundle, if installed
        import certifi

        return Path(certifi.where())
    except ImportError:
        return None


def wheel_dirs() -> list[Path]:
    """Host folders whose wheels are copied into the context (DEPLOYKIT_WHEELS, os.pathsep list).

    Default: /opt/wheels when it exists (where this project's CI keeps the CPU torch wheel)."""
    env = os.environ.get("DEPLOYKIT_WHEELS")
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path("/opt/wheels")] if Path("/opt/wheels").is_dir() else []


def build_args() -> dict[str, str]:
    return {k: os.environ[k] for k in BUILD_ARG_NAMES if os.environ.get(k)}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        if dst.exists():
            if dst.stat().st_size == src.stat().st_size:
                return
            dst.unlink()
        os.link(src, dst)  # same filesystem: instant, no extra disk
    except OSError:
        shutil.copy2(src, dst)


def prepare_context(rendered_dir: Path, ctx: Path | None = None) -> Path:
    """Fill ``ctx`` (default ``rendered_dir/.build-context``) with Dockerfile, ca.crt and wheels/.

    A persistent ``ctx`` outside the rendered dir keeps the wheel copies across renders."""
    dockerfile = rendered_dir / "Dockerfile"
    if not dockerfile.is_file():
        raise BadInput(f"no Dockerfile in {rendered_dir}", hint="run `deploykit render` first")
    ctx = ctx or rendered_dir / CONTEXT_DIRNAME
    ctx.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dockerfile, ctx / "Dockerfile")
    return add_build_inputs(ctx)


def add_build_inputs(ctx: Path) -> Path:
    """Put what the Dockerfile templates COPY (ca.crt, wheels/) beside ``ctx``/Dockerfile."""
    (ctx / "wheels").mkdir(parents=True, exist_ok=True)
    ca = ca_bundle()
    if ca is not None:
        shutil.copyfile(ca, ctx / "ca.crt")
    else:  # COPY needs the file; an empty bundle means pip uses its own certifi bundle
        (ctx / "ca.crt").write_bytes(b"")
    wanted: dict[str, Path] = {}
    for d in wheel_dirs():
        for whl in sorted(d.glob("*.whl")):
            wanted.setdefault(whl.name, whl)
    for stale in (ctx / "wheels").glob("*.whl"):
        if stale.name not in wanted:
            stale.unlink()
    for name, src in wanted.items():
        _link_or_copy(src, ctx / "wheels" / name)
    keep = ctx / "wheels" / ".keep"  # COPY of an empty folder still needs the folder
    if not keep.exists():
        keep.write_text("")
    return ctx


def _file_digest(path: Path) -> str:
    from ..weights.verify import sha256_file

    return sha256_file(path)


def context_hash(ctx: Path) -> str:
    """sha256 over (relative path, content digest) of every file in the context, sorted."""
    h = hashlib.sha256()
    for p in sorted(q for q in ctx.rglob("*") if q.is_file()):
        rel = p.relative_to(ctx).as_posix()
        h.update(rel.encode() + b"\0" + _file_digest(p).encode() + b"\n")
    return h.hexdigest()


def content_tag(repo: str, digest: str) -> str:
    """Image reference for a context digest, in ``repo`` (the plan image without its tag)."""
    return f"{repo}:ctx-{digest[:16]}"


def image_repo(image: str) -> str:
    """'deploykit/vllm-cpu:0.32.0' -> 'deploykit/vllm-cpu' (a registry port colon is kept)."""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return image[: len(image) - len(last) + last.index(":")]
    return image
