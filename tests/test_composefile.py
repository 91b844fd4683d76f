"""The one compose contract (deploy_kit/composefile.py): one project name, one service builder for
single, stack and multi-node services, one label namespace, `$` never interpolated."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy_kit import composefile
from deploy_kit.planner import plan as plan_card

pytestmark = pytest.mark.unit


def _plan(*sets: str):
    return plan_card("smollm2-135m-instruct", target="cpu", port=18123, port_probe=None, sets=list(sets))


@given(st.text())
def test_escape_leaves_no_interpolation(text):
    escaped = composefile.escape(text)
    assert "$" not in escaped.replace("$$", "")          # every $ is a literal $$
    assert escaped.replace("$$", "$") == text             # and Compose's unescape gives the text back


def test_one_builder_one_label_namespace(tmp_path):
    from deploy_kit.operate.heal import service_policy
    from deploy_kit.stack.compose_render import stack_service

    p = _plan()
    single = composefile.service(p)
    stack = stack_service(p, tmp_path)
    node = composefile.service(p, env_file=None, build_context=None, publish=False)  # multi-node form
    for svc in (single, stack, node):
        assert all(k.startswith("org.deploykit.") for k in svc["labels"])
        assert svc["labels"]["org.deploykit.name"] == "smollm2-135m-instruct"
        for key, value in service_policy(p).items():   # the self-healing policy is merged into each
            assert svc[key] == value
    assert single["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert stack["build"] == {"context": "./build/smollm2-135m-instruct", "dockerfile": "Dockerfile"}
    assert "build" not in node and "ports" not in node
    assert node["environment"]["VLLM_CPU_KVCACHE_SPACE"] == p.env["VLLM_CPU_KVCACHE_SPACE"]
    same = {k for k in single if k not in ("build", "env_file")}
    assert {k: single[k] for k in same} == {k: stack[k] for k in same}


def test_project_name_of_render_and_of_runs():
    assert composefile.project_name("Demo.X") == "deploykit-demo-x"
    assert re.fullmatch(r"deploykit-demo-x-[0-9a-f]{6}", composefile.project_name("Demo.X", "/state"))


@pytest.mark.parametrize("value", ["$HOME", "${X:?boom}", "a$$b", "$"])
def test_dollar_in_argv_and_env_reaches_the_container_literally(value):
    p = _plan(f"serve.extra_args=[--x, '{value}']")
    p = p.model_copy(update={"env": {**p.env, "DK_TEST": value}})
    svc = composefile.service(p, env_file=None)
    assert svc["command"][-1] == value.replace("$", "$$") and svc["environment"]["DK_TEST"] == value.replace("$", "$$")


