"""`deploykit pull` failures are one line and the right exit code, with the real hub clients.

Unreachable endpoint -> 4 (both hubs), garbage listing -> 4, malformed safetensors header -> 5,
full disk -> 4, missing hub client -> 2 naming the extra. Never a traceback or "internal error".
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

import pytest

from deploy_kit.cli import main
from deploy_kit.weights import hubs
from deploy_kit.weights import pull as pullmod
from tests.conftest import require
from tests.fixture_hub import CARD_FACTS, serve_hf, write_card

pytestmark = pytest.mark.integration


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    with serve_hf(tmp_path, monkeypatch) as h:
        yield h


@pytest.fixture()
def card(tmp_path):
    return str(write_card(tmp_path / "tiny.yaml"))


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_unreachable_hf_endpoint_is_exit_4(hub, card, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert main(["pull", card]) == 4
    line = one_error_line(capsys)
    assert line.startswith("error: huggingface: cannot list org/tiny: ")
    assert line.endswith("(check network / HF_ENDPOINT, or use --offline)")


@pytest.mark.parametrize("body", [b"<html>not json", b"[]", b'{"sha": 5, "siblings": "abc"}',
                                  b'{"sha": "' + b"0" * 40 + b'", "siblings": [{"rfilename": "model.safetensors", '
                                  b'"size": -1}]}'])
def test_garbage_listing_is_exit_4(hub, card, capsys, body):
    hub.listing_body = body
    assert main(["pull", card]) == 4
    line = one_error_line(capsys)
    assert line.startswith(("error: huggingface: cannot list org/tiny", "error: huggingface: malformed file listing"))
    assert not hub.file_gets()


@pytest.mark.parametrize("header", [b'"just a string"', b'{"w": {"dtype": "F32"}}', b'{"w": 7}',
                                    b'{"w": {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 4]}}',
                                    b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": ["a", 4]}}',
                                    b"\xff\xfe not utf-8", b"[" * 100_000])
def test_malformed_safetensors_header_is_exit_5(hub, card, capsys, header):
    hub.files["model.safetensors"] = struct.pack("<Q", len(header)) + header + b"\0" * 4
    assert main(["pull", card]) == 5
    line = one_error_line(capsys)
    assert "model.safetensors: " in line
    assert ("malformed safetensors header" in line) or ("bad offsets" in line)


def test_full_disk_is_one_line(hub, card, tmp_path, monkeypatch, capsys):
    """The disk fills after the free-space check (another writer): the client's ENOSPC is exit 4."""
    require(os.geteuid() == 0 and sys.platform == "linux", "mounting a small tmpfs needs root on Linux")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        monkeypatch.setenv("DEPLOYKIT_CACHE", str(mnt))

        def fill_after_check(dest, need):  # leave 24 KiB: the small files fit, the 33 KB one does not
            with open(mnt / "filler", "wb") as f:
                f.write(b"\0" * (os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize - 24 * 1024))

        monkeypatch.setattr(pullmod, "check_disk", fill_after_check)
        assert main(["pull", card]) == 4
        line = one_error_line(capsys)
        assert line.startswith(f"error: huggingface download of org/tiny failed: disk full writing {mnt / 'tiny'}")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_too_small_before_download_is_exit_3(hub, card, monkeypatch, capsys):
    monkeypatch.setattr(pullmod, "_MARGIN", 2**62)  # no disk has this much room
    assert main(["pull", card]) == 3
    assert one_error_line(capsys).startswith("error: not enough disk space in ")
    assert not hub.file_gets()


@pytest.mark.parametrize("module", ["huggingface_hub", "filelock"])
def test_missing_hub_client_is_exit_2_naming_the_install(hub, card, monkeypatch, capsys, module):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert main(["pull", card]) == 2
    line = one_error_line(capsys)
    assert line == f"error: {module} is not installed (needed to pull from the hub) ({hubs.install_hint(module)})"


def test_missing_modelscope_client_is_exit_2(tmp_path, monkeypatch, capsys):
    card = str(write_card(tmp_path / "ms.yaml", source="modelscope"))
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "cache"))
    for name in [m for m in sys.modules if m.startswith("modelscope")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "modelscope_hub", None)
    assert main(["pull", card]) == 2
    assert one_error_line(capsys) == ("error: modelscope-hub is not installed (needed to pull from the hub) "
                                      f"({hubs.install_hint('modelscope-hub')})")


@pytest.mark.parametrize(("requires", "hint"), [
    (["huggingface_hub>=0.24", "torch==2.13.0; extra == 'demo'"],
     "pip install 'huggingface_hub>=0.24': a core dependency of deploykit"),
    (["huggingface-hub>=0.24; extra == 'all'", "huggingface-hub>=0.24; extra == \"hub\""],
     "pip install 'deploykit[hub]'"),
    (["modelscope-hub>=0.5"], "pip install 'modelscope-hub>=0.5': a core dependency of deploykit"),
    (["torch==2.13.0; extra == 'demo'"], "pip install 'huggingface_hub'"),
])
def test_install_hint_follows_the_packaging(monkeypatch, requires, hint):
    from importlib import metadata

    monkeypatch.setattr(metadata, "requires", lambda dist: requires)
    name = "modelscope_hub" if "modelscope" in hint else "huggingface_hub"
    assert hubs.install_hint(name) == hint


def test_silent_hub_listing_is_bounded(hub, card, monkeypatch, capsys):
    """A server that accepts and never answers: the listing times out (huggingface_hub 2.x sets no
    timeout of its own), exit 4 in about the timeout, not forever."""
    import threading
    import time

    from deploy_kit.weights import hubs

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in range(8)], daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(hubs, "HF_API_TIMEOUT_S", 1.0)
    t0 = time.monotonic()
    try:
        assert main(["pull", card]) == 4
    finally:
        silent.close()
    assert time.monotonic() - t0 < 6  # measured 2.0 s (one retry of a 1 s timeout)
    assert one_error_line(capsys) == ("error: huggingface: cannot list org/tiny: timed out "
                                      "(check network / HF_ENDPOINT, or use --offline)")


def test_stalled_file_body_is_bounded_and_fetched_again(hub, monkeypatch):
    """A file body that stops mid-way: the client's read timeout fires and it fetches the file again
    within the same pull (measured: 2.6 s with a 1 s read timeout)."""
    import time

    import huggingface_hub.constants as C

    from deploy_kit.weights.spec import WeightSpec

    monkeypatch.setattr(C, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    hub.stall["model.safetensors"] = 1000
    t0 = time.monotonic()
    res = pullmod.pull(WeightSpec(name="tiny", source="huggingface", repo_id="org/tiny",
                                  expected=dict(CARD_FACTS)), log=lambda m: None)
    assert time.monotonic() - t0 < 10
    assert res.downloaded
    assert (res.path / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    assert len([p for m, p, _ in hub.requests if m == "GET" and p.endswith("model.safetensors")]) >= 2


@pytest.mark.parametrize("evil", ["../escape.safetensors", "/tmp/escape.safetensors", "sub/../../escape.py"])
def test_listing_with_a_path_outside_the_model_dir_is_refused(hub, tmp_path, capsys, evil):
    card = str(write_card(tmp_path / "rc.yaml", trust_remote_code=True))
    hub.files[evil] = b"payload"
    assert main(["pull", card]) == 4
    line = one_error_line(capsys)
    assert line.startswith("error: huggingface: malformed file listing for org/tiny (unsafe file path ")
    assert not hub.file_gets() and not (tmp_path / "escape.safetensors").exists()
