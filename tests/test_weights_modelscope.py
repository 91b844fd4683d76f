"""Pulls through the real modelscope client against a fixture ModelScope hub on 127.0.0.1.

Proxies point at a closed port (NO_PROXY only for 127.0.0.1), so any request to the default
modelscope.cn/.ai domains fails at once instead of leaving the machine.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit

import pytest

from deploy_kit.errors import BadInput, RuntimeFailure, VerificationFailed
from deploy_kit.weights import hubs
from deploy_kit.weights import pull as pullmod
from deploy_kit.weights.spec import WeightSpec
from tests.conftest import require
from tests.fixture_hub import CARD_FACTS, make_model_files
from tests.fixture_modelscope import HEAD, OLDER, FixtureModelScope

pytestmark = pytest.mark.integration

REPO = "org/tiny"
WANT = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"}
TOKEN = "secret-abc"
# What the client may ask for (read from modelscope_hub's source); anything else is a new call.
ALLOWED = {f"/api/v1/models/{REPO}/repo/files", f"/api/v1/models/{REPO}/repo",
           "/api/v1/repos/internalAccelerationInfo", "/oss/org/tiny/model.safetensors"}


@pytest.fixture()
def ms_env(tmp_path, monkeypatch):
    for k in ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "MODELSCOPE_PREFER_AI_SITE", "http_proxy",
              "https_proxy", "no_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                 "NO_PROXY": "127.0.0.1,localhost", "HOME": str(tmp_path / "home"),
                 "MODELSCOPE_CACHE": str(tmp_path / "mscache"), "MODELSCOPE_HOME": str(tmp_path / "mshome"),
                 "MODELSCOPE_API_TOKEN": TOKEN, "DEPLOYKIT_CACHE": str(tmp_path / "cache"),
                 # read once at modelscope_hub import: fewer retries only if this module imports it first
                 "MODELSCOPE_API_MAX_RETRIES": "1", "MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(k, v)
    try:
        import modelscope  # noqa: F401
        import modelscope_hub  # noqa: F401
    except ImportError:
        require(False, "modelscope not installed (pip install deploykit[hub])")
    return tmp_path


@pytest.fixture()
def hub(ms_env, monkeypatch):
    files = make_model_files(ms_env / "src")
    with FixtureModelScope(REPO, files) as h:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", h.url)
        yield h


def spec(**kw):
    base = dict(name="tiny", source="modelscope", repo_id=REPO, revision="master", expected=dict(CARD_FACTS))
    base.update(kw)
    return WeightSpec(**base)


def quiet(_m):
    pass


def cached_files(d):
    return {p.relative_to(d).as_posix() for p in d.rglob("*")
            if p.is_file() and not p.relative_to(d).parts[0].startswith(".")}


def test_full_download_then_zero_gets(hub, ms_env):
    import hashlib

    res = pullmod.pull(spec(), log=quiet)
    assert res.downloaded
    assert res.manifest["commit"] == HEAD  # newest per-file commit the listing gives
    assert cached_files(res.path) == WANT  # no .bin, no original/, no README
    assert sorted(hub.file_gets()) == sorted(WANT)  # each needed file fetched exactly once
    man = json.loads((res.path / ".deploykit.json").read_text())
    assert man["source"] == "modelscope" and man["requested_revision"] == "master"
    assert {f["path"]: f["sha256"] for f in man["files"]} == {
        p: hashlib.sha256(hub.files[p]).hexdigest() for p in WANT}
    assert {urlsplit(p).path for _, p, _ in hub.requests} <= ALLOWED
    assert all("Revision=master" in p for _, p, _ in hub.requests if "Revision=" in p)
    # the client's lock files live hidden in the model dir, not in MODELSCOPE_CACHE (it only makes
    # the empty directory) or ~/.cache/modelscope
    assert not [p for p in (ms_env / "mscache").rglob("*") if p.is_file()]
    assert not (ms_env / "home" / ".cache").exists()
    assert list((res.path / ".cache" / "modelscope").rglob("*.lock"))

    n_files = len(hub.file_gets())
    res2 = pullmod.pull(spec(), log=quiet)
    assert not res2.downloaded and len(hub.file_gets()) == n_files  # listing only, no file GET
    # the commit recorded above, pinned: no request at all
    n = len(hub.requests)
    res3 = pullmod.pull(spec(revision=HEAD), log=quiet)
    assert not res3.downloaded and len(hub.requests) == n


def test_branch_moved_refetches_only_changed_file(hub):
    pullmod.pull(spec(), log=quiet)
    hub.files["tokenizer.json"] = b'{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}}}'
    before = len(hub.file_gets())
    res = pullmod.pull(spec(), log=quiet)
    assert res.downloaded and hub.file_gets()[before:] == ["tokenizer.json"]
    assert (res.path / "tokenizer.json").read_bytes() == hub.files["tokenizer.json"]


def test_listing_without_commits_or_hashes(hub):
    """Older/other servers may omit Sha256/Revision: pull still verifies sizes and records no commit."""
    hub.list_sha256 = False
    hub.with_revisions = False
    res = pullmod.pull(spec(), log=quiet)
    assert res.downloaded and res.manifest["commit"] is None
    n = len(hub.file_gets())
    assert not pullmod.pull(spec(), log=quiet).downloaded and len(hub.file_gets()) == n
    # no commit to compare: a listed size that differs from the manifest still triggers a fetch
    hub.files["tokenizer.json"] = b'{"version": "1.0", "model": {"type": "BPE", "vocab": {"ab": 0}}}'
    res = pullmod.pull(spec(), log=quiet)
    assert res.downloaded and hub.file_gets()[n:] == ["tokenizer.json"]


def test_dropped_connection_resumes_with_range(hub):
    hub.drop_once["model.safetensors"] = 10000
    res = pullmod.pull(spec(), log=quiet)  # recovered inside the client, no exception
    assert (res.path / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    gets = [hd for m, p, hd in hub.requests if m == "GET" and p.startswith("/oss/")]
    assert len(gets) == 2 and gets[1].get("Range") == "bytes=10000-"  # resumed, not restarted
    assert not list(res.path.glob("*.incomplete"))


def test_dry_run_lists_without_download(hub):
    lines = []
    res = pullmod.pull(spec(), dry_run=True, log=lines.append)
    assert set(res.manifest["files"]) == WANT and not hub.file_gets()
    assert not pullmod.model_dir(spec()).exists()
    assert any(f"org/tiny@{HEAD}" in x for x in lines)


def test_config_contradicts_card(hub):
    with pytest.raises(VerificationFailed) as ei:
        pullmod.pull(spec(expected=dict(CARD_FACTS, num_kv_heads=4)), log=quiet)
    assert "card says 4" in ei.value.message and "config.json says 2" in ei.value.message


def test_unknown_revision_is_bad_input(hub):
    with pytest.raises(BadInput) as ei:
        pullmod.pull(spec(revision="no-such-branch"), log=quiet)
    assert "org/tiny@no-such-branch" in ei.value.message
    assert not hub.file_gets()


def test_token_used_but_never_written(hub, ms_env, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    lines = []
    pullmod.pull(spec(), log=lines.append)
    auth = [hd.get("Authorization") for _, _, hd in hub.requests]
    assert f"Bearer {TOKEN}" in auth  # the client read it from MODELSCOPE_API_TOKEN
    for p in ms_env.rglob("*"):  # deploykit cache, MODELSCOPE_CACHE/HOME, HOME
        if p.is_file() and "src" not in p.relative_to(ms_env).parts:
            assert TOKEN.encode() not in p.read_bytes(), p
    out = capfd.readouterr()
    assert TOKEN not in caplog.text and TOKEN not in out.out + out.err
    assert not any(TOKEN in x for x in lines)


@pytest.mark.parametrize("var", ["MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"])
def test_endpoint_env_chooses_the_server(hub, monkeypatch, var):
    monkeypatch.delenv("MODELSCOPE_ENDPOINT")
    monkeypatch.setenv(var, hub.url)
    res = pullmod.pull(spec(name=f"tiny-{var.lower()}"), log=quiet)
    assert res.downloaded and sorted(hub.file_gets()) == sorted(WANT)


def test_without_endpoint_env_nothing_reaches_the_fixture(hub, monkeypatch):
    """Default domain through the dead proxy: fails fast, proving the env var did the routing."""
    monkeypatch.delenv("MODELSCOPE_ENDPOINT")
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure) as ei:
        pullmod.pull(spec(), log=quiet)
    assert time.monotonic() - t0 < 60  # ~1 s, or ~20 s with the client's default retries
    assert "MODELSCOPE_ENDPOINT" in (ei.value.hint or "")
    assert hub.requests == []


def test_commit_choice_rules():
    s = spec()
    blobs = [{"Path": "a", "Revision": OLDER, "CommittedDate": 1}, {"Path": "b", "Revision": HEAD,
                                                                     "CommittedDate": 2}]
    assert hubs._ms_commit(s, blobs) == HEAD
    assert hubs._ms_commit(spec(revision=OLDER), blobs) == OLDER  # pinned sha wins
    assert hubs._ms_commit(s, [dict(b, CommittedDate=None) for b in blobs]) is None  # cannot order
    assert hubs._ms_commit(s, [{"Path": "a"}]) is None
