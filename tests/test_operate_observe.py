"""Prometheus config, Grafana dashboard and provisioning rendered for a stack.

The dashboard's JSON shape, every query's metric names against a real vLLM /metrics page, the
scrape config and Grafana's provisioning (promtool: test_operate_prometheus.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from deploy_kit.operate import observe
from deploy_kit.operate.metrics import families

pytestmark = pytest.mark.unit

FIX = Path(__file__).parent / "fixtures" / "metrics" / "vllm-cpu-smollm2.txt"
OLD_NAMES = {"vllm:gpu_cache_usage_perc"}  # fallback for vLLM < 0.10 (vLLM-Ascend 0.9.x)
NPU_NAMES = {"npu_chip_info_hbm_used_memory", "npu_chip_info_hbm_total_memory", "npu_chip_info_utilization"}
TARGETS = [observe.ScrapeTarget("smol-a", "smol-a:8000"), observe.ScrapeTarget("smol-b", "smol-b:8000")]


def _exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_shape():
    dash = observe.grafana_dashboard(npu=True)
    assert dash["uid"] == "deploykit-vllm" and isinstance(dash["schemaVersion"], int)
    assert [p["id"] for p in dash["panels"]] == list(range(1, len(dash["panels"]) + 1))
    cells = set()
    for p in dash["panels"]:
        assert p["type"] == "timeseries" and p["title"] and p["datasource"]["uid"] == observe.DATASOURCE_UID
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and 0 <= g["x"] and g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in p["targets"])
        assert all(t["datasource"]["uid"] == observe.DATASOURCE_UID for t in p["targets"])
    titles = [p["title"] for p in dash["panels"]]
    for want in ("Time to first token", "Time per output token", "Generated tokens/s", "KV cache usage",
                 "Requests running / waiting", "NPU HBM used", "NPU AI Core utilisation"):
        assert want in titles
    assert not [t for t in (p["title"] for p in observe.grafana_dashboard(npu=False)["panels"]) if "NPU" in t]
    json.dumps(dash, allow_nan=False)


def test_every_queried_metric_is_exported_by_real_vllm():
    real = set(families(FIX.read_text()))
    names = {m for e in _exprs(observe.grafana_dashboard(npu=True))
             for m in re.findall(r"\b(?:vllm:[a-z0-9_:]+|npu_chip_info_[a-z0-9_]+)", e)}
    vllm = {re.sub(r"_(bucket|total)$", "", n) for n in names if n.startswith("vllm:")}
    assert vllm - real - OLD_NAMES == set()
    assert {n for n in names if n.startswith("npu_")} == NPU_NAMES


def test_prometheus_config_and_provisioning(tmp_path):
    files = observe.write_observability(tmp_path, TARGETS, npu_exporter="host.docker.internal:8082")
    assert sorted(str(f.relative_to(tmp_path)) for f in files) == sorted(
        [observe.PROMETHEUS_CONFIG, observe.DASHBOARD_FILE, observe.DATASOURCE_FILE, observe.PROVIDER_FILE])
    cfg = yaml.safe_load((tmp_path / observe.PROMETHEUS_CONFIG).read_text())
    vllm, npu = cfg["scrape_configs"]
    assert vllm["job_name"] == "vllm" and vllm["static_configs"] == [
        {"targets": ["smol-a:8000"], "labels": {"deployment": "smol-a"}},
        {"targets": ["smol-b:8000"], "labels": {"deployment": "smol-b"}}]
    assert npu == {"job_name": "npu-exporter", "metrics_path": "/metrics",
                   "static_configs": [{"targets": ["host.docker.internal:8082"]}]}
    ds = yaml.safe_load((tmp_path / observe.DATASOURCE_FILE).read_text())["datasources"][0]
    assert ds["uid"] == observe.DATASOURCE_UID and ds["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((tmp_path / observe.PROVIDER_FILE).read_text())["providers"][0]
    svc = observe.observability_services(_Obs(), host_network=False)
    mounted = {v.split(":")[1]: v.split(":")[0] for v in svc["grafana"]["volumes"]}
    assert mounted[prov["options"]["path"] + "/deploykit-vllm.json"] == "./" + observe.DASHBOARD_FILE
    assert svc["prometheus"]["ports"] == ["127.0.0.1:9090:9090"] and svc["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    host = observe.observability_services(_Obs(), host_network=True)
    assert host["prometheus"]["network_mode"] == "host" and "ports" not in host["prometheus"]
    assert "--web.listen-address=127.0.0.1:9090" in host["prometheus"]["command"]
    assert host["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


class _Obs:
    prometheus_port, grafana_port = 9090, 3000
    prometheus_image, grafana_image = "prom/prometheus:v2.53.0", "grafana/grafana-oss:11.1.0"
