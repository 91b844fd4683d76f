"""Conformance checks that need the real Compose v2 binary (integration tier)."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.integration


def test_multinode_files_pass_compose_config(tmp_path):
    """Compose itself accepts each node file; a missing NODE_IP/HEAD_IP is its one-line error."""
    import os

    from deploy_kit.planner import plan
    from deploy_kit.stack.compose_render import render_multinode
    from tests.conftest import require_compose

    compose = require_compose()
    p = plan("llama-3.1-8b-instruct", target="ascend-a2", tp=8, port_probe=None)
    node0, node1 = render_multinode(p, tmp_path, 2)
    env = {**os.environ, "NODE_IP": "10.0.0.2", "HEAD_IP": "10.0.0.1"}
    for f in (node0, node1):
        r = subprocess.run([*compose, "-f", str(f), "config"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    env.pop("HEAD_IP")
    r = subprocess.run([*compose, "-f", str(node1), "config"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "set HEAD_IP to the head node's IP" in r.stderr
