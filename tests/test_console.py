"""The one output helper and the CLI's error boundary."""

from __future__ import annotations

import errno
import io
import sys

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from deploy_kit import cli, console

pytestmark = pytest.mark.unit


def test_clean_strips_osc_title_csi_colour_and_dcs():
    hostile = "ok\x1b]0;pwned\x07 \x1b[31mred\x1b[0m \x1bP1;2|payload\x1b\\ end\x07\x9b"
    assert console.clean(hostile) == "ok red  end"


def test_clean_keeps_plain_text_tabs_newlines_and_unicode():
    assert console.clean("a\tb\nc [bold]x[/] é 模型") == "a\tb\nc [bold]x[/] é 模型"


@given(st.text())
def test_clean_never_leaves_an_escape_or_control_char(s):
    c = console.clean(s)
    assert "\x1b" not in c
    assert not any(ord(ch) < 32 and ch not in "\t\n" for ch in c)
    assert not any(0x80 <= ord(ch) <= 0x9F for ch in c)


def test_markup_in_user_text_is_printed_as_written(capsys):
    console.out("[bold red]not markup[/] [/unclosed")
    assert capsys.readouterr().out == "[bold red]not markup[/] [/unclosed\n"


def test_table_is_whole_and_tab_separated_when_piped(capsys, monkeypatch):
    long_url = "http://127.0.0.1:8000/" + "x" * 200
    console.table(["name", "url"], [["smollm2-135m-instruct", long_url], ["b", None]])
    assert capsys.readouterr().out.splitlines() == [
        "name\turl", f"smollm2-135m-instruct\t{long_url}", "b\t-"]


def test_table_on_a_terminal_folds_but_keeps_every_character(monkeypatch):
    buf = io.StringIO()
    buf.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdout", buf)
    console.reset()
    try:
        console.table(["name"], [["[red]x[/]" + "y" * 30]])
    finally:
        console.reset()
    text = buf.getvalue()
    assert "[red]x[/]" in text and "y" * 30 in text.replace("\n", "").replace("│", "").replace(" ", "")


@pytest.mark.parametrize("exc, code, start", [
    (yaml.YAMLError("bad"), 2, "not valid YAML: bad"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "models"), 2, "is a directory, not a file"),
    (PermissionError(errno.EACCES, "Permission denied", "/root/x"), 2, "permission denied"),
    (OSError(errno.ENOSPC, "No space left on device"), 4, "system error: [Errno 28] No space left"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "not valid UTF-8 text"),
    (RecursionError("maximum recursion depth exceeded"), 2, "input nested too deeply"),
])
def test_world_errors_map_to_one_line_and_an_exit_code(exc, code, start):
    got = cli.classify(exc)
    assert got is not None and got[0] == code and got[1].startswith(start)


def test_a_bug_is_not_classified():
    assert cli.classify(KeyError("x")) is None
    assert cli.classify(ValueError("x")) is None


def test_main_turns_a_world_error_into_one_line(monkeypatch, capsys):
    def boom(**_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "app", boom)
    assert cli.main(["list"]) == 4
    err = capsys.readouterr().err
    assert err == "error: system error: [Errno 28] No space left on device\n"


def test_main_prints_brackets_in_an_error_message_verbatim(monkeypatch, capsys):
    from deploy_kit.errors import BadInput

    def boom(**_kw):
        raise BadInput("card [/bold] is odd", field="name")

    monkeypatch.setattr(cli, "app", boom)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err == "error: name: card [/bold] is odd\n"


def test_devices_option_parses_one_way_everywhere():
    import typer

    from deploy_kit.commands.options import devices_of

    assert devices_of("4, 5") == [4, 5]
    assert devices_of(None) is None and devices_of("") is None
    for bad in ("a", "1,,2", "-1", "1,1", "9999999"):
        with pytest.raises(typer.BadParameter):
            devices_of(bad)


@pytest.mark.parametrize("args, line", [
    (["plan", "--nope"], "error: deploykit plan: No such option: --nope"),
    (["plan"], "error: deploykit plan: Missing argument 'card'."),
    (["nosuch"], "error: deploykit: No such command 'nosuch'."),
    (["plan", "x", "--devices", "a"], "error: deploykit plan: Invalid value for '--devices': device ids are"),
])
def test_usage_errors_are_one_line_exit_2(args, line, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert err.rstrip().endswith("--help`)")


def test_a_group_alone_prints_its_help(capsys):
    assert cli.main(["stack"]) == 0
    assert capsys.readouterr().out.startswith("Usage: deploykit stack")
