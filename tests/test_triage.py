"""Triage corpus: one real-looking log per signature, plus unknown logs that must not be guessed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_kit.console import clean
from deploy_kit.doctor.triage import UNKNOWN_FIX, load_signatures, triage_text

pytestmark = pytest.mark.unit

LOGS = Path(__file__).parent / "fixtures" / "logs"

EXPECTED = {
    "device_busy.log": "device_busy",
    "hbm_oom.log": "hbm_oom",
    "kv_cache_too_small.log": "kv_cache_too_small",
    "acl_graph_capture.log": "acl_graph_capture",
    "hccl_timeout.log": "hccl_timeout",
    "shm_too_small.log": "shm_too_small",
    "shm_bus_error.log": "shm_too_small",
    "disk_full.log": "disk_full",
    "trust_remote_code.log": "trust_remote_code",
    "unsupported_quantization.log": "unsupported_quantization",
    "tokenizer_missing.log": "tokenizer_missing",
    "processor_missing.log": "tokenizer_missing",
    "unsupported_architecture.log": "unsupported_architecture",
    "port_in_use.log": "port_in_use",
    "cpu_unsupported_head_dim.log": "cpu_unsupported_head_dim",
    "illegal_instruction.log": "illegal_instruction",
    "hub_unreachable.log": "hub_unreachable",
    "bad_argument.log": "bad_argument",
    "engine_hung.log": "engine_hung",
    "engine_exited.log": "engine_exited",
}
UNKNOWN = sorted(p.name for p in LOGS.glob("unknown_*.log"))


@pytest.mark.parametrize("name,sig", sorted(EXPECTED.items()))
def test_corpus_log_names_its_cause(name, sig):
    res = triage_text((LOGS / name).read_text())
    assert res.signature == sig, (res.signature, res.matched_lines)
    assert res.known and res.cause and res.fix and res.fix != UNKNOWN_FIX
    assert res.matched_lines, "the evidence lines must be returned"
    assert all(ln in (LOGS / name).read_text() for ln in res.matched_lines)


def test_every_signature_has_a_corpus_log():
    assert {s.id for s in load_signatures()} == set(EXPECTED.values())


def test_corpus_covers_all_log_files():
    assert set(EXPECTED) | set(UNKNOWN) == {p.name for p in LOGS.glob("*.log")}


@pytest.mark.parametrize("name", UNKNOWN)
def test_unknown_logs_are_not_guessed(name):
    text = (LOGS / name).read_text()
    res = triage_text(text)
    assert res.cause is None and res.signature is None and not res.known
    assert res.fix == UNKNOWN_FIX and "unknown cause" in res.fix
    assert res.last_lines and res.last_lines[-1] == text.strip().splitlines()[-1].rstrip()


def test_last_lines_are_bounded_and_in_order():
    text = "\n".join(f"line {i}" for i in range(100))
    res = triage_text(text, last=30)
    assert res.last_lines == [f"line {i}" for i in range(70, 100)]


def test_root_cause_wins_over_cascade():
    # device busy makes the HCCL init fail later: the earlier-listed root cause must win.
    text = (LOGS / "device_busy.log").read_text() + (LOGS / "hccl_timeout.log").read_text()
    res = triage_text(text)
    assert res.signature == "device_busy"
    assert "hccl_timeout" in res.also_matched


def test_no_space_without_shm_is_disk_not_shm():
    assert triage_text("OSError: [Errno 28] No space left on device: '/data/x'").signature == "disk_full"


def test_ansi_colour_codes_are_ignored():
    assert triage_text("\x1b[31mERROR:\x1b[0m [Errno 98] Address already in use").signature == "port_in_use"


def test_empty_text_is_unknown():
    res = triage_text("")
    assert res.cause is None and res.last_lines == []


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deploy_kit.cli", *args], capture_output=True, text=True, timeout=60)


def test_cli_triage_log_json():
    p = _cli("triage", "--log", str(LOGS / "hbm_oom.log"), "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["signature"] == "hbm_oom" and "NPU out of memory" in data["matched_lines"][-1]


def test_cli_triage_unknown_prints_last_lines():
    p = _cli("triage", "--log", str(LOGS / "unknown_python_error.log"))
    assert p.returncode == 0
    assert "unknown cause" in p.stdout and "qweight_scale_inv" in p.stdout


def test_cli_triage_missing_file_is_bad_input(tmp_path):
    p = _cli("triage", "--log", str(tmp_path / "nope.log"))
    assert p.returncode == 2 and "cannot read log" in p.stderr


def test_cli_triage_needs_name_or_log():
    assert _cli("triage").returncode == 2


@pytest.mark.parametrize("line", [
    "INFO [core.py:69] Initializing a V1 LLM engine with config: trust_remote_code=True, quantization=None",
    "INFO [envs.py:80] HCCL_CONNECT_TIMEOUT=1200 HCCL_EXEC_TIMEOUT=1200",
    "INFO [model_runner_v1.py:2150] Capturing ACL graphs for decode batch sizes [1, 2, 4]",
    "WARNING [platform.py:180] Prefix caching is not supported for now, disabling it.",
    'File "/vllm-workspace/vllm-ascend/vllm_ascend/compilation/acl_graph.py", line 172, in __call__',
])
def test_benign_lines_do_not_match(line):
    assert triage_text(line).signature is None


@pytest.mark.parametrize("line", ["[ERROR] HCCL connect timeout after 120s", "HCCL socket build failed",
                                  "RuntimeError: HCCL execute timeout"])
def test_hccl_variants_match(line):
    assert triage_text(line).signature == "hccl_timeout"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=20),
       st.sampled_from(["OSError: [Errno 98] Address already in use", "Illegal instruction (core dumped)", ""]))
def test_triage_quotes_only_lines_of_the_log_and_never_escapes(noise, signal):
    """Any log: no exception; a named cause is quoted from the log itself; nothing printed keeps an
    escape sequence (a hostile log cannot drive the terminal)."""
    text = "\n".join([*noise, "\x1b[31m" + signal + "\x1b[0m"])
    res = triage_text(text)
    cleaned = [clean(ln).replace("\n", " ").strip() for ln in text.split("\n")]
    for ln in res.matched_lines + res.last_lines:
        assert "\x1b" not in ln and ln.strip() in cleaned
    if res.known:
        assert res.matched_lines, "a cause is only named with the line that shows it"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("|+-= 0123456789abcNPUChipOKWarning/:.\n"), max_size=400))
def test_npu_smi_parser_takes_any_text(text):
    from deploy_kit.doctor.npusmi import parse_npu_smi_info

    info = parse_npu_smi_info(text)
    assert all(c.hbm_used_mb >= 0 and c.npu >= 0 for c in info.chips)


def test_watchdog_restart_lines_are_named_and_an_engine_error_wins():
    from deploy_kit.doctor.triage import triage_text

    hung = "INFO ok\ndeploykit-watchdog: /health failed 3 times in a row (last: timed out); stopping the engine\n"
    assert triage_text(hung).signature == "engine_hung"
    crashed = "deploykit-watchdog: engine exited with code 1\n"
    assert triage_text(crashed).signature == "engine_exited"
    assert triage_text("deploykit-watchdog: engine exited with code 0\n").signature is None
    root = "RuntimeError: NPU out of memory. Tried to allocate 2.00 GiB\n" + crashed
    res = triage_text(root)
    assert res.signature == "hbm_oom" and res.also_matched == ["engine_exited"]
