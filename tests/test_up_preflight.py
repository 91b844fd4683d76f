"""`up` refuses a deployment the host cannot run before any weights are pulled or images built."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import deploykit_bin

pytestmark = pytest.mark.unit


def test_up_on_a_host_without_npus_stops_at_preflight(tmp_path):
    env = dict(os.environ, DEPLOYKIT_CACHE=str(tmp_path / "cache"), DEPLOYKIT_STATE=str(tmp_path / "state"),
               DEPLOYKIT_ASCEND_ROOT=str(tmp_path / "no-driver"), DEPLOYKIT_DEV_ROOT=str(tmp_path / "dev"),
               PATH=os.path.dirname(deploykit_bin()) + ":/usr/bin:/bin")
    (tmp_path / "dev").mkdir()
    proc = subprocess.run([deploykit_bin(), "up", "llama-3.1-8b-instruct", "--port", "18776"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "preflight failed" in proc.stderr and "Ascend driver" in proc.stderr
    assert "device nodes" in proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir()), "nothing pulled"
