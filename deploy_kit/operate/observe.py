"""Prometheus + Grafana files for a stack: scrape config, dashboard JSON, Grafana provisioning.

    write_observability(out: Path, targets: list[ScrapeTarget], *, npu_exporter: str | None = None,
                        prometheus_url: str = "http://prometheus:9090") -> list[Path]
    observability_services(obs, *, host_network: bool) -> dict      # compose services

Targets are ``host:port`` addresses: compose service names inside one stack compose project
(``stack render``), or 127.0.0.1:<published port> when the companions run with host networking
beside deployments that each have their own compose project (``stack up``).

NPU metrics come from MindCluster NPU Exporter (Huawei; default port 8082, GET http://ip:8082/metrics;
gauges labelled ``id`` = NPU id: ``npu_chip_info_hbm_used_memory`` / ``npu_chip_info_hbm_total_memory``
in MB, ``npu_chip_info_utilization`` in %, ``npu_chip_info_health_status`` 1 = healthy). Sources:
https://www.hiascend.com/document/detail/en/mindcluster/730/clustersched/schedulingug/dlug_api_004.html
and github.com/Ascend/ascend-npu-exporter collector/npu_collector.go. deploykit does not start the
exporter (it runs as a host DaemonSet/service with driver access); it only scrapes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NPU_EXPORTER_PORT = 8082
DATASOURCE_UID = "deploykit-prometheus"
DASHBOARD_UID = "deploykit-vllm"
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"
DASHBOARD_FILE = "grafana/dashboards/deploykit-vllm.json"
DATASOURCE_FILE = "grafana/provisioning/datasources/deploykit.yaml"
PROVIDER_FILE = "grafana/provisioning/dashboards/deploykit.yaml"


@dataclass(frozen=True)
class ScrapeTarget:
    deployment: str
    address: str  # host:port


def targets_in_network(plans: list) -> list[ScrapeTarget]:
    """Each deployment's compose service on the stack's network (service name = deployment name)."""
    return [ScrapeTarget(p.name, f"{p.name}:{p.container_port}") for p in plans]


def targets_on_host(plans: list) -> list[ScrapeTarget]:
    """Each deployment's published port, seen from the host network."""
    out = []
    for p in plans:
        host = p.bind_host if p.bind_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        out.append(ScrapeTarget(p.name, f"{host}:{p.port}"))
    return out


def prometheus_config(targets: list[ScrapeTarget], *, npu_exporter: str | None = None,
                      interval: str = "5s") -> dict:
    """prometheus.yml: one job for every vLLM server (label ``deployment``), one for the NPU exporter."""
    jobs: list[dict[str, Any]] = [{
        "job_name": "vllm",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [t.address], "labels": {"deployment": t.deployment}} for t in targets],
    }]
    if npu_exporter:
        jobs.append({"job_name": "npu-exporter", "metrics_path": "/metrics",
                     "static_configs": [{"targets": [npu_exporter]}]})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": jobs}


# ---------------------------------------------------------------- Grafana

def _quantile(q: float, metric: str) -> str:
    return f"histogram_quantile({q}, sum by (le, deployment) (rate({metric}_bucket[1m])))"


TPOT = "vllm:request_time_per_output_token_seconds"
ITL = "vllm:inter_token_latency_seconds"

PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    # (title, unit, [(PromQL, legend)]) in reading order: latency, throughput, KV cache, queue, NPU
    ("Time to first token", "s", [(_quantile(0.5, "vllm:time_to_first_token_seconds"), "p50 {{deployment}}"),
                                  (_quantile(0.99, "vllm:time_to_first_token_seconds"), "p99 {{deployment}}")]),
    ("Time per output token", "s", [(_quantile(0.5, TPOT) + " or " + _quantile(0.5, ITL), "p50 {{deployment}}"),
                                    (_quantile(0.99, TPOT) + " or " + _quantile(0.99, ITL), "p99 {{deployment}}")]),
    ("End-to-end request latency", "s",
     [(_quantile(0.5, "vllm:e2e_request_latency_seconds"), "p50 {{deployment}}"),
      (_quantile(0.99, "vllm:e2e_request_latency_seconds"), "p99 {{deployment}}")]),
    ("Generated tokens/s", "short", [("sum by (deployment) (rate(vllm:generation_tokens_total[1m]))",
                                      "gen {{deployment}}"),
                                     ("sum by (deployment) (rate(vllm:prompt_tokens_total[1m]))",
                                      "prompt {{deployment}}")]),
    ("Finished requests/s", "reqps", [("sum by (deployment) (rate(vllm:request_success_total[1m]))",
                                       "{{deployment}}")]),
    ("KV cache usage", "percentunit", [("max by (deployment) (vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc)",
                                        "{{deployment}}")]),
    ("Requests running / waiting", "short",
     [("sum by (deployment) (vllm:num_requests_running)", "running {{deployment}}"),
      ("sum by (deployment) (vllm:num_requests_waiting)", "waiting {{deployment}}")]),
    ("Server up", "short", [('up{job="vllm"}', "{{deployment}}")]),
    ("NPU HBM used", "percentunit", [("npu_chip_info_hbm_used_memory / npu_chip_info_hbm_total_memory",
                                      "NPU {{id}}")]),
    ("NPU AI Core utilisation", "percent", [("npu_chip_info_utilization", "NPU {{id}}")]),
]


def _panel(i: int, title: str, unit: str, queries: list[tuple[str, str]]) -> dict:
    ds = {"type": "prometheus", "uid": DATASOURCE_UID}
    return {
        "id": i + 1, "type": "timeseries", "title": title, "datasource": ds,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"refId": chr(ord("A") + j), "datasource": ds, "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(queries)],
    }


def grafana_dashboard(*, npu: bool = True) -> dict:
    """Dashboard model (Grafana JSON model, schemaVersion 39) for every deployment of a stack."""
    panels = [p for p in PANELS if npu or not p[0].startswith("NPU")]
    return {
        "uid": DASHBOARD_UID, "title": "deploykit: vLLM deployments", "tags": ["deploykit", "vllm"],
        "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
        "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []}, "annotations": {"list": []},
        "panels": [_panel(i, *p) for i, p in enumerate(panels)],
    }


def grafana_datasource(prometheus_url: str) -> dict:
    return {"apiVersion": 1, "datasources": [{
        "name": "Prometheus (deploykit)", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True, "editable": False}]}


def grafana_provider() -> dict:
    return {"apiVersion": 1, "providers": [{
        "name": "deploykit", "type": "file", "disableDeletion": True, "allowUiUpdates": False,
        "options": {"path": "/var/lib/grafana/dashboards", "foldersFromFilesStructure": False}}]}


def write_observability(out: Path, targets: list[ScrapeTarget], *, npu_exporter: str | None = None,
                        prometheus_url: str = "http://prometheus:9090") -> list[Path]:
    """Write prometheus.yml, the dashboard and Grafana's provisioning files under ``out``."""
    docs: dict[str, str] = {
        PROMETHEUS_CONFIG: yaml.safe_dump(prometheus_config(targets, npu_exporter=npu_exporter), sort_keys=False),
        DASHBOARD_FILE: json.dumps(grafana_dashboard(npu=npu_exporter is not None), indent=2) + "\n",
        DATASOURCE_FILE: yaml.safe_dump(grafana_datasource(prometheus_url), sort_keys=False),
        PROVIDER_FILE: yaml.safe_dump(grafana_provider(), sort_keys=False),
    }
    written = []
    for rel, text in docs.items():
        f = out / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        written.append(f)
    return written


def observability_services(obs: Any, *, host_network: bool) -> dict[str, dict]:
    """Compose services ``prometheus`` and ``grafana`` (stack-file ``observability`` section ``obs``).

    Ports are published on 127.0.0.1 only; with host networking (``stack up``) the servers
    themselves listen on 127.0.0.1."""
    prom_args = ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.retention.time=15d"]
    prom: dict[str, Any] = {"image": obs.prometheus_image, "restart": "unless-stopped",
                            "volumes": [f"./{PROMETHEUS_CONFIG}:/etc/prometheus/prometheus.yml:ro"]}
    graf: dict[str, Any] = {
        "image": obs.grafana_image, "restart": "unless-stopped",
        "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true", "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer"},
        "volumes": [f"./{DATASOURCE_FILE}:/etc/grafana/provisioning/datasources/deploykit.yaml:ro",
                    f"./{PROVIDER_FILE}:/etc/grafana/provisioning/dashboards/deploykit.yaml:ro",
                    f"./{DASHBOARD_FILE}:/var/lib/grafana/dashboards/deploykit-vllm.json:ro"]}
    if host_network:
        prom["network_mode"] = graf["network_mode"] = "host"
        prom["command"] = [*prom_args, f"--web.listen-address=127.0.0.1:{obs.prometheus_port}"]
        graf["environment"].update({"GF_SERVER_HTTP_ADDR": "127.0.0.1",
                                    "GF_SERVER_HTTP_PORT": str(obs.grafana_port)})
    else:
        prom["command"] = prom_args
        prom["ports"] = [f"127.0.0.1:{obs.prometheus_port}:9090"]
        graf["ports"] = [f"127.0.0.1:{obs.grafana_port}:3000"]
        graf["depends_on"] = ["prometheus"]
    return {"prometheus": prom, "grafana": graf}
