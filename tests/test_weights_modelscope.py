"""Pulls through the real modelscope client against a fixture ModelScope hub on 127.0.0.1.

Proxies point at a closed port (NO_PROXY only for 127.0.0.1), so any request to the default
modelscope.cn/.ai domains fails at once instead of leaving the machine.
"""

from __future__ import annotations

from typing import Any

import json
import logging
import time
from urllib.parse import parse_qs, urlsplit
from urllib.request import build_opener

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
    base: dict[str, Any] = dict(name="tiny", source="modelscope", repo_id=REPO, revision="master",
                                expected=dict(CARD_FACTS))
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
    # measured 0.01-0.2 s here; the client's default retries would take ~20 s: 5 s tells them apart
    # with room for a loaded 2-core CI box
    assert time.monotonic() - t0 < 5
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


CODE = b"class TinyModel:  # reviewed\n    pass\n"


def test_remote_code_resolves_locks_and_reuses(hub, ms_env):
    """No revision on a trust_remote_code card: the listing's head commit is locked and used."""
    from deploy_kit.weights import lock

    hub.add("modeling_tiny.py", CODE)
    lines: list[str] = []
    res = pullmod.pull(spec(revision=None, trust_remote_code=True), log=lines.append)
    assert f"tiny: remote code: {REPO}@master resolved to commit {HEAD}" in lines
    url = f"{hub.url}/api/v1/models/{REPO}/repo/files?Revision={HEAD}&Recursive=True"
    assert f"tiny: review the code at {url}" in lines
    # build_opener(), not urlopen(): urlopen caches a global opener with this test's dead proxy in it
    listing = json.loads(build_opener().open(url, timeout=10).read())  # the URL really lists that commit's code
    assert "modeling_tiny.py" in {f["Path"] for f in listing["Data"]["Files"]}
    assert lock.locked_revision("tiny", REPO, "modelscope") == HEAD
    assert (res.path / "modeling_tiny.py").read_bytes() == CODE
    # every file request names the locked commit, never the moving branch
    revs = {parse_qs(urlsplit(p).query).get("Revision", [None])[0] for _, p, _ in hub.requests
            if urlsplit(p).path == f"/api/v1/models/{REPO}/repo"}
    assert revs == {HEAD}
    n, lines = len(hub.requests), []
    again = pullmod.pull(spec(revision=None, trust_remote_code=True), log=lines.append)
    assert not again.downloaded and len(hub.requests) == n
    assert lines[0].startswith(f"tiny: remote code locked at {HEAD} (")


@pytest.mark.parametrize("body", [
    b"garbage",
    b'{"Code": 200, "Data": {"Files": [{"Path": "config.json", "Size": "x"}]}}',
    b'{"Code": 200, "Data": {"Files": [{"Path": "a.safetensors", "Revision": "zz"}]}}'])
def test_garbage_listing_is_runtime_failure(hub, body):
    hub.listing_body = body
    with pytest.raises(RuntimeFailure) as ei:
        pullmod.pull(spec(), log=quiet)
    assert ei.value.message.startswith(("modelscope: cannot list org/tiny@master",
                                        "modelscope: malformed file listing for org/tiny"))
    assert not hub.file_gets()


def test_unreachable_endpoint_is_exit_4_one_line(ms_env, monkeypatch, tmp_path, capsys):
    from deploy_kit.cli import main
    from tests.fixture_hub import write_card

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    card = str(write_card(tmp_path / "ms.yaml", source="modelscope"))
    assert main(["pull", card]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: modelscope: cannot list org/tiny@master: ") and err.count("\n") == 1


def test_killed_download_resumes_with_range(hub, ms_env):
    """A pull killed mid-file (SIGKILL) leaves the client's `<file>.incomplete`: `cache ls` never
    counts it as the model, and the next pull resumes it with a Range request."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from safetensors.numpy import save

    from deploy_kit.weights.cache import list_cache

    hub.add("model.safetensors", save({"model.embed_tokens.weight": np.zeros((128, 64), "float32"),
                                       "lm_head.weight": np.zeros((2**20,), "float32")}))  # 4 MiB
    hub.stall["model.safetensors"] = 3 * 2**20
    code = ("from deploy_kit.weights.pull import pull; from deploy_kit.weights.spec import WeightSpec; "
            f"pull(WeightSpec(name='tiny', source='modelscope', repo_id={REPO!r}, revision='master', "
            f"expected={CARD_FACTS!r}), log=lambda m: None)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(Path(__file__).parent.parent),
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = ms_env / "cache" / "tiny" / "model.safetensors.incomplete"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size >= 2 * 2**20) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.wait(30)
    hub.release()
    have = partial.stat().st_size
    assert have >= 2 * 2**20
    [row] = list_cache()
    assert row["partial_bytes"] == have and row["complete"] is False
    assert row["bytes"] == sum(p.stat().st_size for p in partial.parent.iterdir()
                               if p.is_file() and not p.name.startswith(".") and p != partial)
    n = len(hub.requests)
    res = pullmod.pull(spec(), log=quiet)
    assert (res.path / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    ranges = [hd.get("Range") for m, p, hd in hub.requests[n:] if m == "GET" and p.startswith("/oss/")]
    assert ranges == [f"bytes={have}-"]  # resumed where the killed process stopped
    assert not partial.exists() and list_cache()[0]["complete"] is True


def test_cached_file_corrupted_at_same_size_is_fetched_again(hub):
    import os

    res = pullmod.pull(spec(), log=quiet)
    p = res.path / "model.safetensors"
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    before, lines = len(hub.file_gets()), []
    again = pullmod.pull(spec(), log=lines.append)
    assert again.downloaded and p.read_bytes() == hub.files["model.safetensors"]
    assert hub.file_gets()[before:] == ["model.safetensors"]
    assert "tiny: model.safetensors: sha256 differs from the one recorded at pull time: fetching again" in lines


def test_listing_with_a_path_outside_the_model_dir_is_refused(hub, ms_env):
    """The ModelScope client joins listed paths onto local_dir unchecked: deploykit vets the
    listing and hands the client exactly the vetted names."""
    hub.add("../escape.safetensors", b"payload")
    with pytest.raises(RuntimeFailure) as ei:
        pullmod.pull(spec(), log=quiet)
    assert ei.value.message == ("modelscope: malformed file listing for org/tiny "
                                "(unsafe file path '../escape.safetensors')")
    assert not hub.file_gets() and not (ms_env / "cache" / "escape.safetensors").exists()
