"""Kubernetes manifests from a Plan: Deployment + Service, or a LeaderWorkerSet (Ray) for --nodes > 1.

Probes: startup probe sized from the plan's readiness deadline (weights load + graph capture), so
the liveness probe (only armed after startup succeeds) cannot kill a server that is still loading.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from .compose_render import _g

RESOURCES = ("huawei.com/Ascend910", "huawei.com/ascend-1980")
DEFAULT_RESOURCE = RESOURCES[0]
PERIOD_S = 10


def _probes(plan: Any, port: int) -> dict:
    http = {"httpGet": {"path": "/health", "port": port}}
    return {
        "startupProbe": {**http, "periodSeconds": PERIOD_S, "failureThreshold":
                         max(6, math.ceil(int(_g(plan, "readiness_timeout_s", 600)) / PERIOD_S))},
        "readinessProbe": {**http, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**http, "periodSeconds": 30, "failureThreshold": 5, "timeoutSeconds": 10},
    }


def _env(d: dict) -> list[dict]:
    return [{"name": k, "value": str(v)} for k, v in sorted(d.items()) if k != "ASCEND_RT_VISIBLE_DEVICES"]


def _pod_spec(plan: Any, *, resource: str, command: list[str], weights_claim: str | None,
              node_selector: dict[str, str], extra_env: list[dict], probes: bool) -> dict:
    name = _g(plan, "name")
    port = int(_g(plan, "container_port", 8000))
    ndev = len(_g(plan, "host_devices", []) or [])
    w = _g(plan, "weights")
    container_path = _g(w, "container_path", f"/models/{name}")
    host_path = _g(w, "host_path", "")
    limits = {resource: str(ndev)} if ndev else {}
    c: dict[str, Any] = {
        "name": "vllm", "image": _g(plan, "image"), "command": command,
        "env": _env(_g(plan, "env", {}) or {}) + extra_env,
        "ports": [{"containerPort": port, "name": "http"}],
        "resources": {"limits": limits, "requests": dict(limits)} if limits else {},
        "volumeMounts": [{"name": "weights", "mountPath": container_path, "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if probes:
        c.update(_probes(plan, port))
    weights = ({"persistentVolumeClaim": {"claimName": weights_claim, "readOnly": True}} if weights_claim
               else {"hostPath": {"path": host_path, "type": "Directory"}})
    spec: dict[str, Any] = {
        "containers": [c],
        "volumes": [{"name": "weights", **weights},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _shm(plan)}}],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return spec


def _shm(plan: Any) -> str:
    s = str(_g(plan, "shm_size", "1g"))
    return s[:-1] + "Gi" if s.lower().endswith("g") else s


def render_compose_nodes(plan: Any, out_dir: str | Path, nodes: int = 2, **kw: Any) -> list[Path]:
    """`deploykit render --nodes N` without --k8s: one compose file per node (see compose_render)."""
    from .compose_render import render_multinode

    return render_multinode(plan, out_dir, nodes, **kw)


def render_k8s(plan: Any, out_dir: str | Path, nodes: int = 1, resource_name: str | None = DEFAULT_RESOURCE, *,
               weights_claim: str | None = None, node_selector: dict[str, str] | None = None,
               ifname: str = "eth0") -> list[Path]:
    """Write manifests into out_dir; returns the files. nodes > 1 gives a LeaderWorkerSet with Ray."""
    resource_name = resource_name or DEFAULT_RESOURCE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = _g(plan, "name")
    port = int(_g(plan, "container_port", 8000))
    if node_selector is None:
        node_selector = {"accelerator": "huawei-Ascend910"} if _g(plan, "target_kind") == "ascend" else {}
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "deploykit"}
    argv = list(_g(plan, "argv", []))
    docs: list[dict] = []
    if nodes <= 1:
        pod = _pod_spec(plan, resource=resource_name, command=argv, weights_claim=weights_claim,
                        node_selector=node_selector, extra_env=[], probes=True)
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": name, "labels": labels},
                     "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                              "template": {"metadata": {"labels": labels}, "spec": pod}}})
        selector = labels
    else:
        mn_env = [{"name": "HCCL_IF_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                  {"name": "HCCL_SOCKET_IFNAME", "value": ifname},
                  {"name": "GLOO_SOCKET_IFNAME", "value": ifname},
                  {"name": "TP_SOCKET_IFNAME", "value": ifname}]
        serve = " ".join(argv + ["--distributed-executor-backend", "ray", "--pipeline-parallel-size", str(nodes)])
        leader_cmd = ["bash", "-c", f"ray start --head --port=6379 && {serve}"]
        worker_cmd = ["bash", "-c", "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"]
        leader = _pod_spec(plan, resource=resource_name, command=leader_cmd, weights_claim=weights_claim,
                           node_selector=node_selector, extra_env=mn_env, probes=True)
        worker = _pod_spec(plan, resource=resource_name, command=worker_cmd, weights_claim=weights_claim,
                           node_selector=node_selector, extra_env=mn_env, probes=False)
        docs.append({"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
                     "metadata": {"name": name, "labels": labels},
                     "spec": {"replicas": 1, "leaderWorkerTemplate": {
                         "size": nodes,
                         "restartPolicy": "RecreateGroupOnPodRestart",
                         "leaderTemplate": {"metadata": {"labels": {**labels, "role": "leader"}}, "spec": leader},
                         "workerTemplate": {"metadata": {"labels": {**labels, "role": "worker"}}, "spec": worker}}}})
        selector = {**labels, "role": "leader"}
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
                 "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": port}]}})
    files = []
    for d in docs:
        f = out / f"{d['kind'].lower()}.yaml"
        f.write_text(yaml.safe_dump(d, sort_keys=False, width=200))
        files.append(f)
    return files
