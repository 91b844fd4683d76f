"""Thin wrappers over the hub clients' own APIs (no hand-written HTTP).

Each returns (resolved_commit, {path: {size, sha256}}) for the files a pull would fetch, and
downloads with the client's snapshot_download (which resumes from its .incomplete files).
Tokens are never passed: the clients read HF_TOKEN / MODELSCOPE_API_TOKEN / their login files.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from deploy_kit.errors import BadInput, RuntimeFailure
from deploy_kit.weights.spec import WeightSpec


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


def ms_listing(spec: WeightSpec) -> tuple[str, dict[str, dict]]:
    from modelscope.hub.api import HubApi

    api = HubApi()
    rev = spec.revision or "master"
    try:
        entries = api.get_model_files(spec.repo_id, revision=rev, recursive=True)
    except Exception as exc:
        raise RuntimeFailure(f"modelscope: cannot list {spec.repo_id}@{rev}: {_short(exc)}",
                             hint="check network / MODELSCOPE_DOMAIN, or use --offline") from None
    files = {}
    commit = rev
    for e in entries:
        if e.get("Type") == "tree" or not wanted(e["Path"], spec):
            continue
        files[e["Path"]] = {"size": e.get("Size"), "sha256": e.get("Sha256") or None}
        commit = e.get("Revision") or commit
    return commit, files


def ms_download(spec: WeightSpec, commit: str, dest: Path) -> None:
    from modelscope import snapshot_download

    try:
        snapshot_download(spec.repo_id, revision=spec.revision or commit, local_dir=str(dest),
                          allow_patterns=spec.allow_patterns(), ignore_patterns=spec.ignore_patterns())
    except Exception as exc:
        raise RuntimeFailure(f"modelscope download of {spec.repo_id} failed: {_short(exc)}",
                             hint="run pull again to resume") from None


def _hf_endpoint() -> str | None:
    # Read at call time: the client reads HF_ENDPOINT only once, at import.
    import os

    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
