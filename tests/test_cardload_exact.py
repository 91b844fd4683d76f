"""deploy_kit/cardload.py's messages, lines and limits, exactly: bounded reads, the YAML walker
(lines per dotted path, duplicates, tags, budget), --set parsing and layering, and how pydantic
errors become one line with its field and line (mutation run: docs/measurements/mutation/)."""

from __future__ import annotations

import os

import pytest

from deploy_kit import cardload
from deploy_kit.cardload import (_apply_set, _deep_merge, _line_for, _set_value, _short_repr, load_yaml_with_lines,
                                 parse_set, read_text_bounded)
from deploy_kit.errors import BadInput, CardErrors

pytestmark = pytest.mark.unit


def _bad(fn, *args, **kw) -> BadInput:
    with pytest.raises(BadInput) as exc:
        fn(*args, **kw)
    return exc.value


# ------------------------------------------------------------------ bounded reads

def test_read_limits_name_the_file_and_the_limit(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"x" * 11)
    assert read_text_bounded(f, limit=11) == "x" * 11
    assert _bad(read_text_bounded, f, limit=10).message == f"file {f} is 11 bytes, more than the 10 allowed"
    assert _bad(read_text_bounded, tmp_path, what="card").message == f"card {tmp_path} is a directory, not a file"
    assert _bad(read_text_bounded, tmp_path / "no.yaml").message == f"file not found: {tmp_path / 'no.yaml'}"


def test_a_fifo_is_not_read(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _bad(read_text_bounded, fifo).message == f"file {fifo} is not a regular file"


def test_non_utf8_names_the_byte_and_its_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"a: 1\nb: 2\nc: \xff\n")
    err = _bad(read_text_bounded, f)
    assert (err.message, err.file, err.line) == ("not UTF-8 text (byte 13)", str(f), 3)


# ------------------------------------------------------------------ the walker

def test_lines_of_every_dotted_path():
    data, lines = load_yaml_with_lines("c.yaml", "a:\n  b: 1\n  c:\n    - x\n    - y\nd: 2\n")
    assert data == {"a": {"b": 1, "c": ["x", "y"]}, "d": 2}
    assert lines == {"a": 1, "a.b": 2, "a.c": 3, "a.c.0": 4, "a.c.1": 5, "d": 6}


def test_empty_yaml_is_an_empty_mapping():
    assert load_yaml_with_lines("c.yaml", "") == ({}, {})
    assert load_yaml_with_lines("c.yaml", "# only a comment\n") == ({}, {})


def test_duplicate_keys_name_both_lines_and_every_duplicate():
    with pytest.raises(CardErrors) as exc:
        load_yaml_with_lines("c.yaml", "a: 1\nb: 2\na: 3\nb: 4\n")
    got = [(e.message, e.line, e.field) for e in exc.value.errors]
    assert got == [("duplicate key 'a' (also on line 1)", 3, "a"), ("duplicate key 'b' (also on line 2)", 4, "b")]


def test_nested_duplicate_names_its_path():
    with pytest.raises(CardErrors) as exc:
        load_yaml_with_lines("c.yaml", "s:\n  k: 1\n  k: 2\n")
    assert (exc.value.message, exc.value.line, exc.value.field) == ("duplicate key 'k' (also on line 2)", 3, "s.k")


def test_unsafe_tags_are_refused_with_their_line():
    err = _bad(load_yaml_with_lines, "c.yaml", "a: 1\nb: !!python/object:os.system {}\n")
    assert (err.message, err.line) == ("unsafe or invalid YAML: tag 'tag:yaml.org,2002:python/object:os.system' "
                                       "is not allowed", 2)


def test_a_complex_key_is_refused():
    err = _bad(load_yaml_with_lines, "c.yaml", "? [a, b]\n: 1\n")
    assert (err.message, err.line) == ("a mapping key must be a plain value, not a list or mapping", 1)


def test_depth_limit_is_exact():
    ok = "a: " + "[" * 31 + "]" * 31 + "\n"
    load_yaml_with_lines("c.yaml", ok)
    err = _bad(load_yaml_with_lines, "c.yaml", "a: " + "[" * 32 + "]" * 32 + "\n")
    assert (err.message, err.line) == ("YAML nests deeper than 32 levels", 1)


def test_node_budget_is_exact(monkeypatch):
    monkeypatch.setattr(cardload, "MAX_YAML_NODES", 4)
    assert load_yaml_with_lines("c.yaml", "[1, 2, 3]\n")[0] == [1, 2, 3]  # 4 nodes: the list and 3 items
    err = _bad(load_yaml_with_lines, "c.yaml", "[1, 2, 3, 4]\n")
    assert (err.message, err.line) == ("YAML expands to more than 4 values (aliases?)", 1)


def test_text_over_the_size_limit(monkeypatch):
    monkeypatch.setattr(cardload, "MAX_YAML_BYTES", 8)
    assert load_yaml_with_lines("c.yaml", "a: 12345")[0] == {"a": 12345}
    assert _bad(load_yaml_with_lines, "c.yaml", "a: 123456").message == "more than 8 characters of YAML"


def test_yaml_syntax_error_has_its_line():
    err = _bad(load_yaml_with_lines, "c.yaml", "a: 1\nb: [1, 2\n")
    assert err.message.startswith("not valid YAML: ") and err.line == 3 and err.file == "c.yaml"


def test_an_int_past_pythons_digit_limit_is_one_line():
    err = _bad(load_yaml_with_lines, "c.yaml", "a: 1\nb: " + "9" * 5000 + "\n")
    assert err.message.startswith("value cannot be read: ") and err.line == 2


# ------------------------------------------------------------------ --set and layering

@pytest.mark.parametrize(("expr", "parsed"), [
    ("serve.max_model_len=8192", ("serve.max_model_len", 8192)),
    (" serve.dtype = float32", ("serve.dtype", " float32")),   # the key is stripped; YAML strips the value
    ("a=b=c", ("a", "b=c")),
    ("a=", ("a", "")), ("a=  ", ("a", "")),
    ("a=null", ("a", None)), ("a=~", ("a", None)),
    ("a=[1, x]", ("a", [1, "x"])), ("a={k: v}", ("a", {"k": "v"})),
    ("a=[unclosed", ("a", "[unclosed")),                    # not YAML: the text itself
    ("a=true", ("a", True)), ("a=0.5", ("a", 0.5)),
])
def test_parse_set(expr, parsed):
    key, value = parse_set(expr)
    assert key == parsed[0]
    assert value == (parsed[1].strip() if isinstance(parsed[1], str) else parsed[1])


def test_parse_set_errors():
    err = _bad(parse_set, "serve.dtype")
    assert (err.message, err.file, err.field) == ("expected KEY=VALUE, got 'serve.dtype'", "--set", "serve.dtype")
    err = _bad(parse_set, " =1")
    assert (err.message, err.file) == ("empty key in ' =1'", "--set")


def test_set_value_limit_and_duplicates(monkeypatch):
    monkeypatch.setattr(cardload, "MAX_YAML_BYTES", 5)
    assert _set_value("12345") == 12345
    assert _bad(_set_value, "123456").message == "value longer than 5 characters"
    monkeypatch.undo()
    with pytest.raises(CardErrors) as exc:
        _set_value("{a: 1, a: 2}")
    assert exc.value.message == "duplicate key 'a' (also on line 1)"


def test_apply_set_builds_mappings_and_stringifies_env_values():
    data: dict = {"serve": {"dtype": "bfloat16"}, "env": {}}
    _apply_set(data, "serve.max_num_seqs", 4)
    _apply_set(data, "new.deep.key", 1)
    _apply_set(data, "env.HCCL_BUFFSIZE", 200)
    _apply_set(data, "env.FLAG", True)
    _apply_set(data, "env.OFF", False)
    _apply_set(data, "env.RATIO", 0.5)
    _apply_set(data, "serve.enforce_eager", True)
    assert data == {"serve": {"dtype": "bfloat16", "max_num_seqs": 4, "enforce_eager": True},
                    "env": {"HCCL_BUFFSIZE": "200", "FLAG": "True", "OFF": "False", "RATIO": "0.5"},
                    "new": {"deep": {"key": 1}}}
    err = _bad(_apply_set, data, "serve.dtype.x", 1)
    assert (err.message, err.field) == ("'dtype' is not a mapping", "serve.dtype.x")


def test_deep_merge_merges_mappings_but_replaces_limit_mm_per_prompt():
    base = {"a": {"x": 1, "y": 2}, "limit_mm_per_prompt": {"image": 1, "video": 1}, "l": [1]}
    top = {"a": {"y": 3}, "limit_mm_per_prompt": {"image": 4}, "l": [2], "n": None}
    out = _deep_merge(base, top)
    assert out == {"a": {"x": 1, "y": 3}, "limit_mm_per_prompt": {"image": 4}, "l": [2], "n": None}
    assert base["a"] == {"x": 1, "y": 2}  # inputs untouched
    top["l"].append(9)
    assert out["l"] == [2]


def test_line_for_walks_up_to_the_nearest_known_parent():
    lines = {"serve": 4, "serve.dtype": 5}
    assert _line_for("serve.dtype", lines) == 5
    assert _line_for("serve.max_model_len", lines) == 4
    assert _line_for("model.id", lines) is None
    assert _line_for("", lines) is None


def test_short_repr_is_bounded():
    assert _short_repr("abc") == "'abc'"
    assert _short_repr("x" * 78) == repr("x" * 78)            # 80 characters with the quotes
    assert _short_repr("x" * 79) == repr("x" * 79)[:77] + "..."


def test_a_card_must_be_a_mapping(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- a\n- b\n")
    err = _bad(cardload.load_card, str(f))
    assert (err.message, err.line) == ("a card must be a YAML mapping", 1)


def test_unknown_catalog_name_suggests_the_closest():
    err = _bad(cardload.card_path, "smollm2-135m-instrukt")
    assert err.message == "no card named 'smollm2-135m-instrukt' in the catalog"
    assert err.hint == "did you mean 'smollm2-135m-instruct'?"
    assert _bad(cardload.card_path, "zzzz").hint == "see `deploykit list`"


# ------------------------------------------------------------------ pydantic errors as lines, in-process

DEMO = (cardload.data_dir("models") / "smollm2-135m-instruct.yaml").read_text()


def _card_errors(tmp_path, text: str) -> CardErrors:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(CardErrors) as exc:
        cardload.load_card(str(f))
    return exc.value


def _rows(errs: CardErrors) -> list[tuple]:
    return [(e.message, e.line, e.field, e.hint) for e in errs.errors]


def test_a_misspelt_key_is_primary_with_did_you_mean_and_the_missing_one_beside_it(tmp_path):
    errs = _card_errors(tmp_path, DEMO.replace("  context_length: 8192", "  context_lenght: 8192"))
    assert _rows(errs) == [("required field is missing", 5, "model.context_length", None),
                           ("unknown key 'context_lenght'", 13, "model.context_lenght",
                            "did you mean 'context_length'?")]
    assert errs.primary is errs.errors[1] and errs.message == "unknown key 'context_lenght'"
    assert errs.file == str(tmp_path / "c.yaml") and errs.line == 13


def test_an_unknown_key_far_from_any_lists_what_is_allowed(tmp_path):
    errs = _card_errors(tmp_path, DEMO + "bogus: 1\n")
    assert _rows(errs) == [("unknown key 'bogus'", DEMO.count("\n") + 1, "bogus",
                            "allowed: name, description, model, serve, env, targets, smoke, eval, sources")]


def test_type_errors_quote_the_value_and_sort_by_line(tmp_path):
    errs = _card_errors(tmp_path, DEMO.replace("context_length: 8192", "context_length: -1")
                        .replace("params_b: 0.135", "params_b: x"))
    assert _rows(errs) == [
        ("Input should be a valid number, unable to parse string as a number (got 'x')", 11, "model.params_b", None),
        ("Input should be greater than 0 (got -1)", 13, "model.context_length", None)]
    assert errs.primary is errs.errors[0]


def test_a_validator_rule_names_the_field_it_is_about(tmp_path):
    errs = _card_errors(tmp_path, DEMO.replace("num_kv_heads: 3", "num_kv_heads: 4"))
    assert _rows(errs) == [("num_attention_heads (9) must be a multiple of num_kv_heads (4)", 20,
                            "model.config.num_kv_heads", None)]


def test_a_catalog_card_must_carry_its_file_name(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "other-name.yaml").write_text(DEMO)
    monkeypatch.setattr(cardload, "data_dir", lambda kind: tmp_path / kind)
    err = _bad(cardload.load_card, "other-name")
    assert (err.message, err.line, err.field) == (
        "card name 'smollm2-135m-instruct' differs from its file name 'other-name'", 3, "name")


# ------------------------------------------------------------------ resolve: layering and attribution

def test_layering_builtin_target_card_override_set():
    lc = cardload.load_card("smollm2-135m-instruct")
    r = cardload.resolve(lc, "cpu", {"max_num_seqs": 8, "gpu_memory_utilization": 0.8}, {"A": "1"},
                         ["serve.max_model_len=1024", "env.B=2"])
    s = r.card.serve
    # builtin tp 1 < target (utilisation 0.8) < card (max_num_seqs 16) < cpu override (float32, eager) < --set
    assert (s.tensor_parallel_size, s.gpu_memory_utilization, s.max_num_seqs, s.dtype, s.enforce_eager,
            s.max_model_len) == (1, 0.8, 16, "float32", True, 1024)
    assert r.card.env == {"A": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "B": "2"}
    assert (r.target, r.set_keys, r.override_unsupported) == ("cpu", ["serve.max_model_len", "env.B"], None)
    other = cardload.resolve(lc, "cuda", {}, {}, ["serve.tensor_parallel_size=null"])
    assert (other.card.serve.dtype, other.card.serve.enforce_eager, other.card.serve.tensor_parallel_size) == \
        (None, False, 1)  # null means "the default"; the cpu override does not apply to cuda
    assert "targets" not in lc.raw or lc.raw["targets"]["cpu"]  # the loaded card is not consumed


def test_a_bad_set_value_is_blamed_on_set():
    lc = cardload.load_card("smollm2-135m-instruct")
    err = _bad(cardload.resolve, lc, "cpu", {}, {}, ["serve.max_model_len=-3"])
    assert (err.message, err.file, err.line, err.field) == ("Input should be greater than 0 (got -3)", "--set", None,
                                                            "serve.max_model_len")
    err = _bad(cardload.resolve, lc, "cpu", {}, {}, ["targets.cpu.serve.dtype=float16"])
    assert (err.message, err.file, err.field) == ("--set applies to the resolved card; set serve.* or env.* directly",
                                                  "--set", "targets.cpu.serve.dtype")


def test_an_override_that_breaks_a_rule_is_blamed_on_its_own_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(DEMO.replace("readiness_timeout_s: 600}", "readiness_timeout_s: 600, max_model_len: 9000}"))
    err = _bad(cardload.resolve, cardload.load_card(str(f)), "cpu", {}, {})
    assert (err.message, err.file, err.line, err.field) == ("9000 exceeds model.context_length (8192)", str(f), 32,
                                                            "targets.cpu.serve.max_model_len")


def test_unsupported_comes_from_the_targets_override(tmp_path):
    f = tmp_path / "c.yaml"
    demo_env = '    env: {VLLM_CPU_KVCACHE_SPACE: "2", VLLM_ENABLE_V1_MULTIPROCESSING: "0"}'
    assert demo_env in DEMO
    f.write_text(DEMO.replace(demo_env, demo_env + '\n  cuda:\n    unsupported: no GPU build here'))
    lc = cardload.load_card(str(f))
    assert cardload.resolve(lc, "cuda", {}, {}).override_unsupported == "no GPU build here"
    assert cardload.resolve(lc, "cpu", {}, {}).override_unsupported is None


def test_field_line_prefers_the_target_override():
    lc = cardload.load_card("smollm2-135m-instruct")
    path = str(lc.path)
    assert cardload.field_line(lc, "serve.dtype", "cpu") == (path, 32)
    assert cardload.field_line(lc, "serve.dtype") == (path, 23)
    assert cardload.field_line(lc, "model.id", "cpu") == (path, 6)


def test_card_digest_is_16_hex_of_the_raw_card_and_order_free(tmp_path):
    lc = cardload.load_card("smollm2-135m-instruct")
    d = lc.digest()
    assert len(d) == 16 and int(d, 16) >= 0
    f = tmp_path / "c.yaml"
    moved = DEMO.replace("  trust_remote_code: false\n", "").replace("  architecture:", "  trust_remote_code: false\n"
                                                                      "  architecture:")
    f.write_text(moved)
    assert cardload.load_card(str(f)).digest() == d          # key order does not matter
    f.write_text(DEMO.replace("max_num_seqs: 16", "max_num_seqs: 15"))
    assert cardload.load_card(str(f)).digest() != d


def test_yaml_error_message_and_line():
    err = cardload._yaml_error(ValueError("first line\nsecond"), "f.yaml")
    assert (err.message, err.file, err.line) == ("not valid YAML: first line", "f.yaml", None)
