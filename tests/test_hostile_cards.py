"""Hostile or odd cards (issue 13, classes 3, 4, 8, 9 and the --expose key): every probe of the
issue ends in exit 2 or 3 with one line, in bounded time and memory, writing nothing."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_kit.errors import BadInput, CardErrors
from tests.conftest import REPO, deploykit_bin

pytestmark = pytest.mark.unit

BASE = yaml.safe_load((REPO / "models" / "smollm2-135m-instruct.yaml").read_text())
BASE["name"] = "probe"


@pytest.fixture()
def env(tmp_path):
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "DEPLOYKIT_STATE": str(tmp_path / "state"),
            "DEPLOYKIT_CACHE": str(tmp_path / "cache")}


def cli(args: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([deploykit_bin(), *args], capture_output=True, text=True, timeout=timeout, env=env)


def card_file(tmp_path: Path, edit=None, text: str | None = None) -> Path:
    data = copy.deepcopy(BASE)
    if edit:
        edit(data)
    path = tmp_path / "probe.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


ALIAS_BOMB = "".join(
    [f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n" if i else
     'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' for i in range(9)])


def test_alias_bomb_ends_fast_in_little_memory(tmp_path, env):
    assert len(ALIAS_BOMB) < 700
    path = card_file(tmp_path, text=ALIAS_BOMB)
    # Peak Python allocation during `validate` (tracemalloc): ru_maxrss would carry over the forking
    # parent's high-water mark (Linux keeps it across exec), so late in a big pytest run it reads GBs.
    code = ("import time, sys, tracemalloc; from deploy_kit.cli import main; tracemalloc.start(); "
            f"t = time.perf_counter(); rc = main(['validate', {str(path)!r}]); "
            "print(rc, time.perf_counter() - t, tracemalloc.get_traced_memory()[1], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    rc, seconds, peak_bytes = proc.stderr.strip().splitlines()[-1].split()
    assert rc == "2"
    assert f"{path}:" in proc.stderr and "YAML expands to more than 20000 values (aliases?)" in proc.stderr
    assert float(seconds) < 3.0, seconds             # measured 1.1 s under tracemalloc (minutes and 2 GB before)
    assert int(peak_bytes) < 50_000_000, peak_bytes  # measured 10.9 MB peak


@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000 + "]" * 100_000, "YAML nests deeper than 32 levels"),
    ("a: " + "x" * (1 << 20) + "\n", "bytes, more than the 1048576 allowed"),
    ("a: !!python/object:os.system {}\n", "unsafe or invalid YAML"),
    ("a: [1, 2\n", "not valid YAML"),
    ("? [a, b]\n: 1\n", "a mapping key must be a plain value"),
    ("name: x\nname: y\n", "name: duplicate key 'name' (also on line 1)"),
    ("a: " + "9" * 5000 + "\n", "value cannot be read"),
])
def test_odd_yaml_is_one_line_exit_2(tmp_path, env, text, needle):
    proc = cli(["plan", str(card_file(tmp_path, text=text))], env)
    assert proc.returncode == 2
    assert needle in one_error_line(proc)


def test_duplicate_keys_name_both_lines(tmp_path):
    from deploy_kit.cardload import load_card

    text = (REPO / "models" / "smollm2-135m-instruct.yaml").read_text()
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith("max_num_seqs:"))
    lines.insert(i + 1, lines[i].replace(lines[i].split(":")[1], " 4"))
    path = card_file(tmp_path, text="\n".join(lines).replace("name: smollm2-135m-instruct", "name: probe") + "\n")
    with pytest.raises(CardErrors) as ei:
        load_card(str(path))
    assert ei.value.one_line() == (f"{path}:{i + 2}: serve.max_num_seqs: duplicate key 'max_num_seqs' "
                                   f"(also on line {i + 1})")


def test_card_path_directory_non_utf8_unreadable_fifo(tmp_path, env, monkeypatch):
    from deploy_kit.cardload import load_card

    proc = cli(["plan", str(tmp_path)], env)
    assert proc.returncode == 2 and one_error_line(proc) == f"error: file {tmp_path} is a directory, not a file"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\ndescription: caf\xe9\n")
    proc = cli(["plan", str(latin)], env)
    assert proc.returncode == 2 and one_error_line(proc) == f"error: {latin}:2: not UTF-8 text (byte 24)"
    proc = cli(["plan", "/dev/zero"], env, timeout=20)
    assert proc.returncode == 2 and one_error_line(proc) == "error: file /dev/zero is not a regular file"
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    proc = cli(["validate", str(fifo)], env, timeout=20)  # would block forever on open()
    assert proc.returncode == 2 and one_error_line(proc) == f"error: file {fifo} is not a regular file"
    good = card_file(tmp_path)

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # simulated: root reads a chmod 000 file anyway
    with pytest.raises(BadInput) as ei:
        load_card(str(good))
    assert ei.value.one_line() == f"cannot read file {good}: Permission denied"


def _set(path: str, value):
    def edit(d):
        cur = d
        *parents, last = path.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return edit


@pytest.mark.parametrize("field,value,needle", [
    ("model.weight_bits", -4, "greater than or equal to 1"),
    ("model.weight_bits", 0, "greater than or equal to 1"),
    ("model.weight_bits", 64, "less than or equal to 32"),
    ("serve.limit_mm_per_prompt", {"image": -1}, "greater than or equal to 0"),
    ("serve.limit_mm_per_prompt", {"image": 10 ** 30}, "less than or equal to 1024"),
    ("serve.limit_mm_per_prompt", {"$(id)": 1}, "Input should be"),
    ("model.params_b", float("inf"), "finite number"),
    ("model.params_b", float("nan"), "finite number"),
    ("model.params_b", 1e300, "less than or equal to 100000"),
    ("model.context_length", 10 ** 40, "less than or equal to 134217728"),
    ("model.config.num_layers", -1, "greater than 0"),
    ("model.config.num_layers", 10 ** 20, "less than or equal to 1048576"),
    ("serve.max_num_seqs", 10 ** 9, "less than or equal to 65536"),
    ("serve.tensor_parallel_size", 4096, "less than or equal to 1024"),
    ("serve.readiness_timeout_s", 10 ** 12, "less than or equal to 604800"),
    ("serve.gpu_memory_utilization", -0.5, "greater than 0"),
    ("smoke.prompts", [{"prompt": "hi", "expect": "x", "max_tokens": -3}], "greater than 0"),
])
def test_every_numeric_field_is_bounded(tmp_path, env, field, value, needle):
    proc = cli(["validate", str(card_file(tmp_path, _set(field, value)))], env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr and field.split(".")[-1] in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_derived_memory_quantity_is_negative():
    """With every field at its bound, the estimate stays finite and non-negative."""
    from deploy_kit.cards import Card
    from deploy_kit.memory import estimate

    for bits, tp in ((1, 1), (32, 1024)):
        data = copy.deepcopy(BASE)
        data["model"].update(weight_bits=bits, params_b=100_000, context_length=1 << 27)
        data["serve"].update(max_model_len=1 << 27, max_num_seqs=1 << 16, tensor_parallel_size=tp)
        card = Card.model_validate(data)
        m = estimate(card, tp=tp, device_memory_gib=64, reserve_gib=2)
        for v in (m.weights_gib, m.kv_cache_gib, m.need_per_device_gib, m.max_full_length_seqs):
            assert 0 <= v < float("inf")
        assert m.fits is False


@pytest.mark.parametrize("key", ["VLLM_X;touch /tmp/p", "VLLM_$(id)", "VLLM_`id`", "VLLM_X\nLD_PRELOAD",
                                 "vllm_lower", "1VLLM", "VLLM X", "VLLM_X=Y"])
def test_env_keys_are_names_before_any_glob(tmp_path, env, key):
    """The probe: VLLM_* matched ';', '$(...)', backticks and newlines, smuggling LD_PRELOAD/HF_TOKEN."""
    proc = cli(["render", str(card_file(tmp_path, lambda d: d["env"].update({key: "1"}))), "--target", "cpu",
                "--port", "18994", "--out", str(tmp_path / "o")], env)
    assert proc.returncode == 2
    assert "is not a variable name" in one_error_line(proc)
    assert not (tmp_path / "o").exists()


def test_env_value_with_newline_cannot_add_a_line(tmp_path, env):
    proc = cli(["render", str(card_file(tmp_path, lambda d: d["env"].update({"VLLM_X": "1\nHF_TOKEN=x"}))),
                "--target", "cpu", "--out", str(tmp_path / "o")], env)
    assert proc.returncode == 2
    assert "env.VLLM_X: env value must be one line" in one_error_line(proc)


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "x" * 64, "A", "a\nb", "", "a..b"])
def test_validate_name_refuses_what_is_not_one_path_segment(name):
    from deploy_kit.paths import validate_name

    with pytest.raises(BadInput) as ei:
        validate_name(name, "deployment name")
    assert ei.value.exit_code == 2
    assert ei.value.one_line().startswith(f"deployment name {name!r} is not a valid name (lower-case")
    assert "\n" not in ei.value.one_line()


@pytest.mark.parametrize("argv", [["logs", "../../x"], ["down", "../../x"], ["down", "../../x", "--dry-run"],
                                  ["smoke", "../../x"], ["triage", "../../x"]])
def test_a_deployment_name_that_is_a_path_is_refused(tmp_path, env, argv):
    proc = cli(argv, env)
    assert proc.returncode == 2
    assert one_error_line(proc) == ("error: deployment name '../../x' is not a valid name (lower-case letters, "
                                    "digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters)")
    assert not (tmp_path / "x").exists()


def test_state_refuses_a_path_as_a_deployment_name(tmp_path, monkeypatch):
    """The one guard behind every command: record and run dirs never take a path."""
    from deploy_kit.errors import BadInput
    from deploy_kit.runtime import state

    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))
    for call in (state.load, state.run_dir, state.delete, state.record_path):
        with pytest.raises(BadInput, match=r"^deployment name '\.\./x' is not a valid name$"):
            call("../x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "state" / "runs").exists()


@pytest.mark.parametrize("key", [None, "", "   ", "\t"])
def test_expose_refuses_a_blank_api_key(tmp_path, env, key):
    if key is not None:
        env = {**env, "VLLM_API_KEY": key}
    proc = cli(["plan", "smollm2-135m-instruct", "--target", "cpu", "--port", "18993", "--expose"], env)
    assert proc.returncode == 2
    assert one_error_line(proc).startswith("error: --expose: --expose publishes the server on all interfaces "
                                           "and needs an API key")


def test_expose_with_a_key_plans_and_never_writes_it(tmp_path, env):
    env = {**env, "VLLM_API_KEY": "s3cret-key"}
    out = tmp_path / "o"
    proc = cli(["render", "smollm2-135m-instruct", "--target", "cpu", "--port", "18993", "--expose",
                "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    for f in out.iterdir():
        assert "s3cret-key" not in f.read_text()
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    (svc,) = compose["services"].values()
    assert svc["ports"] == ["0.0.0.0:18993:8000"] and svc["environment"]["VLLM_API_KEY"] is None


def test_messages_quoting_user_text_stay_one_line(tmp_path, env):
    path = card_file(tmp_path, lambda d: d["serve"].update({"bad\nkey[bold]": 1}))
    proc = cli(["validate", str(path)], env)
    assert proc.returncode == 2
    assert "unknown key 'bad\\nkey[bold]'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2  # the error, then the count

