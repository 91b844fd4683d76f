"""Name the known cause of a failed deployment from its log text.

Signatures are data (signatures.yaml next to this file). An unmatched log yields cause None and
the last lines, never a guess.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

SIGNATURES_PATH = Path(__file__).with_name("signatures.yaml")
LAST_LINES = 30
UNKNOWN_FIX = ("unknown cause: no known signature matched; read the last lines below "
               "(and `deploykit logs <name>`), then run `deploykit doctor <card>`")


class Signature(BaseModel):
    id: str
    title: str
    patterns: list[str]
    requires: str | None = None
    cause: str
    fix: str

    def compiled(self) -> list[re.Pattern]:
        return [re.compile(p, re.IGNORECASE) for p in self.patterns]


class TriageResult(BaseModel):
    signature: str | None = None     # id of the matched signature
    title: str | None = None
    cause: str | None = None         # None = unknown cause
    fix: str
    matched_lines: list[str] = Field(default_factory=list)
    last_lines: list[str] = Field(default_factory=list)
    also_matched: list[str] = Field(default_factory=list)  # lower-priority signatures also present

    @property
    def known(self) -> bool:
        return self.cause is not None


@lru_cache(maxsize=2)
def load_signatures(path: str = str(SIGNATURES_PATH)) -> tuple[Signature, ...]:
    data = yaml.safe_load(Path(path).read_text())
    sigs = tuple(Signature.model_validate(s) for s in data["signatures"])
    ids = [s.id for s in sigs]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate signature ids in {path}")
    return sigs


QUOTE_MAX = 500  # a quoted log line is cut here: one hostile line must not flood the terminal


def triage_text(text: str, signatures: tuple[Signature, ...] | None = None,
                last: int = LAST_LINES) -> TriageResult:
    sigs = signatures if signatures is not None else load_signatures()
    from ..console import clean

    # split on newlines only: str.splitlines would also break at \x1c-\x1e, \x0b, \x0c in hostile text
    lines = [clean(ln).replace("\n", " ").rstrip()[:QUOTE_MAX] for ln in text.split("\n")]
    tail = [ln for ln in lines if ln.strip()][-last:]
    hits: list[tuple[Signature, list[str]]] = []
    for sig in sigs:
        if sig.requires and not re.search(sig.requires, text, re.IGNORECASE):
            continue
        pats = sig.compiled()
        matched = [ln.strip() for ln in lines if any(p.search(ln) for p in pats)]
        if matched:
            hits.append((sig, list(dict.fromkeys(matched))[:10]))
    if not hits:
        return TriageResult(fix=UNKNOWN_FIX, last_lines=tail)
    sig, matched = hits[0]
    return TriageResult(signature=sig.id, title=sig.title, cause=sig.cause, fix=sig.fix,
                        matched_lines=matched, last_lines=tail, also_matched=[s.id for s, _ in hits[1:]])


def triage_file(path: str | Path) -> TriageResult:
    from ..runtime.ops import read_capped

    return triage_text(read_capped(Path(path)))
