"""One exception hierarchy; each class carries the process exit code the CLI returns.

A user sees exactly one line (see ``DeployKitError.one_line``); the traceback only with --debug.
"""

from __future__ import annotations


class DeployKitError(Exception):
    """Base class. exit_code 1 means an internal error (a bug in deploykit)."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.hint = hint

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        hint = f" ({self.hint})" if self.hint else ""
        return single_line(f"{where}{field}{self.message}{hint}")


MAX_LINE = 4000


def single_line(text: str) -> str:
    """``text`` on one line of bounded length: a message quoting user input (a key holding a
    newline, a 1 MB value) must not become several lines or flood the terminal."""
    text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + "..."


class BadInput(DeployKitError):
    """A card, flag, --set value or file the user gave is wrong. Nothing was written."""

    exit_code = 2


class CardErrors(BadInput):
    """Several independent problems in one card (schema, duplicate keys). Behaves as its first
    problem (one line, exit 2); ``errors`` holds all of them for `deploykit validate`."""

    def __init__(self, errors: list[BadInput], primary: BadInput | None = None) -> None:
        first = primary or errors[0]
        super().__init__(first.message, file=first.file, line=first.line, field=first.field, hint=first.hint)
        self.errors = list(errors)
        self.primary = first

    def one_line(self) -> str:
        more = len(self.errors) - 1
        tail = f" (+{more} more: `deploykit validate` lists them)" if more > 0 else ""
        return super().one_line() + tail


class Infeasible(DeployKitError):
    """The input is well-formed but cannot work (does not fit, TP does not divide heads, busy device...).

    ``reasons`` lists every reason found, not just the first.
    """

    exit_code = 3

    def __init__(self, message: str, *, reasons: list[str] | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.reasons = list(reasons or [])

    def one_line(self) -> str:
        base = super().one_line()
        if self.reasons:
            return single_line(base + ": " + "; ".join(self.reasons))
        return base


class RuntimeFailure(DeployKitError):
    """A container, engine or download failed at run time."""

    exit_code = 4


class VerificationFailed(DeployKitError):
    """Smoke test, eval or a check against a reference failed."""

    exit_code = 5
