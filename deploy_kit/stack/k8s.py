"""Kubernetes manifests from a Plan: Deployment + Service, or a LeaderWorkerSet (Ray) for --nodes > 1.

The container image is the pinned upstream image (plan.base_image: the Ascend Dockerfile adds
nothing a pod needs) or the same image copied into the operator's registry (`--registry`, with
the docker commands that copy it). Without the Ascend Docker Runtime the MindCluster device plugin
maps only the /dev nodes, so the driver files are hostPath mounts, exactly the docker mounts of
upstream's quick start; `--ascend-runtime` leaves them to the runtime. Multi-node follows
upstream's tutorials/features/ray.md: NOSET variable, HCCL_IF_IP = the pod IP, the NIC named for
GLOO/TP, workers join with their own IP, and the leader starts vLLM only once every node joined.
Every shell string is built with shlex (argv from cards never reaches a shell unquoted).

Probes: the startup probe is sized from the plan's readiness deadline (weights load + graph
capture), so the liveness probe (armed only after startup succeeds) cannot kill a loading server.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..errors import BadInput
from ..planner import Plan

RESOURCES = ("huawei.com/Ascend910", "huawei.com/ascend-1980")
DEFAULT_RESOURCE = RESOURCES[0]
# Node label each resource's device plugin sets (so a pod lands where its resource exists).
NODE_SELECTORS = {
    # MindCluster node labels: accelerator = huawei-Ascend910 (Ascend Device Plugin)
    # https://www.hiascend.com/document/detail/en/mindcluster/730/clustersched/schedulingug/dlug_api_039.html
    "huawei.com/Ascend910": {"accelerator": "huawei-Ascend910"},
    # Huawei Cloud CCE NPU nodes: https://support.huaweicloud.com/eu/usermanual-cce/cce_10_0346.html
    "huawei.com/ascend-1980": {"accelerator/huawei-npu": "ascend-1980"},
}
PERIOD_S = 10
RAY_PORT = 6379
RAY_JOIN_TIMEOUT_S = 900
HCCN_TOOL = "/usr/local/Ascend/driver/tools/hccn_tool"  # upstream tutorials/features/ray.md mounts this path
NOSET = "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"
# A '$' that Kubernetes would read as the start of $(VAR) or of the $$ escape (see k8s_escape).
_K8S_REF = re.compile(r"\$(?=[$(])")
_REGISTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._\-]*)*")

# Polls the GCS until `n` nodes are alive: vLLM sizes its placement group from the nodes present
# when it starts, so starting before the workers joined fails or runs on too few NPUs.
_WAIT_FOR_NODES = (
    "import sys, time, ray\n"
    "n, deadline = int(sys.argv[1]), time.time() + int(sys.argv[2])\n"
    "ray.init(address=\"auto\", logging_level=\"ERROR\")\n"
    "while sum(1 for x in ray.nodes() if x[\"Alive\"]) < n:\n"
    "    if time.time() > deadline:\n"
    "        sys.exit(\"ray: fewer than %d nodes joined in time\" % n)\n"
    "    time.sleep(5)\n"
)


class _NoAliases(yaml.SafeDumper):
    """Manifests spell every value out: shared dicts (labels, selectors) would become YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def ray_argv(plan: Plan, nodes: int) -> list[str]:
    """vLLM's argv across `nodes` nodes: TP inside a node, PP across nodes (upstream ray.md)."""
    return list(plan.argv) + ["--distributed-executor-backend", "ray", "--pipeline-parallel-size", str(nodes)]


def leader_script(plan: Plan, nodes: int, ip_var: str) -> str:
    """Ray head, wait until all `nodes` joined, then exec vLLM. ip_var: env var holding this node's IP."""
    lines = [
        "set -e",
        shlex.join(["ray", "start", "--head", f"--port={RAY_PORT}"]) + f' --node-ip-address="${ip_var}"',
        shlex.join(["python3", "-c", _WAIT_FOR_NODES, str(nodes), str(RAY_JOIN_TIMEOUT_S)]),
        "exec " + shlex.join(ray_argv(plan, nodes)),
    ]
    return "\n".join(lines)


def worker_script(head_var: str, ip_var: str) -> str:
    """Join the head at $head_var with this node's own IP ($ip_var), as upstream's worker step does."""
    return (shlex.join(["ray", "start"]) + f' --address="${head_var}:{RAY_PORT}"'
            + f' --node-ip-address="${ip_var}" --block')


def registry_image(plan: Plan, registry: str | None) -> str:
    """The image pods run: the pinned upstream image, or its copy under `registry`."""
    if not registry:
        return plan.base_image
    if not _REGISTRY.fullmatch(registry.rstrip("/")):
        raise BadInput(f"--registry {registry!r} is not a registry host[/path]", field="--registry",
                       hint="e.g. registry.example.com:5000/ai")
    return f"{registry.rstrip('/')}/{plan.base_image.rsplit('/', 1)[-1]}"


def push_commands(plan: Plan, registry: str | None) -> list[str]:
    """docker commands that copy the upstream image into `registry` (empty without one)."""
    if not registry:
        return []
    dest = registry_image(plan, registry)
    return [shlex.join(["docker", "pull", plan.base_image]), shlex.join(["docker", "tag", plan.base_image, dest]),
            shlex.join(["docker", "push", dest])]


def _probes(plan: Plan, port: int, multinode: bool) -> dict:
    http = {"httpGet": {"path": "/health", "port": port}}
    # a multi-node leader first waits (up to RAY_JOIN_TIMEOUT_S) for its workers to join
    budget = plan.readiness_timeout_s + (RAY_JOIN_TIMEOUT_S if multinode else 0)
    return {
        "startupProbe": {**http, "periodSeconds": PERIOD_S, "failureThreshold": max(6, math.ceil(budget / PERIOD_S))},
        "readinessProbe": {**http, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**http, "periodSeconds": 30, "failureThreshold": 5, "timeoutSeconds": 10},
    }


def k8s_escape(text: str) -> str:
    """``text`` as Kubernetes must see it in a container's command, args or env value to pass it on
    unchanged: Kubernetes replaces $(VAR) with a variable's value and $$ with $, so each '$' that
    starts either pair is doubled ('$(HF_TOKEN)' -> '$$(HF_TOKEN)'); a lone '$VAR' stays as it is,
    for the shell of a bash -c script."""
    return _K8S_REF.sub("$$", text)


def _env(plan: Plan) -> list[dict]:
    return [{"name": k, "value": str(v)} for k, v in sorted(plan.env.items()) if k != "ASCEND_RT_VISIBLE_DEVICES"]


def _driver_volumes(plan: Plan, ascend_runtime: bool, multinode: bool) -> tuple[list[dict], list[dict]]:
    """hostPath volumes + mounts for the driver files (the plan's non-weights mounts)."""
    if ascend_runtime or plan.target_kind != "ascend":
        return [], []
    paths = [(m.source, m.target, m.read_only) for m in plan.mounts if m.target != plan.weights.container_path]
    if multinode:
        paths.append((HCCN_TOOL, HCCN_TOOL, True))
    vols, mounts = [], []
    for i, (src, tgt, ro) in enumerate(paths):
        vols.append({"name": f"driver-{i}", "hostPath": {"path": src.rstrip("/") or "/"}})
        mounts.append({"name": f"driver-{i}", "mountPath": tgt.rstrip("/") or "/", "readOnly": ro})
    return vols, mounts


def _pod_spec(plan: Plan, *, image: str, resource: str, command: list[str], weights_claim: str | None,
              node_selector: dict[str, str], extra_env: list[dict], probes: bool,
              ascend_runtime: bool, multinode: bool) -> dict:
    port = plan.container_port
    ndev = len(plan.host_devices)
    limits = {resource: str(ndev)} if ndev else {}
    dvols, dmounts = _driver_volumes(plan, ascend_runtime, multinode)
    c: dict[str, Any] = {
        "name": "vllm", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": [k8s_escape(word) for word in command],
        "env": [{**e, "value": k8s_escape(e["value"])} if "value" in e else e for e in _env(plan) + extra_env],
        "ports": [{"containerPort": port, "name": "http"}],
        "resources": {"limits": limits, "requests": dict(limits)} if limits else {},
        "volumeMounts": [{"name": "weights", "mountPath": plan.weights.container_path, "readOnly": True},
                         {"name": "dshm", "mountPath": "/dev/shm"}] + dmounts,
    }
    if probes:
        c.update(_probes(plan, port, multinode))
    weights = ({"persistentVolumeClaim": {"claimName": weights_claim, "readOnly": True}} if weights_claim
               else {"hostPath": {"path": plan.weights.host_path, "type": "Directory"}})
    spec: dict[str, Any] = {
        "containers": [c],
        "volumes": [{"name": "weights", **weights},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _shm(plan)}}] + dvols,
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return spec


def _shm(plan: Plan) -> str:
    s = plan.shm_size
    return s[:-1] + "Gi" if s.lower().endswith("g") else s


def render_compose_nodes(plan: Plan, out_dir: str | Path, nodes: int = 2, **kw: Any) -> list[Path]:
    """`deploykit render --nodes N` without --k8s: one compose file per node (see compose_render);
    ``kw``: ifname, force."""
    from .compose_render import render_multinode

    return render_multinode(plan, out_dir, nodes, **kw)


def _multinode_env(ifname: str) -> list[dict]:
    def pod_ip() -> dict:  # a fresh dict each time: shared objects would come out as YAML anchors
        return {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}

    return [{"name": "POD_IP", **pod_ip()}, {"name": "HCCL_IF_IP", **pod_ip()},
            {"name": "GLOO_SOCKET_IFNAME", "value": ifname}, {"name": "TP_SOCKET_IFNAME", "value": ifname},
            {"name": "HCCL_SOCKET_IFNAME", "value": ifname},
            {"name": NOSET, "value": "1"}]


def _lws(plan: Plan, nodes: int, labels: dict[str, str], pod_kw: dict[str, Any], ifname: str) -> dict:
    leader = _pod_spec(plan, command=["bash", "-c", leader_script(plan, nodes, "POD_IP")],
                       extra_env=_multinode_env(ifname), probes=True, multinode=True, **pod_kw)
    worker = _pod_spec(plan, command=["bash", "-c", worker_script("LWS_LEADER_ADDRESS", "POD_IP")],
                       extra_env=_multinode_env(ifname), probes=False, multinode=True, **pod_kw)
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": plan.name, "labels": labels},
            "spec": {"replicas": 1, "leaderWorkerTemplate": {
                "size": nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": {"labels": {**labels, "role": "leader"}}, "spec": leader},
                "workerTemplate": {"metadata": {"labels": {**labels, "role": "worker"}}, "spec": worker}}}}


def render_k8s(plan: Plan, out_dir: str | Path, nodes: int = 1, resource_name: str | None = DEFAULT_RESOURCE, *,
               force: bool = False, **kw: Any) -> list[Path]:
    """Write manifests (+ README.md) into out_dir through render.write_tree (a directory holding files
    deploykit did not write is refused, exit 2); returns the files. nodes > 1: LeaderWorkerSet + Ray.
    ``kw``: k8s_files' keywords (weights_claim, node_selector, ifname, registry, ascend_runtime)."""
    from ..render import write_tree

    return write_tree(out_dir, k8s_files(plan, nodes, resource_name, **kw), force=force)


def k8s_files(plan: Plan, nodes: int = 1, resource_name: str | None = DEFAULT_RESOURCE, *,
              weights_claim: str | None = None, node_selector: dict[str, str] | None = None,
              ifname: str = "eth0", registry: str | None = None, ascend_runtime: bool = False) -> dict[str, str]:
    """File name -> text of the manifests and README.md (nothing is written)."""
    resource_name = resource_name or DEFAULT_RESOURCE
    if node_selector is None:
        node_selector = NODE_SELECTORS.get(resource_name, {}) if plan.target_kind == "ascend" else {}
    labels = {"app.kubernetes.io/name": plan.name, "app.kubernetes.io/managed-by": "deploykit"}
    pod_kw: dict[str, Any] = {"image": registry_image(plan, registry), "resource": resource_name,
                              "weights_claim": weights_claim, "node_selector": node_selector,
                              "ascend_runtime": ascend_runtime}
    docs: list[dict] = []
    if nodes <= 1:
        pod = _pod_spec(plan, command=list(plan.argv), extra_env=[], probes=True, multinode=False, **pod_kw)
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": plan.name, "labels": labels},
                     "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                              "template": {"metadata": {"labels": labels}, "spec": pod}}})
        selector = labels
    else:
        docs.append(_lws(plan, nodes, labels, pod_kw, ifname))
        selector = {**labels, "role": "leader"}
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": plan.name, "labels": labels},
                 "spec": {"selector": selector, "ports": [{"name": "http", "port": plan.container_port,
                                                           "targetPort": plan.container_port}]}})
    files = {f"{d['kind'].lower()}.yaml": yaml.dump(d, Dumper=_NoAliases, sort_keys=False, width=200) for d in docs}
    files["README.md"] = _readme(plan, nodes, resource_name, registry, ascend_runtime)
    return files


def _readme(plan: Plan, nodes: int, resource: str, registry: str | None, ascend_runtime: bool) -> str:
    lines = [f"# {plan.name} on Kubernetes ({nodes} node(s), resource {resource})", "",
             f"Image: `{registry_image(plan, registry)}` (vLLM-Ascend {plan.vllm_ascend_release or '-'}, "
             f"vLLM {plan.vllm_version}).", ""]
    if registry:
        lines += ["Copy the image into your registry first:", "", "```bash", *push_commands(plan, registry),
                  "```", ""]
    if ascend_runtime:
        lines.append("The nodes run the Ascend Docker Runtime: it injects the driver files, so the pods mount none.")
    elif plan.target_kind == "ascend":
        lines.append("The pods mount the driver files from the host (hostPath), as upstream's docker run does; "
                     "with the Ascend Docker Runtime installed, render with --ascend-runtime instead.")
    if nodes > 1:
        lines += ["", f"The leader starts Ray, waits until all {nodes} nodes joined (`ray.nodes()`), then "
                      "starts vLLM; workers join with their own pod IP. Needs the LeaderWorkerSet CRD."]
    return "\n".join(lines) + "\n"
