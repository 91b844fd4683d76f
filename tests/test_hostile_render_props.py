"""Untrusted text never reaches an interpreter unescaped (issue 13, class 2).

Property tests feed arbitrary strings (extra args, env values, served names, image names) through
every renderer and parse the results back with the interpreter that will read them: bash for the
README's commands and the multi-node scripts, yaml.safe_load for compose and Kubernetes, the env-file
parser, the Dockerfile's lines. A renderer either refuses the value (BadInput, exit 2) or the value
comes back exactly, with no extra key, line or argument.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy_kit.errors import BadInput

# Hypothesis runs many examples per test: measured 6-17 s each here, the unit default is 60 s.
pytestmark = [pytest.mark.unit, pytest.mark.timeout(180)]

# database=None: no .hypothesis/ directory in the work tree; a bounded run time for CI.
SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ANY_TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
# What a card can hold after the schema: one line, no control characters (cards.OneLine).
ONE_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
NASTY = ["$(touch pwned)", "`touch pwned`", "${HF_TOKEN}", "$HOME", "a; rm -rf /", "'", '"', "\\", "--x=1 --y",
         "$$", "#c", " lead", "trail ", "", "a\\", "=", "*", "~", "```"]
ENV_KEY = st.from_regex(r"\AVLLM_[A-Z0-9_]{1,12}\Z")


@functools.lru_cache(maxsize=None)
def base_plan(target: str = "cpu"):
    import os

    from deploy_kit.planner import plan

    os.environ.setdefault("DEPLOYKIT_CACHE", "/var/cache/deploykit/models")
    return plan("smollm2-135m-instruct", target=target, port_probe=None)


def with_values(target: str = "cpu", *, args: list[str] = (), env: dict[str, str] | None = None, **update):
    p = base_plan(target)
    return p.model_copy(update={"argv": list(p.argv) + list(args), "env": {**p.env, **(env or {})}, **update})


def bash_words(cmdline: str, cwd: Path) -> list[str]:
    """The argv bash builds from ``cmdline`` (printf stands in for the command: nothing runs)."""
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", "printf '%s\\0' " + cmdline],
                          capture_output=True, cwd=cwd, env={"PATH": "/usr/bin:/bin"}, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert not list(cwd.iterdir()), "bash created a file: the command line executed something"
    return proc.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1]


def code_block(readme: str, heading: str) -> str:
    section = readme.split(heading, 1)[1]
    return section.split("```bash\n", 1)[1].split("\n```", 1)[0]


def unescape_compose(value: str) -> str:
    assert "$" not in value.replace("$$", ""), f"an unescaped $ reaches Compose interpolation: {value!r}"
    return value.replace("$$", "$")


def k8s_expand(value: str, mapping=lambda name: "\x00") -> str:
    """What Kubernetes makes of a container's command/args/env value: a port of
    third_party/forked/golang/expansion (Expand): $$ -> $, $(NAME) -> mapping(NAME), an unclosed
    '$(' and '$' + any other character stay. The default mapping marks every expansion with NUL,
    a character no card text holds."""
    out, i = [], 0
    while i < len(value):
        if value[i] != "$" or i + 1 == len(value):
            out.append(value[i])
            i += 1
        elif value[i + 1] == "$":
            out.append("$")
            i += 2
        elif value[i + 1] == "(" and ")" in value[i + 2:]:
            end = value.index(")", i + 2)
            out.append(mapping(value[i + 2:end]))
            i = end + 1
        else:
            out.append(value[i:i + 2])
            i += 2
    return "".join(out)


def test_k8s_expand_follows_kubernetes():
    """Examples from Kubernetes' own expansion tests (expand_test.go)."""
    env = {"VAR_A": "A", "VAR_B": "B"}.get
    assert k8s_expand("$(VAR_A)-$(VAR_B)", lambda n: env(n) or f"$({n})") == "A-B"
    assert k8s_expand("$$(VAR_A)", env) == "$(VAR_A)"
    assert k8s_expand("$$$(VAR_A)", env) == "$A"
    assert k8s_expand("$(VAR_A", env) == "$(VAR_A"
    assert k8s_expand("$VAR_A $", env) == "$VAR_A $"


def check_readme(plan, readme: str, cwd: Path) -> None:
    from deploy_kit.render import docker_run_argv, vllm_serve_argv

    run_block = code_block(readme, "## The same with `docker run`").split("\n", 1)[1]
    assert bash_words(run_block, cwd) == docker_run_argv(plan)
    bare = code_block(readme, "## The same server without containers")
    exports = [line for line in bare.split("\n") if line.startswith("export ")]
    assert len(exports) == len(plan.env)
    got = dict(w.split("=", 1) for line in exports for w in bash_words(line[len("export "):], cwd))
    assert got == plan.env
    serve = bare.split("\n", len(exports))[-1]
    assert bash_words(serve, cwd) == vllm_serve_argv(plan)


def check_every_renderer(plan, tmp: Path) -> None:
    """Render every file; each parses back to exactly the plan's values."""
    from deploy_kit.render import parse_env_file, render_files

    files = render_files(plan)  # BadInput here is a refusal, which the callers accept
    env_lines = [x for x in files["model.env"].splitlines() if x and not x.startswith("#")]
    assert len(env_lines) == len(plan.env), "a value added a line to model.env"
    assert parse_env_file(files["model.env"]) == plan.env
    compose = yaml.safe_load(files["compose.yaml"])
    (svc,) = compose["services"].values()
    assert [unescape_compose(a) for a in svc["command"]] == plan.argv
    assert set(svc) >= {"image", "command", "env_file"} and svc["env_file"] == ["model.env"]
    cwd = tmp / "bash"
    cwd.mkdir(exist_ok=True)
    check_readme(plan, files["README.md"], cwd)


@settings(SETTINGS, max_examples=30)
@given(args=st.lists(st.one_of(st.sampled_from(NASTY), ONE_LINE), max_size=4),
       env=st.dictionaries(ENV_KEY, st.one_of(st.sampled_from(NASTY), ONE_LINE), max_size=3))
def test_argv_and_env_round_trip_through_compose_env_file_and_readme(args, env, tmp_path_factory):
    plan = with_values(args=args, env=env)
    try:
        check_every_renderer(plan, tmp_path_factory.mktemp("r"))
    except BadInput as exc:  # refused, never written: only what model.env cannot represent
        assert exc.field and exc.field.startswith("env.")
        bad = plan.env[exc.field[len("env."):]]
        assert "'" in bad or LINE_BREAKING.search(bad)


@SETTINGS
@given(args=st.lists(ANY_TEXT, max_size=3), env=st.dictionaries(ENV_KEY, ANY_TEXT, max_size=3))
def test_any_text_parses_back_from_yaml_or_is_refused(args, env):
    """Newlines and control characters too: YAML carries them; the env file refuses them."""
    from deploy_kit.render import parse_env_file, render_files

    plan = with_values(args=args, env=env)
    try:
        files = render_files(plan)
    except BadInput as exc:
        assert exc.field and exc.field.startswith("env.")
        bad = plan.env[exc.field[len("env."):]]
        assert "'" in bad or LINE_BREAKING.search(bad)
        return
    (svc,) = yaml.safe_load(files["compose.yaml"])["services"].values()
    assert [unescape_compose(a) for a in svc["command"]] == plan.argv
    assert parse_env_file(files["model.env"]) == plan.env


@SETTINGS
@given(key=st.one_of(st.sampled_from(["A;B", "A=B", "$(x)", "VLLM_*", "A\nLD_PRELOAD", "a", "1A", "A B", ""]),
                     ANY_TEXT))
def test_env_keys_that_are_not_names_are_refused(key):
    from deploy_kit.envcheck import env_key_problem
    from deploy_kit.render import env_file_text

    if re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
        assert env_key_problem(key) is None
        return
    assert env_key_problem(key) is not None
    with pytest.raises(BadInput):
        env_file_text({key: "1"})


@SETTINGS
@given(value=st.one_of(st.sampled_from(["x\nRUN touch /pwned", "a b", "img:1 AS evil", "${X}", "quay.io/a/b:1"]),
                       ANY_TEXT))
def test_dockerfile_values_are_single_tokens(value):
    from deploy_kit.render import render_files

    baseline = render_files(base_plan())["Dockerfile"].splitlines()
    try:
        docker = render_files(with_values(base_image=value))["Dockerfile"].splitlines()
    except BadInput as exc:
        assert "not a single token" in exc.message
        assert not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,255}", value)
        return
    assert len(docker) == len(baseline), "a value added a line to the Dockerfile"
    assert f"ARG BASE_IMAGE={value}" in docker and " " not in value and "\n" not in value


@SETTINGS
@given(args=st.lists(st.one_of(st.sampled_from(NASTY), ANY_TEXT), max_size=3),
       env=st.dictionaries(ENV_KEY, ANY_TEXT, max_size=3))
def test_kubernetes_manifests_parse_back(args, env, tmp_path_factory):
    from deploy_kit.stack.k8s import render_k8s

    plan = with_values(args=args, env=env)
    out = tmp_path_factory.mktemp("k8s")
    render_k8s(plan, out)
    dep = yaml.safe_load((out / "deployment.yaml").read_text())
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert [k8s_expand(word) for word in c["command"]] == plan.argv
    assert {e["name"]: k8s_expand(e["value"]) for e in c["env"]} == {k: v for k, v in plan.env.items()
                                                                     if k != "ASCEND_RT_VISIBLE_DEVICES"}


@settings(SETTINGS, max_examples=30)
@given(args=st.lists(st.one_of(st.sampled_from(NASTY), ONE_LINE), max_size=3))
def test_multinode_scripts_quote_every_argument(args, tmp_path_factory):
    """The leader's `bash -c` script (compose per node and LeaderWorkerSet) runs vLLM with exactly
    the plan's argv."""
    from deploy_kit.stack.compose_render import render_multinode
    from deploy_kit.stack.k8s import ray_argv, render_k8s

    plan = with_values("ascend-a2", args=args)
    tmp = tmp_path_factory.mktemp("mn")
    cwd = tmp / "bash"
    cwd.mkdir()
    render_multinode(plan, tmp / "compose", 2)
    (svc,) = yaml.safe_load((tmp / "compose" / "compose.node0.yaml").read_text())["services"].values()
    script = unescape_compose(svc["command"][0])
    exec_line = script.splitlines()[-1]
    assert exec_line.startswith("exec ")
    assert bash_words(exec_line[len("exec "):], cwd) == ray_argv(plan, 2)
    render_k8s(plan, tmp / "k8s", nodes=2)
    docs = [yaml.safe_load(p.read_text()) for p in (tmp / "k8s").glob("*.yaml")]
    lws = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["command"][:2] == ["bash", "-c"]
    assert bash_words(k8s_expand(leader["command"][2]).splitlines()[-1][len("exec "):], cwd) == ray_argv(plan, 2)


def test_kubernetes_does_not_expand_card_text(tmp_path):
    from deploy_kit.stack.k8s import render_k8s

    plan = with_values(args=["--chat-template=$(HF_TOKEN)", "$$(X)"], env={"VLLM_X": "$(HF_TOKEN)"})
    render_k8s(plan, tmp_path)
    (c,) = yaml.safe_load((tmp_path / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"]
    assert c["command"][-2:] == ["--chat-template=$$(HF_TOKEN)", "$$$$(X)"]
    assert {"name": "VLLM_X", "value": "$$(HF_TOKEN)"} in c["env"]
    assert [k8s_expand(word) for word in c["command"][-2:]] == ["--chat-template=$(HF_TOKEN)", "$$(X)"]


def test_kubernetes_writer_never_deletes_foreign_files(tmp_path):
    from deploy_kit.stack.compose_render import render_multinode
    from deploy_kit.stack.k8s import render_k8s

    plan = with_values("ascend-a2")
    for out, write in ((tmp_path / "k8s", render_k8s), (tmp_path / "mn", lambda p, d: render_multinode(p, d, 2))):
        out.mkdir()
        (out / "deployment.yaml").write_text("mine\n")
        (out / "compose.node0.yaml").write_text("mine\n")
        with pytest.raises(BadInput, match="holds no deploykit render"):
            write(plan, out)
        assert (out / "deployment.yaml").read_text() == (out / "compose.node0.yaml").read_text() == "mine\n"


def test_card_text_reaches_argv_only_through_the_schema(tmp_path):
    """The realistic path: hostile text in a card is refused by the schema or rendered quoted."""
    from deploy_kit.cardload import load_card
    from deploy_kit.planner import plan

    src = (Path(__file__).resolve().parent.parent / "models" / "smollm2-135m-instruct.yaml").read_text()
    card = tmp_path / "c.yaml"
    card.write_text(src.replace("name: smollm2-135m-instruct", "name: c"))
    lc = load_card(str(card))
    p = plan(lc, target="cpu", port_probe=None,
             sets=['serve.extra_args=["--x=$(touch pwned)", "`id`", "a b"]', "env.VLLM_X=$HOME;id"])
    check_every_renderer(p, tmp_path)
    refused = {"serve.served_model_name=a;b": "serve.served_model_name",
               'serve.extra_args=["a\\nb"]': "serve.extra_args.0",            # YAML "\n": a real newline
               'env.VLLM_X="a\\u001b[2J"': "env.VLLM_X",                      # an ESC character
               "env.VLLM_X;touch /tmp/x=1": "env.VLLM_X;touch /tmp/x"}
    for bad, field in refused.items():
        with pytest.raises(BadInput) as ei:
            plan(lc, target="cpu", port_probe=None, sets=[bad])
        assert (ei.value.file, ei.value.field) == ("--set", field), bad


@pytest.mark.parametrize("target", ["cuda", "ascend-a2", "ascend-a3"])
def test_every_target_renders_nasty_text_quoted(target, tmp_path):
    """The same checks on the accelerator targets (device flags, --gpus quoting, mounts)."""
    env = {f"VLLM_N{i}": v for i, v in enumerate(NASTY) if "'" not in v}
    check_every_renderer(with_values(target, args=NASTY, env=env), tmp_path)
