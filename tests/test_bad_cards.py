"""Every bad card / flag ends with exit 2 or 3, one line naming file, line and dotted field, and
nothing written. The cards and their expected messages live in tests/bad_cards/cases.yaml."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import deploykit_bin

pytestmark = pytest.mark.unit

HERE = Path(__file__).parent / "bad_cards"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())["cases"]


def run(args, tmp_path, env=None):
    return subprocess.run([deploykit_bin(), *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "DEPLOYKIT_CACHE": str(tmp_path / "cache"),
                               "DEPLOYKIT_STATE": str(tmp_path / "state"), "HOME": str(tmp_path), **(env or {})})


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c["card"][:-5] for c in CASES])
def test_bad_card(case, tmp_path):
    out = tmp_path / "out"
    card = HERE / case["card"]
    args = ["render", str(card), "--target", case["target"], "--out", str(out), "--port", "18999", *case["args"]]
    proc = run(args, tmp_path, case.get("env"))
    assert proc.returncode == case["exit"], proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in case["expect"]:
        assert needle in err, f"{needle!r} not in {err!r}"
    if case["expect"][0].startswith(":"):
        assert err.split(": ", 1)[1].startswith(str(card)) or str(card) in err
    assert not out.exists(), "a refused render must write nothing"


def test_debug_shows_traceback(tmp_path):
    proc = run(["--debug", "render", str(HERE / "bad-source.yaml"), "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_render_is_paper_a_busy_host_port_does_not_refuse_it(tmp_path):
    """`plan`/`render` probe no host port (the files may be for another host); `up` does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run(["render", "smollm2-135m-instruct", "--target", "cpu", "--port", str(port),
                    "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"127.0.0.1:{port}:8000" in (tmp_path / "o" / "compose.yaml").read_text()


def test_expose_needs_api_key(tmp_path):
    proc = run(["render", "smollm2-135m-instruct", "--target", "cpu", "--port", "18998", "--expose",
                "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2
    assert "VLLM_API_KEY" in proc.stderr
