"""Fuzz the front door (issue 13, class 6): cards, --set values and CLI flags through
deploy_kit.cli.main. Whatever the input, the exit code is 0, 2 or 3 and the output holds no
traceback and no "internal error" (an exception that escaped the error boundary)."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO

# Hypothesis runs many examples per test: measured 6-17 s each here, the unit default is 60 s.
pytestmark = [pytest.mark.unit, pytest.mark.timeout(180)]

BASE = yaml.safe_load((REPO / "models" / "smollm2-135m-instruct.yaml").read_text())
BASE["name"] = "fuzz"
FIELDS = ["name", "model.id", "model.source", "model.revision", "model.params_b", "model.context_length",
          "model.weight_bits", "model.dtype", "model.modalities", "model.config.num_layers",
          "model.config.num_kv_heads", "model.config.head_dim", "model.gguf", "serve.max_model_len",
          "serve.tensor_parallel_size", "serve.max_num_seqs", "serve.gpu_memory_utilization",
          "serve.limit_mm_per_prompt", "serve.extra_args", "serve.served_model_name", "serve.quantization",
          "env", "env.VLLM_X", "env.HCCL_BUFFSIZE", "targets", "targets.cpu.serve", "smoke.prompts", "eval"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["$(id)", "a\nb", "[bold]x[/]", "\x1b]0;title\x07", "../../x", "-1", "1e400", "~", "*"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
TEXTS = st.one_of(st.text(max_size=30), st.sampled_from(["0", "-1", "a", "0,0", "1,a", "99999999999999999999",
                                                         "", " ", "[x]", "$(id)"]))
FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _private(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("fuzz")
    for var, sub in (("HOME", "home"), ("DEPLOYKIT_STATE", "state"), ("DEPLOYKIT_CACHE", "cache")):
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.delenv("VLLM_API_KEY", raising=False)


def run_main(args: list[str], capsys) -> tuple[int, str]:
    from deploy_kit import console
    from deploy_kit.cli import main

    console.reset()
    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text, text
    assert "internal error" not in text, text  # an exception type escaped cli.main's boundary
    assert rc in (0, 2, 3), (rc, text)
    return rc, text


def _put(data: dict, dotted: str, value) -> None:
    cur = data
    *parents, last = dotted.split(".")
    for p in parents:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[last] = value


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)  # .nan/.inf are written as YAML has them


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3),
       command=st.sampled_from(["plan", "validate", "show"]))
def test_fuzzed_cards(edits, command, tmp_path_factory, capsys):
    data = copy.deepcopy(BASE)
    for path, value in edits:
        _put(data, path, value)
    card = tmp_path_factory.mktemp("c") / "fuzz.yaml"
    card.write_text(_dump(data), encoding="utf-8")
    args = [command, str(card)] + (["--target", "cpu", "--port", "18992"] if command == "plan" else [])
    run_main(args, capsys)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))))
def test_fuzzed_card_bytes(raw, tmp_path_factory, capsys):
    card = tmp_path_factory.mktemp("b") / "fuzz.yaml"
    card.write_bytes(raw)
    rc, _ = run_main(["validate", str(card)], capsys)
    assert rc == 2


@FUZZ
@given(sets=st.lists(st.one_of(
    st.tuples(st.sampled_from(FIELDS), TEXTS).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=40)), min_size=1, max_size=3))
def test_fuzzed_set_values(sets, capsys):
    args = ["plan", "smollm2-135m-instruct", "--target", "cpu", "--port", "18992"]
    for s in sets:
        args += ["--set", s]
    run_main(args, capsys)


@FUZZ
@given(target=st.one_of(st.sampled_from(["cpu", "cuda", "ascend-a2", "ascend-a3"]), TEXTS),
       tp=st.one_of(st.none(), TEXTS), devices=st.one_of(st.none(), TEXTS), port=st.one_of(st.none(), TEXTS),
       command=st.sampled_from(["plan", "show", "render"]))
def test_fuzzed_flags(target, tp, devices, port, command, tmp_path_factory, capsys):
    args = [command, "smollm2-135m-instruct", "--target", target]
    if command != "show":
        for flag, value in (("--tp", tp), ("--devices", devices), ("--port", port)):
            if value is not None:
                args += [flag, value]
    if command == "render":
        args += ["--out", str(tmp_path_factory.mktemp("o") / "out"), "--dry-run"]
    run_main(args, capsys)


@pytest.mark.parametrize("text,message", [
    ("[bold]x", "error: no card named '[bold]x' in the catalog (see `deploykit list`)"),
    ("x[/]", "error: file not found: x[/]"),
    ("[link=file:///etc/passwd]y[/link]", "error: file not found: [link=file:/etc/passwd]y[/link]"),
])
def test_square_brackets_in_user_text_print_as_written(text, message, capsys):
    """The probe: user text with square brackets was parsed as Rich markup (a raw traceback)."""
    rc, out = run_main(["show", text], capsys)
    assert rc == 2
    assert out.strip() == message
