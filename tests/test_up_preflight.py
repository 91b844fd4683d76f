"""`up` refuses a deployment the host cannot run before any weights are pulled or images built,
listing every reason at once, the host's first (issue 14.8)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.conftest import deploykit_bin

pytestmark = pytest.mark.unit


def test_up_on_a_host_without_npus_lists_every_reason_host_first(tmp_path):
    env = dict(os.environ, DEPLOYKIT_CACHE=str(tmp_path / "cache"), DEPLOYKIT_STATE=str(tmp_path / "state"),
               DEPLOYKIT_ASCEND_ROOT=str(tmp_path / "no-driver"), DEPLOYKIT_DEV_ROOT=str(tmp_path / "dev"),
               PATH=os.path.dirname(deploykit_bin()) + ":/usr/bin:/bin")
    (tmp_path / "dev").mkdir()
    with socket.socket() as s:   # the port is busy too: one more reason, in the same list
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([deploykit_bin(), "up", "llama-3.1-8b-instruct", "--port", str(port)],
                              capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: preflight failed for llama-3.1-8b-instruct"), line
    assert len(proc.stderr.strip().splitlines()) == 1   # one line, every reason in it
    assert "Ascend driver: no Ascend driver version at" in line, line
    driver = line.index("Ascend driver: no Ascend driver version at")
    nodes = line.index("Ascend device nodes: no /dev/davinci* nodes under")
    busy = line.index(f"port {port} is taken by another process on this host")
    assert driver < nodes < busy   # the host's reasons first, then the plan's
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir()), "nothing pulled"
