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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .cards import Card, FieldError
from .errors import BadInput, CardErrors
from .paths import data_dir

# Built-in serve defaults: the lowest layer. Chosen to start on any target; cards raise them.
BUILTIN_SERVE = {
    "tensor_parallel_size": 1,
    "max_num_seqs": 16,
    "enforce_eager": False,
    "gpu_memory_utilization": 0.9,
    "extra_args": [],
}


# ------------------------------------------------------------------ YAML with line numbers, bounded

# Cards come from strangers: every read is bounded before PyYAML or pydantic sees it.
MAX_YAML_BYTES = 1 << 20     # the largest shipped card is ~3 KiB
MAX_YAML_DEPTH = 32          # a card nests 4 levels deep
MAX_YAML_NODES = 20_000      # after alias expansion (a card holds ~100; a 700-byte alias bomb ~10^9)


def read_text_bounded(path: Path, *, what: str = "file", limit: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; BadInput (one line) otherwise."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"{what} {path} is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):  # a FIFO or /dev/zero would block or never end
            raise BadInput(f"{what} {path} is not a regular file")
        if st.st_size > limit:
            raise BadInput(f"{what} {path} is {st.st_size} bytes, more than the {limit} allowed")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BadInput(f"{what} {path} is more than the {limit} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})", file=str(path),
                       line=data[:exc.start].count(b"\n") + 1) from None


def _yaml_error(exc: Exception, file: str, what: str = "not valid YAML") -> BadInput:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return BadInput(f"{what}: {problem}", file=file, line=(mark.line + 1) if mark else None)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses deep nesting (it is recursive: a 10 000-deep `[[[[`
    would otherwise end in RecursionError)."""

    file = ""
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise BadInput(f"YAML nests deeper than {MAX_YAML_DEPTH} levels", file=self.file,
                               line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, file: str) -> yaml.Node | None:
    loader = _BoundedLoader(text)
    loader.file = file
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


# Collections are built here, not by a constructor: any tag but the plain ones (e.g. !!python/object on a
# mapping) is refused rather than ignored. Scalars go through SafeLoader's constructors.
_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap"}


class _Walker:
    """Python data from a composed node, with 1-based lines for every dotted path, a budget on
    nodes (aliases are expanded, so the budget is what bounds an alias bomb) and duplicate keys
    collected as errors naming both lines."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[str, int] = {}
        self.budget = MAX_YAML_NODES
        self.duplicates: list[BadInput] = []
        self._scalars = yaml.SafeLoader("")  # one constructor: safe tags only (ints, floats, bools, null, str)

    def walk(self, node: yaml.Node, prefix: str) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise BadInput(f"YAML expands to more than {MAX_YAML_NODES} values (aliases?)", file=self.file,
                           line=node.start_mark.line + 1)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            raise BadInput(f"unsafe or invalid YAML: tag {node.tag!r} is not allowed", file=self.file,
                           line=node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, prefix)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                path = f"{prefix}.{i}"
                self.lines.setdefault(path, item.start_mark.line + 1)
                items.append(self.walk(item, path))
            return items
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # e.g. a tag the safe loader refuses (!!python/object)
            raise _yaml_error(exc, self.file, "unsafe or invalid YAML") from None
        except (ValueError, OverflowError) as exc:  # an int past Python's 4300-digit limit
            raise BadInput(f"value cannot be read: {str(exc)[:120]}", file=self.file,
                           line=node.start_mark.line + 1) from None

    def _mapping(self, node: yaml.MappingNode, prefix: str) -> dict:
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, val_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise BadInput("a mapping key must be a plain value, not a list or mapping",
                               file=self.file, line=line)
            key = self._scalar(key_node)
            path = f"{prefix}.{key}" if prefix else str(key)
            if key in first_line:
                self.duplicates.append(BadInput(f"duplicate key '{key}' (also on line {first_line[key]})",
                                                file=self.file, line=line, field=path))
                continue
            first_line[key] = line
            self.lines.setdefault(path, line)
            result[key] = self.walk(val_node, path)
        return result


def load_yaml_with_lines(path: Path | str, text: str | None = None) -> tuple[Any, dict[str, int]]:
    """Data and {dotted path: line} of a YAML file (or ``text``), bounded in size, depth and
    alias expansion; duplicate keys are an error. Every problem is BadInput (exit 2)."""
    path = Path(path)
    file = str(path)
    if text is None:
        text = read_text_bounded(path)
    elif len(text) > MAX_YAML_BYTES:
        raise BadInput(f"more than {MAX_YAML_BYTES} characters of YAML", file=file)
    try:
        node = _compose(text, file)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, file) from None
    if node is None:
        return {}, {}
    walker = _Walker(file)
    data = walker.walk(node, "")
    if walker.duplicates:
        raise CardErrors(walker.duplicates)
    return data, walker.lines


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


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit
        return "a number too large"
    return text if len(text) <= 80 else text[:77] + "..."


def _one_error(err: Any, file: str, lines: dict[str, int], model: type[BaseModel], prefix: str) -> BadInput:
    """One pydantic error as BadInput (file, line, dotted field, did-you-mean hint)."""
    loc = tuple(p for p in err["loc"] if p != "[key]")
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
        msg = f"unknown key {_short_repr(str(loc[-1]))}"
        hint = f"did you mean '{close[0]}'?" if close else ("allowed: " + ", ".join(allowed) if allowed else None)
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"] not in ("value_error",) and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {_short_repr(err['input'])})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return BadInput(msg, file=file, line=_line_for(full, lines), field=dotted, hint=hint)


def validation_errors(exc: ValidationError, file: str, lines: dict[str, int],
                      model: type[BaseModel], prefix: str = "") -> CardErrors:
    """Every error of a pydantic ValidationError, in line order; the one a single line shows
    first is an unknown key, which usually explains the "missing" error beside it (a misspelt name)."""
    errors = [_one_error(e, file, lines, model, prefix) for e in exc.errors()]
    primary = next((b for b, e in zip(errors, exc.errors(), strict=True) if e["type"] == "extra_forbidden"), errors[0])
    errors.sort(key=lambda b: (b.line or 0, b.field or ""))
    return CardErrors(errors, primary=primary)


def validation_to_bad_input(exc: ValidationError, file: str, lines: dict[str, int],
                            model: type[BaseModel], prefix: str = "") -> BadInput:
    """The first error of a pydantic ValidationError as one BadInput."""
    return validation_errors(exc, file, lines, model, prefix).primary


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
        raise validation_errors(exc, str(path), lines, Card) from None
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
    return key, _set_value(val)


def _set_value(text: str) -> Any:
    """A --set value as a YAML scalar or flow (bounded like a card); text that is not YAML is a string."""
    if not text.strip():
        return ""
    if len(text) > MAX_YAML_BYTES:
        raise BadInput(f"value longer than {MAX_YAML_BYTES} characters", file="--set")
    try:
        node = _compose(text, "--set")
    except yaml.YAMLError:
        return text
    if node is None:
        return None
    walker = _Walker("--set")
    value = walker.walk(node, "")
    if walker.duplicates:
        raise CardErrors(walker.duplicates)
    return value


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
    for key, default in base_serve.items():  # null in a card or --set means "the default", not "none"
        if layered["serve"].get(key) is None:
            layered["serve"][key] = default
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
