"""An installed wheel carries the cards, targets, templates, images and local eval tasks (fresh
venv with no extras, no checkout on the path: tests/conftest.py plain_install)."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SHIPPED = ("models/smollm2-135m-instruct.yaml", "targets/ascend-a2.yaml", "templates/operator-README.md.j2",
           "images/base.Dockerfile.j2", "images/cpu.Dockerfile.j2", "images/ascend.Dockerfile.j2",
           "images/cuda.Dockerfile.j2", "models/assets/red-square.png", "evals/capitals_mini/capitals_mini.yaml",
           "evals/capitals_mini/capitals.jsonl")


def test_wheel_ships_the_data_directories(plain_install):
    (whl,) = plain_install.parent.parent.joinpath("wheels").glob("deploykit-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    assert [f for f in SHIPPED if f"deploy_kit/_data/{f}" not in names] == []


def test_wheel_in_fresh_venv_lists_and_renders_without_the_checkout(plain_install, hermetic_env, tmp_path,
                                                                    free_port):
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(hermetic_env, PATH=f"{plain_install}:/usr/bin:/bin", NO_COLOR="1")
    exe = str(plain_install / "deploykit")
    out = subprocess.run([exe, "list", "--json"], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "smollm2-135m-instruct" in out.stdout
    proc = subprocess.run([exe, "render", "smollm2-135m-instruct", "--target", "cpu", "--port", str(free_port),
                           "--out", str(work / "d")], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    dockerfile = (work / "d" / "Dockerfile").read_text()
    assert dockerfile.startswith("# Rendered by deploykit") and "EXPOSE 8000" in dockerfile
    assert str(REPO) not in (work / "d" / "plan.json").read_text(), "the wheel must not read the checkout"
