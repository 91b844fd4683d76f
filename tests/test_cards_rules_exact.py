"""deploy_kit/cards.py's own rules (the validators beyond field bounds), each with its exact
message and the field it names, on both sides of each boundary (mutation run:
docs/measurements/mutation/)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deploy_kit.cards import (Card, ConfigFacts, FieldError, ModelSpec, SmokePrompt, TargetOverride, json_schema,
                              revision_problem)

pytestmark = pytest.mark.unit

FACTS = {"num_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_kv_heads": 8, "vocab_size": 1000}
MODEL = {"id": "org/m", "architecture": "LlamaForCausalLM", "params_b": 8.0, "context_length": 8192,
         "config": FACTS}
SMOKE = {"prompts": [{"prompt": "hi", "expect": "."}]}


def _rule_error(model: type, data: dict) -> FieldError:
    """The FieldError a model validator raised (pydantic wraps it; its field and message stay)."""
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    err = exc.value.errors()[0]["ctx"]["error"]
    assert isinstance(err, FieldError)
    return err


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"num_kv_heads": 6}, "num_kv_heads", "num_attention_heads (32) must be a multiple of num_kv_heads (6)"),
    ({"hidden_size": 4001}, "head_dim", "hidden_size is not a multiple of num_attention_heads: give head_dim"),
    ({"num_experts": 8}, "num_experts", "num_experts and num_experts_per_tok go together (MoE) or not at all"),
    ({"num_experts_per_tok": 2}, "num_experts", "num_experts and num_experts_per_tok go together (MoE) or not at all"),
    ({"num_experts": 8, "num_experts_per_tok": 9}, "num_experts_per_tok", "9 exceeds num_experts (8)"),
    ({"sliding_window_layers": 4}, "sliding_window_layers", "sliding_window_layers needs sliding_window"),
    ({"sliding_window": 4096, "sliding_window_layers": 33}, "sliding_window_layers", "33 exceeds num_layers (32)"),
])
def test_config_fact_rules(change, field, message):
    err = _rule_error(ConfigFacts, {**FACTS, **change})
    assert (err.field, str(err)) == (field, message)


@pytest.mark.parametrize("change", [
    {"num_kv_heads": 32}, {"num_kv_heads": 1}, {"hidden_size": 4001, "head_dim": 125},
    {"num_experts": 8, "num_experts_per_tok": 8}, {"sliding_window": 4096, "sliding_window_layers": 32},
    {"sliding_window": 4096},
])
def test_config_facts_on_the_legal_side(change):
    ConfigFacts.model_validate({**FACTS, **change})


def test_head_dim_defaults_to_hidden_over_heads_and_an_explicit_one_wins():
    assert ConfigFacts.model_validate(FACTS).head_dim == 128
    assert ConfigFacts.model_validate({**FACTS, "head_dim": 64}).head_dim == 64


@pytest.mark.parametrize(("change", "message"), [
    ({"source": "local"}, "source 'local' needs model.path (the weights directory)"),
    ({"source": "gguf"}, "source 'gguf' needs model.gguf {package, file}"),
])
def test_source_needs_its_fields(change, message):
    err = _rule_error(ModelSpec, {**MODEL, **change})
    assert (err.field, str(err)) == ("source", message)


@pytest.mark.parametrize("change", [{"source": "local", "path": "/srv/w"},
                                    {"source": "gguf", "gguf": {"package": "p", "file": "f.gguf"}},
                                    {"source": "modelscope"}])
def test_sources_with_their_fields_are_accepted(change):
    ModelSpec.model_validate({**MODEL, **change})


PIN = ("trust_remote_code runs the repository's Python code: pin model.revision to a reviewed "
       "commit sha or tag (not a branch such as 'main')")


@pytest.mark.parametrize(("trust", "revision", "problem"), [
    (True, None, PIN), (True, "", PIN), (True, " Main ", PIN), (True, "HEAD", PIN), (True, "latest", PIN),
    (True, "master", PIN), (True, "0123abcd", None), (True, "v1.0", None), (False, None, None), (False, "main", None),
])
def test_revision_problem(trust, revision, problem):
    m = ModelSpec.model_validate({**MODEL, "trust_remote_code": trust})
    m.revision = revision
    assert revision_problem(m) == problem


LINE = "env value must be one line of at most 4096 characters (no newline, NUL or control characters)"


@pytest.mark.parametrize("value", ["a\nb", "a\x00", "\x1b[31m", "\x7f", "\x85", "\x9f", "a\u2028b", "b\u2029",
                                   "x" * 4097])
def test_env_values_must_be_one_plain_line(value):
    err = _rule_error(TargetOverride, {"env": {"GOOD_KEY": value}})
    assert (err.field, str(err)) == ("GOOD_KEY", LINE)


@pytest.mark.parametrize("value", ["", "x" * 4096, "a b=c;d", "\xa0non-breaking", "ünïcode"])
def test_env_values_that_are_one_line_pass(value):
    assert TargetOverride.model_validate({"env": {"K": value}}).env == {"K": value}


def test_env_key_is_named_with_its_problem():
    err = _rule_error(TargetOverride, {"env": {"OK": "1", "bad key": "1"}})
    assert err.field == "bad key" and str(err).startswith("env key 'bad key' is not a variable name")


def test_smoke_expect_must_compile():
    with pytest.raises(ValidationError) as exc:
        SmokePrompt.model_validate({"prompt": "p", "expect": "(unclosed"})
    assert "not a valid regex: missing ), unterminated subpattern at position 0" in str(exc.value)


def _card(**over) -> dict:
    return {"name": "c", "model": dict(MODEL), "smoke": SMOKE, **over}


def test_max_model_len_at_most_the_context():
    Card.model_validate(_card(serve={"max_model_len": 8192}))
    err = _rule_error(Card, _card(serve={"max_model_len": 8193}))
    assert (err.field, str(err)) == ("serve.max_model_len", "8193 exceeds model.context_length (8192)")


def test_a_multimodal_card_needs_an_image_prompt():
    mm = dict(MODEL, modalities=["text", "image"])
    err = _rule_error(Card, _card(model=mm))
    assert (err.field, str(err)) == ("smoke.prompts",
                                     "a multimodal card needs a smoke prompt with an image (smoke.prompts[].image)")
    card = Card.model_validate(_card(model=mm, smoke={"prompts": [{"prompt": "p", "expect": ".", "image": "a.png"}]}))
    assert card.multimodal is True
    assert Card.model_validate(_card()).multimodal is False


def test_json_schema_names_its_draft_and_title():
    s = json_schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema" and s["title"] == "deploykit model card"
    assert "model" in s["required"] and "smoke" in s["required"]
