"""`stack up` of two cpu demo deployments side by side in real Docker, then `stack down`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest_e2e import free_port, run_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_stack_up_two_demos_side_by_side(e2e_env, base_image, tmp_path):  # noqa: F811
    doc = yaml.safe_load((ROOT / "compose" / "cpu-demo-pair.yaml").read_text())
    ports = [free_port(), free_port()]
    while ports[0] == ports[1]:
        ports[1] = free_port()
    for d, p in zip(doc["deployments"], ports):
        d["port"] = p
    f = tmp_path / "pair.yaml"
    f.write_text(yaml.safe_dump(doc))
    try:
        res = run_cli("stack", "up", str(f), env=e2e_env, timeout=3000)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        for p in ports:
            models = httpx.get(f"http://127.0.0.1:{p}/v1/models", timeout=10).json()
            name = models["data"][0]["id"]
            r = httpx.post(f"http://127.0.0.1:{p}/v1/completions", timeout=120,
                           json={"model": name, "prompt": "Hello", "max_tokens": 4})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] is not None
        # a second stack asking for the same ports is refused before any container starts
        again = run_cli("stack", "plan", str(f), env=e2e_env, timeout=120)
        assert again.returncode == 0  # its own deployments are not conflicts
        other = dict(doc, name="other")
        other["deployments"] = [dict(doc["deployments"][0], name="smol-c")]
        g = tmp_path / "other.yaml"
        g.write_text(yaml.safe_dump(other))
        refused = run_cli("stack", "up", str(g), env=e2e_env, timeout=300)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert f"port {ports[0]} is held by deployment smol-a" in refused.stdout + refused.stderr
    finally:
        down = run_cli("stack", "down", str(f), env=e2e_env, timeout=600)
    assert down.returncode == 0, down.stderr
    st = run_cli("status", env=e2e_env, timeout=120)
    assert "smol-a" not in st.stdout and "smol-b" not in st.stdout
