"""An installed wheel carries the cards, targets, templates, images and local eval tasks (fresh venv, no checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_wheel_in_fresh_venv(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
                   check=True, timeout=600)
    (whl,) = wheels.glob("deploykit-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for needed in ("deploy_kit/_data/models/smollm2-135m-instruct.yaml", "deploy_kit/_data/targets/ascend-a2.yaml",
                   "deploy_kit/_data/templates/operator-README.md.j2", "deploy_kit/_data/images/cpu.Dockerfile.j2",
                   "deploy_kit/_data/models/assets/red-square.png",
                   "deploy_kit/_data/evals/capitals_mini/capitals_mini.yaml",
                   "deploy_kit/_data/evals/capitals_mini/capitals.jsonl"):
        assert needed in names, needed
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(whl)], check=True, timeout=900)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "DEPLOYKIT_CACHE": str(tmp_path / "c")}
    out = subprocess.run([str(venv / "bin" / "deploykit"), "list", "--json"], capture_output=True, text=True, cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    assert "smollm2-135m-instruct" in out.stdout
    proc = subprocess.run([str(venv / "bin" / "deploykit"), "render", "smollm2-135m-instruct", "--target", "cpu",
                           "--port", "18995", "--out", str(work / "d")], capture_output=True, text=True, cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (work / "d" / "Dockerfile").read_text().startswith("# Rendered by deploykit")
    assert str(REPO) not in (work / "d" / "plan.json").read_text(), "the wheel must not read the checkout"
