"""Result types shared by the checks and the CLI (pydantic, so `--json` is model_dump_json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, computed_field

Status = Literal["pass", "warn", "fail", "skip"]


class Evidence(BaseModel):
    command: str          # what was run or read (a shell command, a file path, a URL)
    output: str = ""      # what it said (trimmed)
    rc: int | None = None


class Check(BaseModel):
    id: str
    title: str
    status: Status
    message: str
    evidence: list[Evidence] = Field(default_factory=list)
    fix: str = ""
    blocking: bool = True   # a "fail" of a blocking check makes doctor exit 3
    data: dict = Field(default_factory=dict)


class Report(BaseModel):
    target: str | None = None
    deployment: str | None = None
    checks: list[Check] = Field(default_factory=list)

    @property
    def blocking_failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail" and c.blocking]

    @computed_field  # type: ignore[prop-decorator]  # in --json so automation need not recompute it
    @property
    def exit_code(self) -> int:
        return 3 if self.blocking_failures else 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "warn", "fail", "skip")}

    def by_id(self, cid: str) -> Check:
        return next(c for c in self.checks if c.id == cid)


def trim(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2:]
