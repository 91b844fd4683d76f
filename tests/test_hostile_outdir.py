"""Never delete what deploykit did not write (issue 13, class 1): `render --out DIR`.

A render records what it wrote (.deploykit-render.json, sha256 per file); a re-render replaces only
those files and refuses (exit 2) when DIR holds anything else, --force included. Home, /, the
current directory and symlinks get no special luck. A failed render leaves the earlier one whole
and no temporary directory behind.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from deploy_kit.errors import BadInput, RuntimeFailure
from tests.conftest import deploykit_bin

pytestmark = pytest.mark.unit

RENDERED = ["Dockerfile", "README.md", "compose.yaml", "model.env", "plan.json"]
MANIFEST = ".deploykit-render.json"


@pytest.fixture()
def env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "DEPLOYKIT_STATE": str(tmp_path / "state"),
            "DEPLOYKIT_CACHE": str(tmp_path / "cache")}


def render_cli(out: str, env: dict, *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([deploykit_bin(), "render", "smollm2-135m-instruct", "--target", "cpu", "--port", "18995",
                           "--out", out, *extra], capture_output=True, text=True, timeout=60, env=env, cwd=cwd)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(d.rglob("*"))}


def plan():
    from deploy_kit.planner import plan as make

    return make("smollm2-135m-instruct", target="cpu", port_probe=None)


def test_render_records_a_manifest_with_hashes(tmp_path):
    import hashlib

    from deploy_kit.render import render

    out = tmp_path / "o"
    written = render(plan(), out)
    assert sorted(p.name for p in written) == RENDERED
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == RENDERED
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(tmp_path)) == ["o"], "no temporary directory left beside the render"


def test_plan_json_with_user_files_is_not_an_earlier_render(tmp_path, env):
    """The probe: a directory holding plan.json was replaced whole, deleting the user's files."""
    out = tmp_path / "project"
    out.mkdir()
    (out / "plan.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    before = snapshot(out)
    for extra in ((), ("--force",)):
        proc = render_cli(str(out), env, *extra)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (f"error: --out: {out} is not empty and holds no deploykit render "
                                       "(2 entries) (choose a new or empty directory; --force never deletes files "
                                       "deploykit did not write)")
    assert snapshot(out) == before


def test_home_is_refused_with_and_without_force(env):
    home = Path(env["HOME"])
    (home / ".bashrc").write_text("export A=1\n")
    (home / "work").mkdir()
    (home / "work" / "x.py").write_text("print(1)\n")
    before = snapshot(home)
    for out in (str(home), "~"):
        for extra in ((), ("--force",)):
            proc = render_cli(out, env, *extra, cwd=home)
            if out == "~":  # no shell expands it: a new directory literally named "~" is fine
                assert proc.returncode == 0, proc.stderr
                continue
            assert proc.returncode == 2, proc.stderr
            assert "holds no deploykit render (2 entries)" in proc.stderr
    assert {k: v for k, v in snapshot(home).items() if not k.startswith("~")} == before


def test_root_and_current_directory_are_refused(tmp_path, env):
    proc = render_cli("/", env, "--force")
    assert proc.returncode == 2 and "--out: / is not empty and holds no deploykit render" in proc.stderr
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "src.c").write_text("int main(){}\n")
    proc = render_cli(".", env, "--force", cwd=cwd)
    assert proc.returncode == 2, proc.stderr
    assert sorted(os.listdir(cwd)) == ["src.c"]


def test_render_into_an_empty_current_directory_then_again(tmp_path, env):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert render_cli(".", env, cwd=cwd).returncode == 0
    assert sorted(os.listdir(cwd)) == [MANIFEST, *RENDERED]
    proc = render_cli(".", env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(cwd)) == [MANIFEST, *RENDERED]


def test_symlinked_out_is_refused(tmp_path, env):
    real = tmp_path / "real"
    real.mkdir()
    (real / "data").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(real)
    for extra in ((), ("--force",)):
        proc = render_cli(str(link), env, *extra)
        assert proc.returncode == 2
        assert proc.stderr.strip() == (f"error: --out: {link} is a symbolic link: give the directory it "
                                       "points to")
    assert sorted(os.listdir(real)) == ["data"]


def test_rerender_replaces_only_its_own_files(tmp_path):
    from deploy_kit.render import render

    out = tmp_path / "o"
    render(plan(), out)
    render(plan(), out)  # an earlier render is replaced
    (out / "extra.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(BadInput) as ei:
            render(plan(), out, force=force)
        assert ei.value.message == f"{out} holds files deploykit did not write: extra.txt"
    assert (out / "extra.txt").read_text() == "mine"


def test_a_file_edited_since_needs_force(tmp_path):
    from deploy_kit.render import render

    out = tmp_path / "o"
    render(plan(), out)
    (out / "compose.yaml").write_text("# my edits\n")
    with pytest.raises(BadInput) as ei:
        render(plan(), out)
    assert ei.value.message == f"compose.yaml in {out} changed since deploykit wrote them"
    assert (out / "compose.yaml").read_text() == "# my edits\n"
    render(plan(), out, force=True)
    assert (out / "compose.yaml").read_text().startswith("# Rendered by deploykit")


def test_a_symlink_where_a_rendered_file_was_is_foreign(tmp_path):
    from deploy_kit.render import render

    out = tmp_path / "o"
    render(plan(), out)
    target = tmp_path / "precious"
    target.write_text("x")
    (out / "model.env").unlink()
    (out / "model.env").symlink_to(target)
    with pytest.raises(BadInput) as ei:
        render(plan(), out, force=True)
    assert "did not write: model.env" in ei.value.message
    assert target.read_text() == "x"


def test_legacy_render_without_manifest_is_replaced(tmp_path):
    from deploy_kit.render import render, render_files

    out = tmp_path / "o"
    out.mkdir()
    for name, text in render_files(plan()).items():
        (out / name).write_text(text)
    render(plan(), out)
    assert sorted(os.listdir(out)) == [MANIFEST, *RENDERED]


def test_failed_render_keeps_the_earlier_one_and_leaves_no_temp(tmp_path, monkeypatch):
    """README claim: an earlier render survives a failed one; the replace leaves no temporary dir."""
    from deploy_kit import render as r

    out = tmp_path / "o"
    r.render(plan(), out)
    before = snapshot(out)
    real_replace = os.replace
    calls = []

    def disk_full(src, dst):
        calls.append(dst)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(r.os, "replace", disk_full)
    with pytest.raises(RuntimeFailure) as ei:
        r.render(plan(), out)
    assert ei.value.exit_code == 4
    assert ei.value.one_line() == (f"--out: cannot write {out}: No space left on device "
                                   "(free some space; an earlier render there is unchanged)")
    monkeypatch.setattr(r.os, "replace", real_replace)
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_template_failure_writes_nothing(tmp_path, monkeypatch):
    from deploy_kit import render as r

    out = tmp_path / "o"
    r.render(plan(), out)
    before = snapshot(out)

    def broken(_plan):
        raise BadInput("template broke")

    monkeypatch.setattr(r, "render_files", broken)
    with pytest.raises(BadInput):
        r.render(plan(), out)
    assert snapshot(out) == before


@pytest.mark.parametrize("code,reason", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_unwritable_out_is_one_line_exit_2(tmp_path, monkeypatch, code, reason):
    """Simulated (the tests may run as root, who writes into read-only directories)."""
    from deploy_kit import render as r

    def refuse(*a, **kw):
        raise OSError(code, reason)

    monkeypatch.setattr(r.tempfile, "mkdtemp", refuse)
    with pytest.raises(BadInput) as ei:
        r.render(plan(), tmp_path / "o")
    assert ei.value.one_line() == (f"--out: cannot write {tmp_path / 'o'}: {reason} "
                                   "(an earlier render there is unchanged)")
    assert not (tmp_path / "o").exists()


def test_dry_run_refuses_what_render_would_refuse(tmp_path, env):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("x")
    proc = render_cli(str(out), env, "--dry-run")
    assert proc.returncode == 2
    assert "holds no deploykit render (1 entries)" in proc.stderr


def test_k8s_and_multinode_renders_keep_the_same_guarantee(tmp_path, env):
    out = tmp_path / "k"
    out.mkdir()
    (out / "README.md").write_text("mine")
    base = [deploykit_bin(), "render", "llama-3.1-8b-instruct", "--out", str(out)]
    proc = subprocess.run([*base, "--k8s", "--force"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "holds no deploykit render (1 entries)" in proc.stderr
    assert (out / "README.md").read_text() == "mine"
    (out / "README.md").unlink()
    for extra in (["--k8s"], ["--k8s"], ["--nodes", "2", "--tp", "8"]):
        proc = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
    # switching to multi-node compose removed the manifests the k8s render wrote, nothing else
    assert sorted(os.listdir(out)) == [MANIFEST, "README.md", "compose.node0.yaml", "compose.node1.yaml"]
