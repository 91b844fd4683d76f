"""Thin wrappers over the hub clients' own APIs (no hand-written HTTP).

Each returns (resolved_commit, {path: {size, sha256}}) for the files a pull would fetch, and
downloads with the client's snapshot_download (which resumes from its .incomplete files).
Tokens are never passed: the clients read HF_TOKEN / MODELSCOPE_API_TOKEN / their login files.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from deploy_kit.errors import BadInput, RuntimeFailure
from deploy_kit.weights.spec import WeightSpec, is_commit


def wanted(path: str, spec: WeightSpec) -> bool:
    # fnmatch semantics like huggingface_hub's filter_repo_objects ("*" matches "/").
    if any(fnmatch.fnmatch(path, p) for p in spec.ignore_patterns()):
        return False
    return any(fnmatch.fnmatch(path, p) for p in spec.allow_patterns())


def hf_listing(spec: WeightSpec) -> tuple[str, dict[str, dict]]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi(endpoint=_hf_endpoint()).model_info(spec.repo_id, revision=spec.revision, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise BadInput(f"huggingface: {spec.repo_id}@{spec.revision or 'main'} not found",
                       field="model.id", hint=type(exc).__name__) from None
    except (HfHubHTTPError, OSError) as exc:
        raise RuntimeFailure(f"huggingface: cannot list {spec.repo_id}: {_short(exc)}",
                             hint="check network / HF_ENDPOINT, or use --offline") from None
    files = {}
    for s in info.siblings or []:
        if not wanted(s.rfilename, spec):
            continue
        lfs = s.lfs
        files[s.rfilename] = {"size": (lfs.size if lfs else s.size),
                              "sha256": (lfs.sha256 if lfs else None)}
    return info.sha, files


def hf_download(spec: WeightSpec, commit: str, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        # local_dir: real files in dest; the client keeps its resume metadata in dest/.cache (hidden).
        snapshot_download(spec.repo_id, revision=commit, local_dir=str(dest), endpoint=_hf_endpoint(),
                          allow_patterns=spec.allow_patterns(), ignore_patterns=spec.ignore_patterns())
    except Exception as exc:  # network errors come in many types; report one line
        raise RuntimeFailure(f"huggingface download of {spec.repo_id} failed: {_short(exc)}",
                             hint="run pull again to resume") from None


def ms_listing(spec: WeightSpec) -> tuple[str | None, dict[str, dict]]:
    """List through the same legacy client call that snapshot_download makes (repo/files).

    modelscope's compat HubApi.get_model_files keeps only Path and Size, so the raw entries
    (Sha256, per-file Revision, CommittedDate, Type) come from modelscope_hub's client directly.
    """
    from modelscope_hub.api import HubApi
    from modelscope_hub.errors import AuthenticationError, NotExistError, PermissionDeniedError

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
    except (NotExistError, AuthenticationError, PermissionDeniedError) as exc:
        raise BadInput(f"modelscope: {spec.repo_id}@{rev} not found or not accessible",
                       field="model.id", hint=type(exc).__name__) from None
    except Exception as exc:
        raise RuntimeFailure(f"modelscope: cannot list {spec.repo_id}@{rev}: {_short(exc)}",
                             hint="check network / MODELSCOPE_ENDPOINT, or use --offline") from None
    blobs = [e for e in entries if (e.get("Type") or "blob") != "tree" and e.get("Path")]
    files = {e["Path"]: {"size": e.get("Size"), "sha256": e.get("Sha256") or None}
             for e in blobs if wanted(e["Path"], spec)}
    return _ms_commit(spec, blobs), files


def _ms_commit(spec: WeightSpec, blobs: list[dict]) -> str | None:
    """The commit to record: a pinned sha as given, else the newest per-file commit listed.

    The repo/files API gives no repo-head commit, only each file's last commit (Revision) and its
    time (CommittedDate). The newest of those over the whole tree is the head unless the head
    commit only deleted files; without dates there is no way to order them, so record none.
    """
    if is_commit(spec.revision):
        return spec.revision
    revs = {e.get("Revision") for e in blobs if e.get("Revision")}
    if len(revs) == 1:
        return revs.pop()
    dated = [e for e in blobs if e.get("Revision") and e.get("CommittedDate") is not None]
    if not revs or len(dated) != len(blobs):
        return None
    return max(dated, key=lambda e: int(e["CommittedDate"]))["Revision"]


def ms_download(spec: WeightSpec, commit: str | None, dest: Path) -> None:
    from modelscope import snapshot_download

    _ms_fresh_config()
    try:
        # Download at the requested name (the hub's per-file commits are not a tree to fetch from).
        # cache_dir only holds the client's .lock files when local_dir is set: keep them hidden
        # inside dest like huggingface_hub's .cache, not in ~/.cache/modelscope.
        snapshot_download(spec.repo_id, revision=spec.revision or "master", local_dir=str(dest),
                          cache_dir=str(dest / ".cache" / "modelscope"),
                          allow_patterns=spec.allow_patterns(), ignore_patterns=spec.ignore_patterns())
    except Exception as exc:
        raise RuntimeFailure(f"modelscope download of {spec.repo_id} failed: {_short(exc)}",
                             hint="run pull again to resume") from None


def _ms_fresh_config() -> None:
    # The client's default HubConfig is a process-wide singleton that keeps what the environment
    # said at first use; rebuild it so MODELSCOPE_ENDPOINT (or the deprecated MODELSCOPE_DOMAIN),
    # MODELSCOPE_API_TOKEN and MODELSCOPE_CACHE/HOME are read now, as HF_ENDPOINT is below.
    import warnings

    from modelscope_hub.config import get_default_config, set_default_config

    set_default_config(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MODELSCOPE_DOMAIN deprecation
        get_default_config()


def _hf_endpoint() -> str | None:
    # Read at call time: the client reads HF_ENDPOINT only once, at import.
    import os

    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
