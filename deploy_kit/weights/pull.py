"""`deploykit pull`: list, check disk, download, verify, record a .deploykit.json manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from deploy_kit import paths
from deploy_kit.errors import BadInput, Infeasible, VerificationFailed
from deploy_kit.weights import verify
from deploy_kit.weights.spec import WeightSpec, is_commit

MANIFEST = ".deploykit.json"
_MARGIN = 256 * 1024 * 1024  # headroom beyond the listed bytes


@dataclass
class PullResult:
    path: Path
    manifest: dict
    downloaded: bool


def model_dir(spec: WeightSpec, cache: Path | None = None) -> Path:
    if spec.source == "local":
        return Path(spec.path).expanduser().resolve()
    return Path(cache or paths.cache_dir()) / spec.name


def read_manifest(d: Path) -> dict | None:
    try:
        return json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(d: Path, data: dict) -> None:
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, d / MANIFEST)


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


def _cached_ok(d: Path, spec: WeightSpec, man: dict | None) -> bool:
    """Manifest matches the request and every recorded file is present with its size."""
    if not man or man.get("source") != spec.source or man.get("repo") != spec.repo_id:
        return False
    if spec.revision and spec.revision not in (man.get("requested_revision"), man.get("commit")):
        return False
    return all((d / f["path"]).is_file() and (d / f["path"]).stat().st_size == f["size"]
               for f in man.get("files", []))


def _listing_matches(man: dict, hub_files: dict[str, dict]) -> bool:
    """No commit to compare (a ModelScope listing without one): compare the listed files instead."""
    have = {f["path"]: f for f in man.get("files", [])}
    return set(hub_files) <= set(have) and all(
        (w.get("size") is None or w["size"] == have[p]["size"])
        and (not w.get("sha256") or w["sha256"] == have[p]["sha256"]) for p, w in hub_files.items())


def pull(spec: WeightSpec, *, cache: Path | None = None, offline: bool = False,
         dry_run: bool = False, log=print) -> PullResult:
    spec.check()
    offline = offline or _offline()
    d = model_dir(spec, cache)
    if spec.source == "local":
        return _pull_local(spec, d)
    d.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    # Lock beside (not inside) the mounted dir so two pulls of one model serialise.
    with FileLock(str(d.parent / f".{spec.name}.lock")):
        man = read_manifest(d)
        if spec.source == "gguf":
            return _pull_gguf(spec, d, man, dry_run)
        if offline:
            if not man:
                raise BadInput(f"--offline: {spec.name} is not in the cache ({d})",
                               hint="pull once with network")
            files = verify.verify_dir(d, spec.expected, {f["path"]: f for f in man["files"]},
                                      spec.weights_format)
            log(f"{spec.name}: cache verified offline ({len(files)} files, commit {man.get('commit')})")
            return PullResult(d, man, False)
        # A pinned full commit already in the manifest needs no network at all.
        if is_commit(spec.revision) and _cached_ok(d, spec, man):
            log(f"{spec.name}: already cached at {man['commit']}")
            return PullResult(d, man, False)
        from deploy_kit.weights import hubs

        listing, download = ((hubs.hf_listing, hubs.hf_download) if spec.source == "huggingface"
                             else (hubs.ms_listing, hubs.ms_download))
        commit, hub_files = listing(spec)
        at = commit or spec.revision or "master"  # a ModelScope listing may carry no commit
        if not hub_files:
            raise BadInput(f"{spec.repo_id}@{at}: no {spec.weights_format} weights to fetch",
                           field="model.weights_format")
        if (man and man.get("commit") == commit and _cached_ok(d, spec, man)
                and (commit or _listing_matches(man, hub_files))):
            log(f"{spec.name}: already cached at {at}")
            return PullResult(d, man, False)
        total = sum(f.get("size") or 0 for f in hub_files.values())
        present = sum((d / p).stat().st_size for p in hub_files if (d / p).is_file())
        log(f"{spec.name}: {spec.source} {spec.repo_id}@{at}: {len(hub_files)} files, "
            f"{total / 2**30:.2f} GiB")
        if dry_run:
            for p, f in sorted(hub_files.items()):
                log(f"  {p}  {f.get('size')}")
            return PullResult(d, {"commit": commit, "files": hub_files}, False)
        check_disk(d, max(0, total - present))
        d.mkdir(parents=True, exist_ok=True)
        download(spec, commit, d)
        try:
            files = verify.verify_dir(d, spec.expected, hub_files, spec.weights_format)
        except VerificationFailed as exc:
            if "config.json contradicts" in exc.message:
                raise
            # A corrupted file: drop the bad one(s) and fetch once more, then give up.
            _drop_bad(d, hub_files)
            download(spec, commit, d)
            files = verify.verify_dir(d, spec.expected, hub_files, spec.weights_format)
        man = {"name": spec.name, "source": spec.source, "repo": spec.repo_id,
               "requested_revision": spec.revision, "commit": commit, "files": files,
               "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_manifest(d, man)
        log(f"{spec.name}: verified {len(files)} files -> {d}")
        return PullResult(d, man, True)


def _drop_bad(d: Path, hub_files: dict[str, dict]) -> None:
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
            p.unlink()
            # the client's local_dir metadata would otherwise claim the file is up to date
            meta = d / ".cache" / "huggingface" / "download" / (rel + ".metadata")
            meta.unlink(missing_ok=True)


def _pull_local(spec: WeightSpec, d: Path) -> PullResult:
    if not d.is_dir():
        raise BadInput(f"local weights directory {d} does not exist", field="model.path")
    files = verify.verify_dir(d, spec.expected, None, spec.weights_format)
    # Used in place: nothing copied, nothing written into the user's directory.
    man = {"name": spec.name, "source": "local", "repo": spec.repo_id, "path": str(d),
           "requested_revision": None, "commit": None, "files": files}
    return PullResult(d, man, False)


def _pull_gguf(spec: WeightSpec, d: Path, man: dict | None, dry_run: bool) -> PullResult:
    if dry_run:
        return PullResult(d, {"gguf": [spec.gguf_package, spec.gguf_file]}, False)
    try:
        from deploy_kit.weights.gguf_convert import convert_gguf_package
    except ImportError as exc:
        raise BadInput(f"gguf source unavailable: {exc}") from None
    out = Path(convert_gguf_package(spec.gguf_package, spec.gguf_file, d))
    files = verify.verify_dir(out, spec.expected, None, "safetensors")
    man = {"name": spec.name, "source": "gguf", "repo": spec.repo_id, "package": spec.gguf_package,
           "file": spec.gguf_file, "requested_revision": None, "commit": None, "files": files}
    _write_manifest(out, man)
    return PullResult(out, man, True)
