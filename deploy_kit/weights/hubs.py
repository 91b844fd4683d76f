"""Thin wrappers over the hub clients' own APIs (no hand-written HTTP).

Each returns (resolved_commit, {path: {size, sha256}}) for the files a pull would fetch, and
downloads with the client's snapshot_download (which resumes from its .incomplete files).
Tokens are never passed: the clients read HF_TOKEN / MODELSCOPE_API_TOKEN / their login files.

Every call is bounded in time: huggingface_hub 2.x builds its HTTP client with no timeout at all,
so the listing passes one and downloads use its HF_HUB_DOWNLOAD_TIMEOUT / etag timeouts; the
ModelScope client bounds its own calls (MODELSCOPE_API_TIMEOUT, defaulted here to 30 s;
MODELSCOPE_DOWNLOAD_TIMEOUT 60 s idle, 3600 s per file). Whatever a client raises becomes one
line and an exit code here.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import importlib
import os
import re
from pathlib import Path
from types import ModuleType

from deploy_kit.errors import BadInput, RuntimeFailure
from deploy_kit.weights.spec import WeightSpec, is_commit
from deploy_kit.weights.verify import safe_rel

HF_API_TIMEOUT_S = 30.0  # one listing request; the hub answers in well under a second
HF_ETAG_TIMEOUT_S = 30.0
MS_API_TIMEOUT_S = 30.0
HF_WEB = "https://huggingface.co"
MS_WEB = "https://modelscope.cn"


def client(module: str, package: str) -> ModuleType:
    """Import a hub client module, or exit 2 naming what to install."""
    if module.startswith("modelscope"):
        # Read once, at the client's import: a silent server costs at most 30 s per attempt instead
        # of the default 60 s (the operator's own setting wins).
        os.environ.setdefault("MODELSCOPE_API_TIMEOUT", str(int(MS_API_TIMEOUT_S)))
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInput(f"{package} is not installed (needed to pull from the hub)",
                       hint=install_hint(package)) from None


def install_hint(dist: str) -> str:
    """The pip command that brings `dist` back, read from deploykit's own installed metadata (so it
    follows pyproject: a core dependency is named with its pin, an optional one by its extra)."""
    from importlib import metadata

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    try:
        reqs = metadata.requires("deploykit") or []
    except metadata.PackageNotFoundError:
        reqs = []
    extras = []
    for req in reqs:
        name = re.match(r"[A-Za-z0-9._-]+", req)
        if not name or norm(name.group(0)) != norm(dist):
            continue
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if not extra:
            return f"pip install '{req.split(';')[0].strip()}': a core dependency of deploykit"
        extras.append(extra.group(1))
    named = [e for e in extras if e != "all"]
    return f"pip install 'deploykit[{named[0]}]'" if named else f"pip install '{dist}'"


def review_url(spec: WeightSpec, commit: str) -> str:
    """Where a person reads the repository's code at exactly this commit."""
    if spec.source == "huggingface":
        return f"{_hf_endpoint() or HF_WEB}/{spec.repo_id}/tree/{commit}"
    # The file listing at exactly that commit, from the API the client itself calls (each entry's
    # Path is fetched from .../repo?Revision=<commit>&FilePath=<Path>).
    base = (os.environ.get("MODELSCOPE_ENDPOINT") or MS_WEB).rstrip("/")
    return f"{base}/api/v1/models/{spec.repo_id}/repo/files?Revision={commit}&Recursive=True"


def disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception chain (clients wrap the OSError)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _download_failed(what: str, dest: Path, exc: BaseException) -> RuntimeFailure:
    if disk_full(exc):
        return RuntimeFailure(f"{what}: disk full writing {dest}",
                              hint="free space (deploykit cache ls / cache rm), then pull again")
    return RuntimeFailure(f"{what}: {_short(exc)}", hint="run pull again to resume")


def wanted(path: str, spec: WeightSpec) -> bool:
    """Would a pull fetch this listed path? Raises ValueError for a wanted path that would land
    outside the model dir ("../x.safetensors", "/etc/x.py"): the listing is hub content, untrusted.
    """
    # fnmatch semantics like huggingface_hub's filter_repo_objects ("*" matches "/").
    if any(fnmatch.fnmatch(path, p) for p in spec.ignore_patterns()):
        return False
    if not any(fnmatch.fnmatch(path, p) for p in spec.allow_patterns()):
        return False
    if not safe_rel(path):
        raise ValueError(f"unsafe file path {path[:80]!r}")
    return True


def exactly(files: list[str]) -> list[str]:
    """allow_patterns naming exactly the vetted files: the clients list the repository again when
    they download, and must fetch nothing that listing adds (the ModelScope client joins listed
    paths onto local_dir unchecked)."""
    return [glob.escape(f) for f in files]


def hf_listing(spec: WeightSpec) -> tuple[str | None, dict[str, dict]]:
    """(commit the revision resolves to: model_info(...).sha, wanted files with size/sha256)."""
    hf = client("huggingface_hub", "huggingface_hub")
    errors = client("huggingface_hub.errors", "huggingface_hub")
    try:
        info = hf.HfApi(endpoint=_hf_endpoint()).model_info(
            spec.repo_id, revision=spec.revision, files_metadata=True, timeout=HF_API_TIMEOUT_S)
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as exc:
        raise BadInput(f"huggingface: {spec.repo_id}@{spec.revision or 'main'} not found",
                       field="model.id", hint=type(exc).__name__) from None
    except Exception as exc:  # httpx2/OSError/JSON/schema errors: the hub is unreachable or odd
        raise RuntimeFailure(f"huggingface: cannot list {spec.repo_id}: {_short(exc)}",
                             hint="check network / HF_ENDPOINT, or use --offline") from None
    try:
        return _hf_files(spec, info)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RuntimeFailure(f"huggingface: malformed file listing for {spec.repo_id} ({_short(exc)})",
                             hint="check HF_ENDPOINT points at a Hugging Face hub") from None


def _hf_files(spec: WeightSpec, info) -> tuple[str | None, dict[str, dict]]:
    if info.sha is not None and not is_commit(info.sha):  # a mirror may omit it; never garble it
        raise ValueError(f"commit {str(info.sha)[:50]!r} is not a sha")
    files: dict[str, dict] = {}
    for s in info.siblings or []:
        if not isinstance(s.rfilename, str) or not wanted(s.rfilename, spec):
            continue
        lfs = s.lfs
        size = lfs.size if lfs else s.size
        sha = lfs.sha256 if lfs else None
        if not (size is None or (type(size) is int and size >= 0)) or not (sha is None or _is_sha256(sha)):
            raise ValueError(f"{s.rfilename[:80]}: bad size or sha256")
        files[s.rfilename] = {"size": size, "sha256": sha}
    return info.sha, files


def _is_sha256(v: object) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def hf_download(spec: WeightSpec, commit: str | None, dest: Path, files: list[str]) -> None:
    import warnings

    hf = client("huggingface_hub", "huggingface_hub")
    try:
        with warnings.catch_warnings():
            # its "not enough free disk space" UserWarning repeats what the ENOSPC line below says
            warnings.filterwarnings("ignore", category=UserWarning, module="huggingface_hub")
            _hf_snapshot(hf, spec, commit, dest, files)
    except Exception as exc:  # network errors come in many types; report one line
        raise _download_failed(f"huggingface download of {spec.repo_id} failed", dest, exc) from None


def _hf_snapshot(hf: ModuleType, spec: WeightSpec, commit: str | None, dest: Path, files: list[str]) -> None:
    # local_dir: real files in dest; the client keeps its resume metadata in dest/.cache (hidden).
    hf.snapshot_download(spec.repo_id, revision=commit or spec.revision, local_dir=str(dest), endpoint=_hf_endpoint(),
                         allow_patterns=exactly(files), etag_timeout=HF_ETAG_TIMEOUT_S)


def ms_listing(spec: WeightSpec) -> tuple[str | None, dict[str, dict]]:
    """List through the same legacy client call that snapshot_download makes (repo/files).

    modelscope's compat HubApi.get_model_files keeps only Path and Size, so the raw entries
    (Sha256, per-file Revision, CommittedDate, Type) come from modelscope_hub's client directly.
    """
    HubApi = client("modelscope_hub.api", "modelscope-hub").HubApi
    ms_errors = client("modelscope_hub.errors", "modelscope-hub")

    rev = spec.revision or "master"
    _ms_fresh_config()
    api = HubApi()
    try:
        # Same endpoint choice as snapshot_download: MODELSCOPE_ENDPOINT as is, else .cn then .ai.
        api = HubApi(endpoint=api.resolve_endpoint_for_read(spec.repo_id, repo_type="model"))
    except Exception:
        pass
    try:
        entries = api.legacy.list_repo_files(spec.repo_id, "model", revision=rev, recursive=True)
    except (ms_errors.NotExistError, ms_errors.AuthenticationError,
            ms_errors.PermissionDeniedError) as exc:
        raise BadInput(f"modelscope: {spec.repo_id}@{rev} not found or not accessible",
                       field="model.id", hint=type(exc).__name__) from None
    except Exception as exc:
        raise RuntimeFailure(f"modelscope: cannot list {spec.repo_id}@{rev}: {_short(exc)}",
                             hint="check network / MODELSCOPE_ENDPOINT, or use --offline") from None
    try:
        blobs = [e for e in entries if (e.get("Type") or "blob") != "tree" and e.get("Path")]
        files = {e["Path"]: _ms_file(e) for e in blobs if wanted(e["Path"], spec)}
        return _ms_commit(spec, blobs), files
    except (AttributeError, TypeError, ValueError) as exc:
        raise RuntimeFailure(f"modelscope: malformed file listing for {spec.repo_id} ({_short(exc)})",
                             hint="check MODELSCOPE_ENDPOINT points at a ModelScope hub") from None


def _ms_file(e: dict) -> dict:
    size, sha = e.get("Size"), e.get("Sha256") or None
    if not isinstance(e["Path"], str) or not (size is None or (type(size) is int and size >= 0)) \
            or not (sha is None or _is_sha256(sha)):
        raise ValueError(f"{str(e['Path'])[:80]}: bad size or sha256")
    return {"size": size, "sha256": sha}


def _ms_commit(spec: WeightSpec, blobs: list[dict]) -> str | None:
    """The commit to record: a pinned sha as given, else the newest per-file commit listed.

    The repo/files API gives no repo-head commit, only each file's last commit (Revision) and its
    time (CommittedDate). The newest of those over the whole tree is the head unless the head
    commit only deleted files; without dates there is no way to order them, so record none.
    """
    if is_commit(spec.revision):
        return spec.revision
    revs = {e.get("Revision") for e in blobs if e.get("Revision")}
    if not all(is_commit(r) for r in revs):
        raise ValueError("a listed Revision is not a commit sha")
    if len(revs) == 1:
        return revs.pop()
    dated = [e for e in blobs if e.get("Revision") and e.get("CommittedDate") is not None]
    if not revs or len(dated) != len(blobs):
        return None
    return max(dated, key=lambda e: int(e["CommittedDate"]))["Revision"]


def ms_download(spec: WeightSpec, commit: str | None, dest: Path, files: list[str]) -> None:
    snapshot_download = client("modelscope", "modelscope").snapshot_download
    _ms_fresh_config()
    try:
        # Download at the requested name (the hub's per-file commits are not a tree to fetch from).
        # cache_dir only holds the client's .lock files when local_dir is set: keep them hidden
        # inside dest like huggingface_hub's .cache, not in ~/.cache/modelscope.
        snapshot_download(spec.repo_id, revision=spec.revision or "master", local_dir=str(dest),
                          cache_dir=str(dest / ".cache" / "modelscope"),
                          allow_patterns=exactly(files))
    except Exception as exc:
        raise _download_failed(f"modelscope download of {spec.repo_id} failed", dest, exc) from None


def _ms_fresh_config() -> None:
    # The client's default HubConfig is a process-wide singleton that keeps what the environment
    # said at first use; rebuild it so MODELSCOPE_ENDPOINT (or the deprecated MODELSCOPE_DOMAIN),
    # MODELSCOPE_API_TOKEN and MODELSCOPE_CACHE/HOME are read now, as HF_ENDPOINT is below.
    import warnings

    config = client("modelscope_hub.config", "modelscope-hub")
    config.set_default_config(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MODELSCOPE_DOMAIN deprecation
        config.get_default_config()


def _hf_endpoint() -> str | None:
    # Read at call time: the client reads HF_ENDPOINT only once, at import.
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
