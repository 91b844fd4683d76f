"""Exact tests for deploy_kit/render.py's pieces, killing the mutants the unit tier let survive
(docs/measurements/mutation/render/): model.env quoting and parsing back, the template
environment's options, which earlier renders (manifest or legacy plan.json) an output directory
may hold, the manifest's exact text, and write failures."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from deploy_kit import __version__
from deploy_kit.errors import BadInput, RuntimeFailure
from deploy_kit.render import (MANIFEST, _env, _legacy_render, _os_failure, _plain_name, _read_manifest,
                               env_file_text, parse_env_file, write_tree)

pytestmark = pytest.mark.unit

HEADER = "# Rendered by deploykit. Secrets are never written here: they pass from your environment."


# ------------------------------------------------------------------ model.env

def test_env_file_quotes_only_values_compose_would_interpret():
    assert env_file_text({"B": "a b", "A": "x/y:1,z=2"}) == f"{HEADER}\nA=x/y:1,z=2\nB='a b'\n"


def test_env_file_refuses_a_bad_key_with_its_field():
    with pytest.raises(BadInput) as ei:
        env_file_text({"bad-key": "1"})
    assert (ei.value.message, ei.value.field) == (
        "env key 'bad-key' is not a variable name: upper-case letters, digits and '_', not starting with a digit "
        "(^[A-Z_][A-Z0-9_]*$)", "env.bad-key")


@pytest.mark.parametrize("value", ["it's", "a\nb", "a\u2028b"])
def test_env_file_refuses_a_single_quote_or_a_line_break(value):
    with pytest.raises(BadInput) as ei:
        env_file_text({"K": value})
    assert (ei.value.message, ei.value.field) == (
        "env value of K contains a control character, a line separator or a single quote", "env.K")


@pytest.mark.parametrize(("line", "parsed"), [
    ("K='ab'", {"K": "ab"}),
    ("K='x'", {"K": "x"}),
    ("K=''", {"K": ""}),
    ("K='", {"K": "'"}),
    ("K=a'", {"K": "a'"}),
    ("K='a", {"K": "'a"}),
    ("K=a=b", {"K": "a=b"}),
    ("  # indented comment", {}),
    ("   ", {})])
def test_parse_env_file_lines(line, parsed):
    assert parse_env_file(f"# header\n{line}\n") == parsed


# ------------------------------------------------------------------ template environment

def test_template_env_trims_block_lines_and_escapes_nothing():
    text = "<ul>\n  {% for x in xs %}\n  <li>{{ x }}\n  {% endfor %}\n</ul>\n"
    assert _env().from_string(text).render(xs=["a&b", "<c>"]) == "<ul>\n  <li>a&b\n  <li><c>\n</ul>\n"


def test_template_env_missing_value_is_an_error():
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        _env().from_string("{{ missing }}").render()


def test_template_env_shell_filters():
    assert _env().from_string("{{ argv | shjoin }} {{ v | shquote }}").render(argv=["a b", "c"], v="it's") == (
        "'a b' c 'it'\"'\"'s'")


# ------------------------------------------------------------------ manifests and earlier renders

@pytest.mark.parametrize(("name", "plain"), [
    ("Dockerfile", True), ("XX", True), ("", False), (".", False), ("..", False), ("a/b", False),
    ("a\0b", False), (3, False)])
def test_plain_file_names(name, plain):
    assert _plain_name(name) is plain


def _manifest(out: Path, files: object, pad: int = 0) -> Path:
    out.mkdir(exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"files": files, "pad": "x" * pad}))
    return out / MANIFEST


def test_manifest_read_back(tmp_path):
    _manifest(tmp_path / "out", {"Dockerfile": "ab"})
    assert _read_manifest(tmp_path / "out") == {"Dockerfile": "ab"}


def test_manifest_through_a_symlink_is_ignored(tmp_path):
    real = _manifest(tmp_path / "real", {"Dockerfile": "ab"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MANIFEST).symlink_to(real)
    assert _read_manifest(tmp_path / "out") is None


def test_manifest_over_64_kib_is_ignored(tmp_path):
    _manifest(tmp_path / "out", {"Dockerfile": "ab"}, pad=(1 << 16) + 10)
    assert _read_manifest(tmp_path / "out") is None


@pytest.mark.parametrize("files", [["Dockerfile"], {"../x": "ab"}, {"Dockerfile": 1}])
def test_manifest_with_bad_file_entries_is_ignored(tmp_path, files):
    _manifest(tmp_path / "out", files)
    assert _read_manifest(tmp_path / "out") is None


def _legacy(out: Path, plan: object, pad: int = 0) -> Path:
    out.mkdir(exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan) + " " * pad)
    return out


def test_legacy_render_is_every_entry_without_hashes(tmp_path):
    out = _legacy(tmp_path / "out", {"deploykit_version": "0.1"})
    assert _legacy_render(out, ["Dockerfile", "plan.json"]) == {"Dockerfile": None, "plan.json": None}


def test_legacy_render_with_a_foreign_entry_is_not_one(tmp_path):
    out = _legacy(tmp_path / "out", {"deploykit_version": "0.1"})
    assert _legacy_render(out, ["plan.json", "notes.txt"]) is None


def test_legacy_render_needs_deploykit_plan_json(tmp_path):
    assert _legacy_render(_legacy(tmp_path / "a", {"name": "x"}), ["plan.json"]) is None
    assert _legacy_render(_legacy(tmp_path / "b", ["deploykit_version"]), ["plan.json"]) is None


def test_legacy_plan_json_over_1_mib_is_not_read(tmp_path):
    out = _legacy(tmp_path / "out", {"deploykit_version": "0.1"}, pad=(1 << 20) + 10)
    assert _legacy_render(out, ["plan.json"]) is None


def test_manifest_text_is_sorted_indented_json(tmp_path):
    write_tree(tmp_path / "out", {"b.txt": "x", "a.txt": "é"})
    sha_x = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    sha_e = "4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c"
    assert (tmp_path / "out" / MANIFEST).read_text() == (
        '{\n  "deploykit_version": "' + __version__ + '",\n  "files": {\n'
        f'    "a.txt": "{sha_e}",\n    "b.txt": "{sha_x}"\n  }}\n}}\n')
    assert (tmp_path / "out" / "a.txt").read_bytes() == "é".encode()


# ------------------------------------------------------------------ write failures

def test_os_failure_without_strerror_uses_the_exception_text():
    failure = _os_failure(OSError("boom"), Path("/x"))
    assert (type(failure), failure.message) == (BadInput, "cannot write /x: boom")


def test_no_space_is_a_runtime_failure():
    failure = _os_failure(OSError(errno.ENOSPC, "No space left on device"), Path("/x"))
    assert (type(failure), failure.message, failure.hint) == (
        RuntimeFailure, "cannot write /x: No space left on device",
        "free some space; an earlier render there is unchanged")


# ------------------------------------------------------------------ Plan-based pieces

def _plan(**update):
    from deploy_kit.planner import plan

    return plan("smollm2-135m-instruct", target="cpu", port_probe=None).model_copy(update=update)


def test_docker_run_passes_secrets_by_name_and_mounts_read_write_without_ro():
    from deploy_kit.planner import PlanMount
    from deploy_kit.render import docker_run_argv

    p = _plan()
    p = p.model_copy(update={"secret_env": ["VLLM_API_KEY"],
                             "mounts": [PlanMount(source="/a", target="/b", read_only=False), *p.mounts]})
    argv = docker_run_argv(p)
    assert argv[:17] == [
        "docker", "run", "--detach", "--name", "smollm2-135m-instruct", "--shm-size", "1g", "--publish",
        "127.0.0.1:8000:8000", "--env-file", "model.env", "--env", "VLLM_API_KEY", "--volume", "/a:/b", "--volume",
        f"{p.weights.host_path}:/models/smollm2-135m-instruct:ro"]
    assert argv[17:] == ["deploykit/vllm-cpu", *p.argv]


@pytest.mark.parametrize(("field", "what", "hint"), [
    ("base_image", "base image", "check DEPLOYKIT_REGISTRY_MIRROR and the target profile"),
    ("image", "image", "check DEPLOYKIT_REGISTRY_MIRROR and the target profile"),
    ("target", "target", None),
    ("name", "name", None)])
def test_dockerfile_values_must_be_single_tokens(field, what, hint):
    from deploy_kit.render import check_dockerfile_values

    with pytest.raises(BadInput) as ei:
        check_dockerfile_values(_plan(**{field: "a b"}))
    assert (ei.value.message, ei.value.hint) == (
        f"{what} 'a b' is not a single token (letters, digits, ._/:@+-)", hint)


def test_missing_dockerfile_template_is_named():
    from deploy_kit.errors import DeployKitError
    from deploy_kit.render import render_files

    with pytest.raises(DeployKitError) as ei:
        render_files(_plan(dockerfile_template="nope.Dockerfile.j2"))
    assert ei.value.message == "Dockerfile template nope.Dockerfile.j2 is missing from images/"


def test_undefined_value_in_a_dockerfile_template_is_named(monkeypatch):
    import jinja2

    import deploy_kit.render as render
    from deploy_kit.errors import DeployKitError

    real = render._env

    def env_with_a_broken_template():
        env = real()
        env.loader = jinja2.ChoiceLoader([jinja2.DictLoader({"bad.j2": "{{ plan.nope }}"}), env.loader])
        return env

    monkeypatch.setattr(render, "_env", env_with_a_broken_template)
    with pytest.raises(DeployKitError) as ei:
        render.render_files(_plan(dockerfile_template="bad.j2"))
    assert ei.value.message == "template bad.j2: 'deploy_kit.planner.Plan object' has no attribute 'nope'"


# ------------------------------------------------------------------ write_tree

def test_new_render_creates_missing_parents_with_umask_mode(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        write_tree(tmp_path / "a" / "b" / "out", {"x.txt": "x"})
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "b" / "out" / "x.txt").read_text() == "x"
    assert (tmp_path / "a" / "b" / "out").stat().st_mode & 0o7777 == 0o750


def _record(monkeypatch, name: str) -> list[tuple[Path, Path]]:
    import deploy_kit.render as render

    calls: list[tuple[Path, Path]] = []
    real = getattr(render.os, name)

    def record(src, dst):
        calls.append((Path(src), Path(dst)))
        return real(src, dst)

    monkeypatch.setattr(render.os, name, record)
    return calls


def test_new_render_is_written_in_a_hidden_sibling_then_renamed(tmp_path, monkeypatch):
    calls = _record(monkeypatch, "rename")
    write_tree(tmp_path / "out", {"x.txt": "x"})
    (src, dst), = calls
    assert (src.parent, dst) == (tmp_path, (tmp_path / "out").absolute())
    assert src.name.startswith(".deploykit-tmp-")


def test_rerender_writes_aside_inside_the_directory_then_replaces(tmp_path, monkeypatch):
    write_tree(tmp_path / "out", {"x.txt": "x"})
    calls = _record(monkeypatch, "replace")
    write_tree(tmp_path / "out", {"x.txt": "y"})
    assert [(s.parent.parent, s.parent.name[:15], s.name, d.name) for s, d in calls] == [
        (tmp_path / "out", ".deploykit-tmp-", "x.txt", "x.txt"),
        (tmp_path / "out", ".deploykit-tmp-", MANIFEST, MANIFEST)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "x.txt"]


def test_rerender_removes_files_the_new_render_lacks_even_if_already_gone(tmp_path):
    write_tree(tmp_path / "out", {"a.txt": "a", "b.txt": "b", "c.txt": "c"})
    (tmp_path / "out" / "c.txt").unlink()
    write_tree(tmp_path / "out", {"a.txt": "a2"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "a.txt"]


# ------------------------------------------------------------------ check_out_dir

def _out_dir_refusal(out: Path) -> tuple:
    from deploy_kit.render import check_out_dir

    with pytest.raises(BadInput) as ei:
        check_out_dir(out)
    return ei.value.message, ei.value.field


def test_out_dir_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert _out_dir_refusal(tmp_path / "link") == (
        f"{tmp_path / 'link'} is a symbolic link: give the directory it points to", "--out")


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    assert _out_dir_refusal(tmp_path / "f") == (f"{tmp_path / 'f'} exists and is not a directory", "--out")


def test_unreadable_out_dir_is_refused(tmp_path, monkeypatch):
    import deploy_kit.render as render

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(render.os, "listdir", denied)
    assert _out_dir_refusal(tmp_path) == (f"cannot read {tmp_path}: Permission denied", "--out")


def test_unreadable_out_dir_without_strerror_shows_the_error(tmp_path, monkeypatch):
    import deploy_kit.render as render

    def broken(path):
        raise OSError("weird")

    monkeypatch.setattr(render.os, "listdir", broken)
    assert _out_dir_refusal(tmp_path) == (f"cannot read {tmp_path}: weird", "--out")


def test_non_empty_foreign_out_dir_is_refused_with_hint(tmp_path):
    from deploy_kit.render import check_out_dir

    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(BadInput) as ei:
        check_out_dir(tmp_path)
    assert (ei.value.message, ei.value.field, ei.value.hint) == (
        f"{tmp_path} is not empty and holds no deploykit render (2 entries)", "--out",
        "choose a new or empty directory; --force never deletes files deploykit did not write")


@pytest.mark.parametrize(("count", "shown"), [(5, "f0, f1, f2, f3, f4"), (6, "f0, f1, f2, f3, f4 and 1 more"),
                                               (8, "f0, f1, f2, f3, f4 and 3 more")])
def test_foreign_files_beside_a_render_are_listed_five_at_most(tmp_path, count, shown):
    from deploy_kit.render import check_out_dir

    write_tree(tmp_path / "out", {"x.txt": "x"})
    for i in range(count):
        (tmp_path / "out" / f"f{i}").write_text("mine")
    with pytest.raises(BadInput) as ei:
        check_out_dir(tmp_path / "out", force=True)
    assert (ei.value.message, ei.value.field, ei.value.hint) == (
        f"{tmp_path / 'out'} holds files deploykit did not write: {shown}", "--out",
        "move them away or choose another directory; --force does not delete them")


def test_edited_files_are_named_and_need_force(tmp_path):
    from deploy_kit.render import check_out_dir

    write_tree(tmp_path / "out", {"a.txt": "a", "b.txt": "b", "c.txt": "c"})
    (tmp_path / "out" / "a.txt").write_text("mine")
    (tmp_path / "out" / "c.txt").write_text("mine")
    with pytest.raises(BadInput) as ei:
        check_out_dir(tmp_path / "out")
    assert (ei.value.message, ei.value.field, ei.value.hint) == (
        f"a.txt, c.txt in {tmp_path / 'out'} changed since deploykit wrote them", "--out",
        "pass --force to replace them")
    assert sorted(check_out_dir(tmp_path / "out", force=True)) == ["a.txt", "b.txt", "c.txt"]


def test_write_tree_refuses_edited_files_unless_forced(tmp_path):
    write_tree(tmp_path / "out", {"a.txt": "a"})
    (tmp_path / "out" / "a.txt").write_text("mine")
    with pytest.raises(BadInput, match="changed since deploykit wrote them"):
        write_tree(tmp_path / "out", {"a.txt": "a2"})
    write_tree(tmp_path / "out", {"a.txt": "a2"}, force=True)
    assert (tmp_path / "out" / "a.txt").read_text() == "a2"
