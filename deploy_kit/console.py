"""The one output helper: every command prints through here.

- Text is printed as text: Rich markup is never interpreted, so a card or log line holding
  ``[bold]`` or ``[/]`` prints as written (it used to raise a MarkupError traceback).
- Terminal escape sequences (CSI, OSC, DCS, ...) and control characters are stripped from what
  is printed: a hostile log or hub string cannot retitle the terminal or hide text.
- Tables are whole when stdout is not a terminal: plain tab-separated columns that scripts can
  split, never cut to 80 columns with an ellipsis.
Rich is imported lazily (only when a terminal table or a live view is drawn).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Iterable, Sequence

# ESC [ ... final byte (CSI); ESC ] ... BEL or ESC \ (OSC); ESC P/X/^/_ ... ESC \ (DCS, SOS, PM, APC);
# single-char ESC sequences; C1 controls written as 8-bit codes.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\|$)"
    r"|\x1b[@-Z\\-_]"
    r"|\x1b"
    r"|[\x80-\x9f]"
)
# Control characters other than tab and newline.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_consoles: dict[bool, Any] = {}


def clean(text: object) -> str:
    """``text`` as a printable string: escape sequences and control characters removed."""
    s = str(text)
    if "\x1b" in s or _CONTROLS.search(s) or re.search(r"[\x80-\x9f]", s):
        s = _ESCAPES.sub("", s)
        s = _CONTROLS.sub("", s.replace("\r\n", "\n").replace("\r", "\n"))
    return s


def _write(stream: Any, text: object) -> None:
    stream.write(clean(text) + "\n")
    stream.flush()


def out(text: object = "") -> None:
    """A line (or lines) of plain text on stdout."""
    _write(sys.stdout, text)


def err(text: object) -> None:
    """A line of plain text on stderr."""
    _write(sys.stderr, text)


def warn(text: object) -> None:
    """A warning on stderr, prefixed so scripts and people can tell it from output."""
    _write(sys.stderr, f"warning: {text}")


def emit_json(data: Any) -> None:
    """JSON on stdout (indent 2; anything json cannot encode is written with str())."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def is_terminal(stream: Any = None) -> bool:
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return clean(value).replace("\t", " ").replace("\n", " ")


def plain_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Tab-separated header and rows: whole values, one row per line."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(_cell(v) for v in row) for row in rows]
    return "\n".join(lines)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> None:
    """A table: Rich on a terminal (cells wrap, never cut), plain tab-separated when piped."""
    rows = [list(r) for r in rows]
    if not is_terminal():
        if title:
            out(f"# {title}")
        out(plain_table(columns, rows))
        return
    from rich.table import Table

    t = Table(title=clean(title) if title else None, show_lines=False)
    for c in columns:
        t.add_column(clean(c), overflow="fold")
    for row in rows:
        t.add_row(*[_rich_text(_cell(v)) for v in row])
    stdout_console().print(t)


def _rich_text(s: str) -> Any:
    from rich.text import Text

    return Text(s)  # a Text is never parsed as markup


def _console(stderr: bool) -> Any:
    if stderr not in _consoles:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        # Not a terminal: no width limit, so nothing is cut or wrapped at 80 columns.
        width = None if is_terminal(stream) else 100_000
        _consoles[stderr] = Console(stderr=stderr, markup=False, highlight=False, emoji=False,
                                    soft_wrap=True, width=width)
    return _consoles[stderr]


def stdout_console() -> Any:
    """The shared Rich console on stdout (markup off) for progress bars and live views."""
    return _console(False)


def stderr_console() -> Any:
    """The shared Rich console on stderr (markup off)."""
    return _console(True)


def reset() -> None:
    """Forget the cached consoles (tests swap sys.stdout)."""
    _consoles.clear()
