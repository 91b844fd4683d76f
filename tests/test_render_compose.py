"""`docker compose config` (the real Compose binary) accepts every render and reads back exactly
the plan's argv and env, including hostile values."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import require_compose
from tests.test_render import TARGETS, cards, make

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fixed_env(monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", "/var/cache/deploykit/models")
    monkeypatch.delenv("DEPLOYKIT_REGISTRY_MIRROR", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")


@pytest.mark.parametrize("target", TARGETS)
def test_compose_config_accepts_every_render(target, tmp_path):
    from deploy_kit.errors import Infeasible
    from deploy_kit.render import render

    exe = require_compose()
    for card in cards():
        try:
            plan = make(card, target)
        except Infeasible:
            continue
        out = tmp_path / card
        render(plan, out)
        proc = subprocess.run([*exe, "-f", str(out / "compose.yaml"), "config", "--format", "json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{card}/{target}: {proc.stderr}"
        cfg = json.loads(proc.stdout)
        (svc,) = cfg["services"].values()
        assert svc["command"] == plan.argv


HOSTILE_VALUES = ["$HOME", "${HF_TOKEN}", "$$", "a b", "#not a comment", "x #y", "a\\b", '"quoted"', "`id`",
                  "$(touch pwned)", "${X:-default}", "ünïcødé", " lead", "trail ", "=", "a=b=c", ""]
HOSTILE_ARGS = ["--x=$HOME", "${HF_TOKEN}", "$(id)", "a b", "'", '"', "\\", "$$"]


def test_compose_reads_hostile_values_back_literally(tmp_path):
    """Compose's own parsers (env file and interpolation) give back exactly the plan's env and argv."""
    from tests.test_hostile_render_props import with_values

    from deploy_kit.render import render

    exe = require_compose()
    env = {f"VLLM_T{i}": v for i, v in enumerate(HOSTILE_VALUES)}
    plan = with_values(args=HOSTILE_ARGS, env=env)
    out = tmp_path / "o"
    render(plan, out)
    proc = subprocess.run([*exe, "-f", str(out / "compose.yaml"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/h",
                                                                         "HF_TOKEN": "leaked", "X": "leaked"})
    assert proc.returncode == 0, proc.stderr
    (svc,) = json.loads(proc.stdout)["services"].values()
    # `config` prints a compose file again, so it writes each literal $ as $$ once more
    assert [a.replace("$$", "$") for a in svc["command"]] == plan.argv
    assert {k: v.replace("$$", "$") for k, v in svc["environment"].items()} == plan.env
    assert "leaked" not in proc.stdout
