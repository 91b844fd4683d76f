"""Air gap, simulated: bundle the demo, verify, corrupt, drop the image tag and the cache, load, and
`up` with every hub and index unreachable. Real Docker engine, real vLLM container.

The image is retagged to a repository only this test uses (a private target profile with the same
name `cpu` points at it), so removing "the image" removes this test's tag and nothing shared.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest
import yaml

from deploy_kit.bundle.fmt import host_arch
from tests.conftest import REPO
from tests.conftest_e2e import CARD, e2e_prerequisites, free_port, run_cli

pytestmark = pytest.mark.e2e


def closed_port() -> int:
    """A port nothing listens on (bound and released: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=600)


def staged_ref(env: dict) -> str:
    """The content tag `up` would use for the demo under ``env`` (dry run: nothing built)."""
    code = ("from deploy_kit.planner import plan; from deploy_kit.runtime.stage import stage; import shutil;"
            f"s = stage(plan('{CARD}', target='cpu', port_probe=None), print, dry_run=True);"
            "shutil.rmtree(s.rendered); print('REF', s.image)")
    res = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.split("REF ")[-1].strip()


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # 270 MB of weights: no copy on the same filesystem
    except OSError:
        shutil.copy2(src, dst)


def flip_byte(path: Path, member: str) -> int:
    with tarfile.open(path) as tf:  # reads headers only (seeks past data)
        off = tf.getmember(member).offset_data + 1000
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
    return off


@pytest.fixture()
def airgap(tmp_path, demo_weights):
    e2e_prerequisites()
    free = shutil.disk_usage(tmp_path).free
    assert free > 12 * 2**30, f"needs ~12 GiB free for the bundle and the image, {free / 2**30:.1f} GiB left"
    repo = f"deploykit-bundletest-{secrets.token_hex(4)}/vllm-cpu"
    targets = tmp_path / "targets"
    targets.mkdir()
    prof = yaml.safe_load((REPO / "targets" / "cpu.yaml").read_text())
    prof["image"] = repo
    (targets / "cpu.yaml").write_text(yaml.safe_dump(prof))
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYKIT_")}
    base.update(NO_COLOR="1", COLUMNS="200", HOME=str(tmp_path / "home"))
    src = dict(base, DEPLOYKIT_STATE=str(tmp_path / "src-state"), DEPLOYKIT_CACHE=str(tmp_path / "src-cache"),
               DEPLOYKIT_TARGETS=str(targets))
    shutil.copytree(demo_weights, tmp_path / "src-cache" / CARD, copy_function=link_or_copy)
    shared = staged_ref(dict(base, DEPLOYKIT_STATE=str(tmp_path / "probe")))
    mine = staged_ref(src)
    if docker("image", "inspect", shared, check=False).returncode == 0 and mine.split(":")[-1] == shared.split(":")[-1]:
        docker("tag", shared, mine)  # same build context: reuse the shared image under this test's name
    yield src, repo, mine, tmp_path
    for line in docker("images", repo, "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split():
        docker("rmi", line, check=False)  # only this test's repository: untags, shared layers stay


def test_bundle_verify_corrupt_load_and_up_offline(airgap):
    src, repo, ref, tmp = airgap
    out = tmp / "demo.tar"
    res = run_cli("bundle", CARD, "--target", "cpu", "--out", str(out), "--no-wheels", env=src, timeout=3000)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "bundle size: about" in res.stderr and f"{ref} ({host_arch()})" in res.stdout
    assert not out.with_name("demo.tar.partial").exists()
    with tarfile.open(out) as tf:
        head = json.loads(tf.extractfile("bundle.json").read())
    assert head["images"][0]["ref"] == ref and head["cards"][CARD]

    # (the success path of --verify-only is tested on a small bundle in test_bundle.py; reading this
    # 3 GB bundle once more costs ~10 s, and `load` below verifies every byte before it loads)
    member = f"weights/{CARD}/model.safetensors"
    flip_byte(out, member)
    res = run_cli("load", str(out), "--verify-only", env=src)
    assert res.returncode == 5 and f"{member}: sha256" in res.stderr, res.stderr[-2000:]
    flip_byte(out, member)  # 0xFF twice: the original byte again (saves a second 3 GB copy)

    # The air gap: this test's image tag and weights cache are gone; hubs and indexes unreachable.
    docker("rmi", ref)
    assert docker("image", "inspect", ref, check=False).returncode != 0
    shutil.rmtree(tmp / "src-cache")
    dead = f"http://127.0.0.1:{closed_port()}"
    dst = dict(src, DEPLOYKIT_STATE=str(tmp / "dst-state"), DEPLOYKIT_CACHE=str(tmp / "dst-cache"),
               HF_ENDPOINT=dead, MODELSCOPE_DOMAIN=dead, PIP_INDEX_URL=dead + "/simple", PIP_NO_INDEX="1",
               HTTPS_PROXY=dead, HTTP_PROXY=dead, NO_PROXY="127.0.0.1,localhost")
    res = run_cli("load", str(out), env=dst, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert docker("image", "inspect", ref, check=False).returncode == 0
    assert (tmp / "dst-cache" / CARD / ".deploykit.json").is_file()
    out.unlink()  # 3 GB: gone before the container starts

    port = free_port()
    res = run_cli("up", CARD, "--target", "cpu", "--port", str(port), env=dst, timeout=1800)
    try:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "building image" not in res.stdout + res.stderr
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, json={
            "model": CARD, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16, "temperature": 0})
        assert "paris" in r.json()["choices"][0]["message"]["content"].lower()
    finally:
        run_cli("down", CARD, env=dst, timeout=300)
