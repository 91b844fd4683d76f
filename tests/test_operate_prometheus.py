"""Debian's Prometheus tools on what `stack render` writes: promtool accepts the config and every
dashboard query (checked as recording rules, so PromQL syntax errors fail here, not in Grafana)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from deploy_kit.operate import observe
from tests.conftest import REPO, require
from tests.test_operate_observe import TARGETS, _exprs

pytestmark = pytest.mark.integration


def _promtool() -> str:
    exe = shutil.which("promtool")
    require(exe is not None, "promtool missing: apt-get install -y prometheus")
    assert exe is not None
    return exe


def test_promtool_accepts_the_config_and_every_dashboard_query(tmp_path):
    exe = _promtool()
    observe.write_observability(tmp_path, TARGETS, npu_exporter="127.0.0.1:8082")
    res = subprocess.run([exe, "check", "config", str(tmp_path / observe.PROMETHEUS_CONFIG)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "SUCCESS" in res.stdout + res.stderr, res.stdout + res.stderr
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"deploykit:q{i}", "expr": e} for i, e in enumerate(_exprs(observe.grafana_dashboard()))]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    res = subprocess.run([exe, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_stack_render_writes_a_config_promtool_accepts(tmp_path, monkeypatch):
    from deploy_kit.stack.compose_render import render_stack
    from deploy_kit.stack.stackfile import load_stack, plan_stack, with_observability

    exe = _promtool()
    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))
    st = with_observability(load_stack(REPO / "compose" / "cpu-demo-pair.yaml"), True)
    plans = plan_stack(st)
    f = render_stack(st.name, plans, tmp_path / "out", front_door=st.front_door, observability=st.observability)
    doc = yaml.safe_load(f.read_text())
    assert {"prometheus", "grafana"} <= set(doc["services"])
    cfg = tmp_path / "out" / observe.PROMETHEUS_CONFIG
    targets = yaml.safe_load(cfg.read_text())["scrape_configs"][0]["static_configs"]
    assert [t["targets"] for t in targets] == [["smol-a:8000"], ["smol-b:8000"]]
    assert len(yaml.safe_load(cfg.read_text())["scrape_configs"]) == 1  # cpu: no NPU exporter job
    res = subprocess.run([exe, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
