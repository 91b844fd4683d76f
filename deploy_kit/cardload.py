"""Load cards from YAML with line numbers, layer them for a target, apply --set overrides.

Layering, lowest first: built-in defaults < target profile < card < card.targets[target] < --set.
Every validation error becomes one BadInput naming file, line and dotted field, with
"did you mean" for misspelt keys. Only safe YAML loading (yaml.SafeLoader composition).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .cards import Card, FieldError
from .errors import BadInput
from .paths import data_dir

# Built-in serve defaults: the lowest layer. Chosen to start on any target; cards raise them.
BUILTIN_SERVE = {
    "tensor_parallel_size": 1,
    "max_num_seqs": 16,
    "enforce_eager": False,
    "gpu_memory_utilization": 0.9,
    "extra_args": [],
}


# ------------------------------------------------------------------ YAML with line numbers

def _walk(node: yaml.Node, prefix: str, out: dict[str, int]) -> Any:
    """Build python data from a composed node and record 1-based lines for every dotted path."""
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, val_node in node.value:
            key = SafeLineLoader.construct_scalar_value(key_node)
            path = f"{prefix}.{key}" if prefix else str(key)
            out[path] = key_node.start_mark.line + 1
            result[key] = _walk(val_node, path, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            path = f"{prefix}.{i}"
            out[path] = item.start_mark.line + 1
            items.append(_walk(item, path, out))
        return items
    return SafeLineLoader.construct_scalar_value(node)


class SafeLineLoader(yaml.SafeLoader):
    @classmethod
    def construct_scalar_value(cls, node: yaml.Node) -> Any:
        # Resolve the scalar with the safe constructors (ints, bools, floats, null, strings).
        loader = cls("")
        return loader.construct_object(node, deep=True)


def load_yaml_with_lines(path: Path | str, text: str | None = None) -> tuple[Any, dict[str, int]]:
    path = Path(path)
    try:
        if text is None:
            text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except FileNotFoundError:
        raise BadInput(f"file not found: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise BadInput(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                       line=(mark.line + 1) if mark else None) from None
    lines: dict[str, int] = {}
    if node is None:
        return {}, lines
    try:
        return _walk(node, "", lines), lines
    except yaml.YAMLError as exc:  # e.g. a tag the safe loader refuses (!!python/object)
        mark = getattr(exc, "problem_mark", None)
        raise BadInput(f"unsafe or invalid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                       line=(mark.line + 1) if mark else None) from None


# ------------------------------------------------------------------ errors

def _model_fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Allowed field names of the sub-model at loc (for did-you-mean)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int) or cur is None:
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return list(fields or [])
        ann = fields[part].annotation
        cur = _unwrap_model(ann)
    return list(getattr(cur, "model_fields", {}) or [])


def _unwrap_model(ann: Any) -> Any:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _line_for(path: str, lines: dict[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path.rpartition(".")[0]
    return None


def validation_to_bad_input(exc: ValidationError, file: str, lines: dict[str, int],
                            model: type[BaseModel], prefix: str = "") -> BadInput:
    """First error of a pydantic ValidationError as one BadInput (file, line, dotted field, hint)."""
    # An unknown key usually explains the "missing" error beside it (a misspelt name): report it first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    orig = (err.get("ctx") or {}).get("error")
    if isinstance(orig, FieldError):
        loc = loc + tuple(orig.field.split("."))
    dotted = ".".join(str(p) for p in loc)
    full = f"{prefix}{dotted}" if prefix else dotted
    msg = str(orig) if orig is not None else err["msg"]
    hint = None
    if err["type"] == "extra_forbidden":
        allowed = _model_fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.5)
        msg = f"unknown key '{loc[-1]}'"
        hint = f"did you mean '{close[0]}'?" if close else ("allowed: " + ", ".join(allowed) if allowed else None)
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return BadInput(msg, file=file, line=_line_for(full, lines), field=dotted, hint=hint)


# ------------------------------------------------------------------ cards

@dataclass
class LoadedCard:
    card: Card
    path: Path
    raw: dict
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.card.name

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()[:16]


def card_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in name_or_path:
        return p
    catalog = data_dir("models")
    candidate = catalog / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    names = list_card_names()
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "see `deploykit list`"
    raise BadInput(f"no card named '{name_or_path}' in the catalog", hint=hint)


def list_card_names() -> list[str]:
    return sorted(p.stem for p in data_dir("models").glob("*.yaml"))


def load_card(name_or_path: str) -> LoadedCard:
    path = card_path(name_or_path)
    raw, lines = load_yaml_with_lines(path)
    if not isinstance(raw, dict):
        raise BadInput("a card must be a YAML mapping", file=str(path), line=1)
    try:
        card = Card.model_validate(raw)
    except ValidationError as exc:
        raise validation_to_bad_input(exc, str(path), lines, Card) from None
    if path.parent.resolve() == data_dir("models").resolve() and card.name != path.stem:
        raise BadInput(f"card name '{card.name}' differs from its file name '{path.stem}'",
                       file=str(path), line=lines.get("name"), field="name")
    return LoadedCard(card=card, path=path, raw=raw, lines=lines)


def list_cards() -> list[LoadedCard]:
    return [load_card(n) for n in list_card_names()]


# ------------------------------------------------------------------ layering

def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "limit_mm_per_prompt":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_set(expr: str) -> tuple[str, Any]:
    """'serve.max_model_len=8192' -> ('serve.max_model_len', 8192). Values are YAML scalars/flows."""
    if "=" not in expr:
        raise BadInput(f"expected KEY=VALUE, got '{expr}'", file="--set", field=expr)
    key, _, val = expr.partition("=")
    key = key.strip()
    if not key:
        raise BadInput(f"empty key in '{expr}'", file="--set")
    try:
        value = yaml.safe_load(val) if val.strip() else ""
    except yaml.YAMLError:
        value = val
    return key, value


def _apply_set(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise BadInput(f"'{part}' is not a mapping", file="--set", field=key)
        cur = nxt
    # env values are strings; `--set env.HCCL_BUFFSIZE=200` must not fail as "not a valid string"
    if parts[0] == "env" and len(parts) == 2 and isinstance(value, (int, float, bool)):
        value = str(value) if not isinstance(value, bool) else ("True" if value else "False")
    cur[parts[-1]] = value


@dataclass
class Resolved:
    """A card layered for one target: the validated Card plus where each value came from."""

    loaded: LoadedCard
    target: str
    card: Card
    override_unsupported: str | None
    set_keys: list[str]


def resolve(loaded: LoadedCard, target_name: str, target_serve_defaults: dict,
            target_env: dict[str, str], sets: list[str] | None = None) -> Resolved:
    raw = copy.deepcopy(loaded.raw)
    overrides = (raw.pop("targets", None) or {})
    ov = overrides.get(target_name) or {}
    layered = {k: v for k, v in raw.items()}
    base_serve = _deep_merge(BUILTIN_SERVE, target_serve_defaults)
    layered["serve"] = _deep_merge(base_serve, raw.get("serve") or {})
    layered["serve"] = _deep_merge(layered["serve"], ov.get("serve") or {})
    layered["env"] = _deep_merge(_deep_merge(target_env, raw.get("env") or {}), ov.get("env") or {})
    set_keys = []
    for expr in sets or []:
        key, value = parse_set(expr)
        if key.split(".")[0] == "targets":
            raise BadInput("--set applies to the resolved card; set serve.* or env.* directly",
                           file="--set", field=key)
        _apply_set(layered, key, value)
        set_keys.append(key)
    try:
        card = Card.model_validate(layered)
    except ValidationError as exc:
        bad = validation_to_bad_input(exc, str(loaded.path), loaded.lines, Card)
        dotted = bad.field or ""
        if any(dotted == k or dotted.startswith(k + ".") or k.startswith(dotted + ".") for k in set_keys):
            bad.file, bad.line = "--set", None
        elif f"targets.{target_name}.{dotted}" in loaded.lines:
            bad.line = loaded.lines[f"targets.{target_name}.{dotted}"]
            bad.field = f"targets.{target_name}.{dotted}"
        raise bad from None
    return Resolved(loaded=loaded, target=target_name, card=card,
                    override_unsupported=ov.get("unsupported"), set_keys=set_keys)


def field_line(loaded: LoadedCard, dotted: str, target: str | None = None) -> tuple[str, int | None]:
    """(file, line) where a resolved field was written: the target override, the card, or --set."""
    if target and f"targets.{target}.{dotted}" in loaded.lines:
        return str(loaded.path), loaded.lines[f"targets.{target}.{dotted}"]
    return str(loaded.path), _line_for(dotted, loaded.lines)
