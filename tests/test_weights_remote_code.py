"""Remote code: resolve and lock, never block (real hub clients against the fixture hubs).

A trust_remote_code card with no revision: the first pull resolves the branch to its commit
through the hub API, prints the commit and the URL to review, records a lock; later pulls use the
locked commit (even after the branch moved). --require-pinned / DEPLOYKIT_REQUIRE_PINNED=1 refuse.
"""

from __future__ import annotations

from typing import Any

import json

import pytest

from deploy_kit.cli import main
from deploy_kit.errors import BadInput
from deploy_kit.weights import lock
from deploy_kit.weights import pull as pullmod
from deploy_kit.weights.spec import WeightSpec
from tests.fixture_hub import CARD_FACTS, COMMIT, serve_hf, write_card

pytestmark = pytest.mark.integration

REPO = "org/tiny"
CODE = b"class TinyModel:  # reviewed\n    pass\n"


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    with serve_hf(tmp_path, monkeypatch, REPO, extra={"modeling_tiny.py": CODE}) as h:
        yield h


def spec(**kw) -> WeightSpec:
    base: dict[str, Any] = dict(name="tiny", source="huggingface", repo_id=REPO, trust_remote_code=True,
                expected=dict(CARD_FACTS))
    base.update(kw)
    return WeightSpec(**base)


def test_first_pull_resolves_prints_and_locks(hub, tmp_path):
    lines: list[str] = []
    res = pullmod.pull(spec(), log=lines.append)
    url = f"{hub.url}/{REPO}/tree/{COMMIT}"
    assert f"tiny: remote code: {REPO}@main resolved to commit {COMMIT}" in lines
    assert f"tiny: review the code at {url}" in lines
    lock_file = tmp_path / "cache" / ".locks" / "tiny.json"
    assert f"tiny: locked {COMMIT} in {lock_file}; later pulls and `up` use it" in lines
    [entry] = json.loads(lock_file.read_text())["locks"]
    assert {k: entry[k] for k in ("model_id", "source", "commit", "requested", "review_url")} == {
        "model_id": REPO, "source": "huggingface", "commit": COMMIT, "requested": "main", "review_url": url}
    assert entry["locked_at"].endswith("Z")
    assert lock.locked_revision("tiny", REPO) == COMMIT
    assert (res.path / "modeling_tiny.py").read_bytes() == CODE
    assert res.manifest["commit"] == COMMIT and res.manifest["requested_revision"] == COMMIT
    # the files came from the resolved commit, not from a branch name that could move meanwhile
    assert all(f"/resolve/{COMMIT}/" in p for p in hub.file_gets())


def test_later_pulls_use_the_locked_commit_after_the_branch_moves(hub, tmp_path):
    pullmod.pull(spec(), log=lambda m: None)
    old_files = dict(hub.files)
    new_head = hub.push(dict(old_files, **{"modeling_tiny.py": b"import os; os.system('evil')\n"}))
    n, lines = len(hub.requests), []
    res = pullmod.pull(spec(), log=lines.append)
    assert lines[0] == (f"tiny: remote code locked at {COMMIT} ({tmp_path / 'cache' / '.locks' / 'tiny.json'}); "
                        "using the locked commit")
    assert not res.downloaded and len(hub.requests) == n  # cached at the locked commit: no request
    # cache gone: the locked commit is fetched, not the moved branch head
    assert main(["cache", "rm", "tiny", "--yes"]) == 0
    res = pullmod.pull(spec(), log=lambda m: None)
    assert (res.path / "modeling_tiny.py").read_bytes() == CODE
    assert res.manifest["commit"] == COMMIT != new_head
    assert lock.locked_revision("tiny", REPO, "huggingface") == COMMIT  # cache rm keeps the lock
    # `up` passes the planner's locked commit as the revision: the pull still says it is the lock
    lines = []
    pullmod.pull(spec(revision=COMMIT), log=lines.append)
    assert lines[0].startswith(f"tiny: remote code locked at {COMMIT} (")


def test_require_pinned_refuses_unless_pinned_or_locked(hub, monkeypatch):
    with pytest.raises(BadInput) as ei:
        pullmod.pull(spec(), require_pinned=True, log=lambda m: None)
    assert ei.value.field == "model.revision" and "refused" in ei.value.message
    monkeypatch.setenv("DEPLOYKIT_REQUIRE_PINNED", "1")
    with pytest.raises(BadInput):
        pullmod.pull(spec(), log=lambda m: None)
    assert hub.requests == []  # refused before any request
    assert pullmod.pull(spec(revision=COMMIT), log=lambda m: None).downloaded  # pinned: fine
    monkeypatch.delenv("DEPLOYKIT_REQUIRE_PINNED")
    pullmod.pull(spec(name="tiny2"), log=lambda m: None)  # locks tiny2
    assert pullmod.pull(spec(name="tiny2"), require_pinned=True, log=lambda m: None).path.name == "tiny2"


def test_dry_run_resolves_but_records_nothing(hub, tmp_path):
    lines: list[str] = []
    pullmod.pull(spec(), dry_run=True, log=lines.append)
    assert f"tiny: remote code: {REPO}@main resolved to commit {COMMIT}" in lines
    assert "tiny: dry run: not locked" in lines
    assert not (tmp_path / "cache" / ".locks").exists() and not hub.file_gets()


def test_cli_pull_prints_commit_and_url(hub, tmp_path, capsys):
    card = str(write_card(tmp_path / "tiny.yaml", trust_remote_code=True))
    assert main(["pull", card]) == 0
    cap = capsys.readouterr()
    assert cap.out == f"{tmp_path / 'cache' / 'tiny'}\n"
    assert f"tiny: remote code: {REPO}@main resolved to commit {COMMIT}\n" in cap.err
    assert f"tiny: review the code at {hub.url}/{REPO}/tree/{COMMIT}\n" in cap.err
    assert main(["pull", card, "--require-pinned"]) == 0  # locked now
    assert f"tiny: remote code locked at {COMMIT}" in capsys.readouterr().err
    other = str(write_card(tmp_path / "other.yaml", name="other", trust_remote_code=True))
    assert main(["pull", other, "--require-pinned"]) == 2
    assert "trust_remote_code model without a pinned or locked revision: refused" in capsys.readouterr().err


def test_unresolvable_commit_is_refused_not_run(hub, tmp_path, monkeypatch):
    """Without a commit to lock, remote code is not fetched at a moving name."""
    from deploy_kit.weights import hubs

    monkeypatch.setattr(hubs, "hf_listing", lambda s: (None, {"config.json": {"size": 1, "sha256": None}}))
    with pytest.raises(BadInput) as ei:
        pullmod.pull(spec(), log=lambda m: None)
    assert ei.value.message == ("huggingface: cannot resolve org/tiny@main to a commit, so its remote "
                                "code cannot be locked")
    assert not (tmp_path / "cache" / ".locks").exists()


def test_lock_file_is_per_card_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "c"))
    lock.record_lock("a", REPO, "1" * 40, source="huggingface")
    lock.record_lock("a", REPO, "2" * 40, source="modelscope")
    lock.record_lock("b", REPO, "3" * 40, source="huggingface")
    assert lock.locked_revision("a", REPO, "huggingface") == "1" * 40
    assert lock.locked_revision("a", REPO, "modelscope") == "2" * 40
    assert lock.locked_revision("b", REPO) == "3" * 40
    assert lock.locked_revision("a", "org/other") is None and lock.locked_revision("c", REPO) is None
    lock.record_lock("a", REPO, "4" * 40, source="huggingface")  # re-lock replaces
    assert lock.locked_revision("a", REPO, "huggingface") == "4" * 40
    assert len(json.loads(lock.lock_path("a").read_text())["locks"]) == 2


@pytest.mark.parametrize("content", ["{", "[]", '{"locks": 3}', " " * (300 * 1024), "[" * 100_000])
def test_broken_lock_file_is_bad_input_naming_it(tmp_path, monkeypatch, content):
    """A broken lock is never ignored (that would silently run unreviewed code)."""
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    lock.lock_path("a").parent.mkdir(parents=True)
    lock.lock_path("a").write_text(content)
    with pytest.raises(BadInput) as ei:
        lock.locked_revision("a", REPO)
    assert ei.value.file == str(lock.lock_path("a")) and "lock file is not valid" in ei.value.message


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "A"])
def test_lock_names_are_names(tmp_path, name):
    with pytest.raises(BadInput):
        lock.lock_path(name, tmp_path)


def test_lock_module_is_cheap_for_the_planner():
    import subprocess
    import sys

    code = ("import sys, deploy_kit.weights.lock as l; "
            "bad = [m for m in ('huggingface_hub', 'modelscope', 'modelscope_hub', 'httpx', 'filelock', "
            "'deploy_kit.weights.hubs') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

