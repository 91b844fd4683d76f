"""The cache proves itself (real huggingface_hub against the fixture hub on 127.0.0.1).

"Already cached" only when every byte matches the manifest and the hub's listing; a file
corrupted at the same size or an edited config.json is fetched again; a killed download is
cleaned and never counted; `cache verify` and `cache rm` (only what deploykit wrote).
"""

from __future__ import annotations

from typing import Any

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy_kit.cli import main
from deploy_kit.weights import pull as pullmod
from deploy_kit.weights.cache import list_cache
from deploy_kit.weights.spec import WeightSpec
from tests.fixture_hub import CARD_FACTS, COMMIT, serve_hf

pytestmark = pytest.mark.integration

REPO = "org/tiny"
WANT = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    with serve_hf(tmp_path, monkeypatch, REPO) as h:
        yield h


def spec(**kw) -> WeightSpec:
    base: dict[str, Any] = dict(name="tiny", source="huggingface", repo_id=REPO, expected=dict(CARD_FACTS))
    base.update(kw)
    return WeightSpec(**base)


def gets(hub, since: int = 0) -> list[str]:
    """File names the client downloaded (GET), in order, from request `since` on."""
    return [p.rsplit("/", 1)[-1] for m, p, _ in hub.requests[since:] if m == "GET" and "/resolve/" in p]


def corrupt_keeping_size_and_mtime(p: Path) -> None:
    """Flip the last byte; put the old mtime back, so nothing but the bytes tells it changed."""
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_file_corrupted_at_same_size_is_fetched_again(hub):
    res = pullmod.pull(spec(), log=lambda m: None)
    target = res.path / "model.safetensors"
    corrupt_keeping_size_and_mtime(target)
    n, lines = len(hub.requests), []
    res2 = pullmod.pull(spec(), log=lines.append)
    assert res2.downloaded
    assert target.read_bytes() == hub.files["model.safetensors"]
    assert gets(hub, n) == ["model.safetensors"]  # only the bad file, once
    assert "tiny: model.safetensors: sha256 differs from the one recorded at pull time: fetching again" in lines
    assert not any("already cached" in x for x in lines)


def test_edited_config_json_is_fetched_again(hub):
    res = pullmod.pull(spec(), log=lambda m: None)
    cfg = res.path / "config.json"
    cfg.write_text(json.dumps(json.loads(cfg.read_text()), indent=4))  # same facts, other bytes
    n, lines = len(hub.requests), []
    assert pullmod.pull(spec(), log=lines.append).downloaded
    assert cfg.read_bytes() == hub.files["config.json"]
    assert gets(hub, n) == ["config.json"]
    assert any(x.startswith("tiny: config.json: s") and x.endswith("fetching again") for x in lines)


def test_file_missing_from_cache_is_fetched_again(hub):
    res = pullmod.pull(spec(), log=lambda m: None)
    (res.path / "tokenizer.json").unlink()
    n = len(hub.requests)
    assert pullmod.pull(spec(), log=lambda m: None).downloaded
    assert gets(hub, n) == ["tokenizer.json"]


def test_pinned_commit_with_corrupt_cache_goes_to_the_hub(hub):
    """The no-network fast path for a pinned commit also re-hashes: a bad byte sends it to the hub."""
    res = pullmod.pull(spec(revision=COMMIT), log=lambda m: None)
    n = len(hub.requests)
    assert not pullmod.pull(spec(revision=COMMIT), log=lambda m: None).downloaded
    assert len(hub.requests) == n  # no request at all
    corrupt_keeping_size_and_mtime(res.path / "tokenizer_config.json")
    assert pullmod.pull(spec(revision=COMMIT), log=lambda m: None).downloaded
    assert gets(hub, n) == ["tokenizer_config.json"]


def _pull_in_a_process(tmp_path: Path) -> subprocess.Popen:
    code = ("from deploy_kit.weights.pull import pull; from deploy_kit.weights.spec import WeightSpec; "
            f"pull(WeightSpec(name='tiny', source='huggingface', repo_id={REPO!r}, "
            f"expected={CARD_FACTS!r}), log=lambda m: None)")
    return subprocess.Popen([sys.executable, "-c", code], cwd=str(Path(__file__).parent.parent),
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_partial(d: Path, at_least: int, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in d.rglob("*.incomplete") if p.stat().st_size >= at_least] if d.exists() else []
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no partial download of {at_least} bytes under {d}")


def test_killed_download_is_never_counted_and_is_cleaned(hub, tmp_path, capsys):
    """A pull killed mid-file (SIGKILL: no cleanup runs) leaves huggingface_hub's partial file.

    huggingface_hub 2.x never reopens a partial (each attempt writes a process-unique
    .incomplete), so the next pull removes it; files finished before the kill are not fetched again.
    """
    import numpy as np
    from safetensors.numpy import save

    # bigger than huggingface_hub's 10 MiB read chunk, so the partial file holds bytes on disk
    hub.files["model.safetensors"] = save({"model.embed_tokens.weight": np.zeros((128, 64), "float32"),
                                           "lm_head.weight": np.zeros((3 * 2**20,), "float32")})
    hub.stall["model.safetensors"] = 11 * 2**20
    proc = _pull_in_a_process(tmp_path)
    d = tmp_path / "cache" / "tiny"
    partial = _wait_for_partial(d, 10 * 2**20)
    time.sleep(0.5)  # the other files (parallel workers) finish meanwhile
    proc.kill()
    proc.wait(30)
    hub.release()
    [row] = list_cache()
    payload = sum(p.stat().st_size for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    assert row["bytes"] == payload and row["partial_bytes"] == partial.stat().st_size == 10 * 2**20
    assert row["complete"] is False and row["commit"] is None
    assert main(["cache", "ls"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[2].split("\t")[:5] == ["tiny", f"{payload / 2**30:.2f}", "-", "incomplete", "10.0"]
    finished_before = set(gets(hub)) - {"model.safetensors"}
    n, lines = len(hub.requests), []
    res = pullmod.pull(spec(), log=lines.append)
    assert res.downloaded and not list(d.rglob("*.incomplete"))
    assert f"tiny: removed an interrupted download that cannot resume: {partial.name}" in lines
    assert sorted(gets(hub, n)) == sorted(set(WANT) - finished_before)
    assert list_cache()[0]["partial_bytes"] == 0 and list_cache()[0]["complete"] is True


def test_cache_verify_names_the_bad_file(hub, capsys):
    res = pullmod.pull(spec(), log=lambda m: None)
    assert main(["cache", "verify"]) == 0
    assert capsys.readouterr().out == "tiny: ok, 5 files verified\n"
    corrupt_keeping_size_and_mtime(res.path / "tokenizer.json")
    assert main(["cache", "verify", "tiny"]) == 5
    cap = capsys.readouterr()
    assert cap.out == "tiny: tokenizer.json: sha256 differs from the one recorded at pull time\n"
    assert cap.err.startswith(f"error: {res.path}: tiny: tokenizer.json: sha256 differs")
    assert main(["cache", "verify", "nope"]) == 2
    assert main(["cache", "verify", "../x"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cache_verify_fails_an_interrupted_pull(hub, tmp_path, capsys):
    d = tmp_path / "cache" / "half"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    assert main(["cache", "verify", "half"]) == 5
    assert "half: .deploykit.json: missing (an interrupted pull, or not written by deploykit)" in (
        capsys.readouterr().err)


def test_cache_rm_removes_only_what_deploykit_wrote(hub, capsys):
    res = pullmod.pull(spec(), log=lambda m: None)
    d = res.path
    (d / "notes.txt").write_text("the operator's own file")
    (d / "tokenizer.json").unlink()
    res = pullmod.pull(spec(), log=lambda m: None)  # a pull that downloads never claims notes.txt
    assert res.downloaded and "notes.txt" not in {f["path"] for f in res.manifest["files"]}
    before = sorted(p for p in d.rglob("*"))
    assert main(["cache", "rm", "tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(p for p in d.rglob("*")) == before  # dry run: nothing touched
    assert f"would remove {d / 'model.safetensors'}" in out and f"would remove {d / '.cache'}" in out
    assert f"would keep {d / 'notes.txt'} (not written by deploykit)" in out
    assert main(["cache", "rm", "tiny", "--yes"]) == 0
    assert [p.name for p in d.iterdir()] == ["notes.txt"]
    assert f"warning: kept {d / 'notes.txt'}: not written by deploykit" in capsys.readouterr().err
    (d / "notes.txt").unlink()
    pullmod.pull(spec(), log=lambda m: None)
    assert main(["cache", "rm", "tiny", "--yes"]) == 0 and not d.exists()


def test_cache_rm_refuses_a_dir_deploykit_did_not_write(hub, tmp_path, capsys):
    d = tmp_path / "cache" / "foreign"
    d.mkdir(parents=True)
    (d / "weights.safetensors").write_bytes(b"x")
    assert main(["cache", "rm", "foreign", "--yes"]) == 2
    assert (d / "weights.safetensors").read_bytes() == b"x"
    assert "holds no deploykit manifest: not written by deploykit, nothing removed" in capsys.readouterr().err
    link = tmp_path / "cache" / "home"
    link.symlink_to(tmp_path / "src")
    assert main(["cache", "rm", "home", "--yes"]) == 2 and (tmp_path / "src" / "config.json").exists()


def test_cache_rm_never_cuts_a_pull_in_progress(hub, tmp_path, capsys):
    from filelock import FileLock

    res = pullmod.pull(spec(), log=lambda m: None)
    before = sorted(res.path.rglob("*"))
    with FileLock(str(tmp_path / "cache" / ".tiny.lock")):  # what a running pull holds
        assert main(["cache", "rm", "tiny", "--yes"]) == 4
    assert sorted(res.path.rglob("*")) == before
    assert "error: a pull of tiny is in progress: nothing removed" in capsys.readouterr().err
