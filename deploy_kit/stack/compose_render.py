"""One compose project for a whole stack (one service per deployment) plus a LiteLLM front door.

Each service maps only its own /dev/davinciN and leaves ASCEND_RT_VISIBLE_DEVICES unset (the
planner's rule), so the process sees exactly its NPUs as 0..n-1. Multi-node: one file per node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

LITELLM_CONFIG = "litellm-config.yaml"
MASTER_KEY_REF = "${LITELLM_MASTER_KEY:?export LITELLM_MASTER_KEY=sk-<secret> for the front door}"


def _g(plan: Any, key: str, default: Any = None) -> Any:
    return plan.get(key, default) if isinstance(plan, dict) else getattr(plan, key, default)


def _mounts(plan: Any) -> list[str]:
    out = []
    for m in _g(plan, "mounts", []) or []:
        src, tgt = _g(m, "source"), _g(m, "target")
        out.append(f"{src}:{tgt}" + (":ro" if _g(m, "read_only", True) else ""))
    return out


def service(plan: Any, image: str | None = None) -> dict:
    """Compose service dict from a Plan (or plan.json dict)."""
    env = {k: str(v) for k, v in (_g(plan, "env", {}) or {}).items()}
    if _g(plan, "visible_devices_rule", "") == "ascend-unset":
        env.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    svc: dict[str, Any] = {
        "image": image or _g(plan, "image"),
        "command": list(_g(plan, "argv", [])),
        "environment": env,
        "ports": [f"{_g(plan, 'bind_host', '127.0.0.1')}:{_g(plan, 'port')}:{_g(plan, 'container_port', 8000)}"],
        "shm_size": _g(plan, "shm_size", "1g"),
        "restart": "no",
        "labels": {"deploykit.deployment": _g(plan, "name"), "deploykit.card": _g(plan, "card_name", ""),
                   "deploykit.devices": ",".join(str(d) for d in _g(plan, "host_devices", []) or [])},
    }
    if _g(plan, "secret_env"):
        for n in _g(plan, "secret_env"):
            svc["environment"][n] = f"${{{n}:-}}"
    devs = list(_g(plan, "device_nodes", []) or [])
    if devs:
        svc["devices"] = [f"{d}:{d}" for d in devs]
    vols = _mounts(plan)
    if vols:
        svc["volumes"] = vols
    return svc


def stack_service(plan: Any, out: Path) -> dict:
    """The renderer's per-plan service dict (shared with `render`), with its env in env/<name>.env.

    `build:` is dropped: in a stack every image is built (content-addressed) by the runtime's `up`,
    and one stack directory cannot hold one Dockerfile per target.
    """
    try:
        from ..render import env_file_text, service_dict
    except ImportError:  # renderer not available: same content, env inline
        return service(plan)
    name = _g(plan, "name")
    env = {k: str(v) for k, v in (_g(plan, "env", {}) or {}).items()}
    if _g(plan, "visible_devices_rule", "") == "ascend-unset":
        env.pop("ASCEND_RT_VISIBLE_DEVICES", None)
    (out / "env").mkdir(parents=True, exist_ok=True)
    (out / "env" / f"{name}.env").write_text(env_file_text(env))
    svc = service_dict(plan, env_file=f"env/{name}.env")
    svc.pop("build", None)
    return svc


def litellm_config(plans: list) -> dict:
    """LiteLLM proxy model_list: route by served model name to each service on the compose network."""
    return {"model_list": [{
        "model_name": _g(p, "served_model_name") or _g(p, "name"),
        "litellm_params": {"model": f"hosted_vllm/{_g(p, 'served_model_name') or _g(p, 'name')}",
                           "api_base": f"http://{_g(p, 'name')}:{_g(p, 'container_port', 8000)}/v1"},
    } for p in plans]}


def render_stack(stack_name: str, plans: list, out_dir: str | Path, *, front_door: Any = None,
                 images: dict[str, str] | None = None) -> Path:
    """Write compose.yaml (+ litellm-config.yaml, plans/<name>.json) into out_dir; return the compose file."""
    out = Path(out_dir)
    (out / "plans").mkdir(parents=True, exist_ok=True)
    services: dict[str, Any] = {}
    for p in plans:
        svc = stack_service(p, out) if hasattr(p, "model_dump") else service(p)
        if (images or {}).get(_g(p, "name")):
            svc["image"] = images[_g(p, "name")]
        services[_g(p, "name")] = svc
        data = p.model_dump(mode="json") if hasattr(p, "model_dump") else p
        (out / "plans" / f"{_g(p, 'name')}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if front_door is not None and _g(front_door, "enabled", True):
        (out / LITELLM_CONFIG).write_text(yaml.safe_dump(litellm_config(plans), sort_keys=False))
        services["front-door"] = {
            "image": _g(front_door, "image"),
            "command": ["--config", "/app/config.yaml", "--port", "4000"],
            # LiteLLM refuses to start without a master key (it would accept every request);
            # clients send it as their bearer token. From the operator's environment, never written.
            "environment": {"LITELLM_MASTER_KEY": MASTER_KEY_REF},
            "volumes": [f"./{LITELLM_CONFIG}:/app/config.yaml:ro"],
            "ports": [f"127.0.0.1:{_g(front_door, 'port', 4000)}:4000"],
            "depends_on": sorted(services),
            "restart": "unless-stopped",
        }
    doc = {"name": stack_name, "services": services}
    f = out / "compose.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False, width=200))
    return f


def multinode_env(node_rank: int, ifname: str) -> dict[str, str]:
    return {"HCCL_SOCKET_IFNAME": ifname, "GLOO_SOCKET_IFNAME": ifname, "TP_SOCKET_IFNAME": ifname,
            "HCCL_IF_IP": "${NODE_IP:?set NODE_IP to this node's IP on " + ifname + "}",
            "DEPLOYKIT_NODE_RANK": str(node_rank)}


def render_multinode(plan: Any, out_dir: str | Path, nodes: int, *, ifname: str = "eth0",
                     head_address: str = "${HEAD_IP:?set HEAD_IP}") -> list[Path]:
    """compose.node<N>.yaml per node: host networking, Ray head on node 0, workers join it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    argv = list(_g(plan, "argv", []))
    for rank in range(nodes):
        svc = service(plan)
        svc.pop("ports", None)
        svc["network_mode"] = "host"
        svc["environment"].update(multinode_env(rank, ifname))
        svc["volumes"] = svc.get("volumes", []) + ["/usr/local/sbin/hccn_tool:/usr/local/sbin/hccn_tool:ro"]
        svc["entrypoint"] = ["bash", "-c"]
        if rank == 0:
            svc["command"] = ["ray start --head --port=6379 && sleep infinity"]
        else:
            svc["command"] = [f"ray start --address={head_address}:6379 --block"]
        svc["labels"]["deploykit.node_rank"] = str(rank)
        svc["labels"]["deploykit.vllm_argv"] = json.dumps(argv + ["--distributed-executor-backend", "ray", "--pipeline-parallel-size", str(nodes)])
        f = out / f"compose.node{rank}.yaml"
        f.write_text(yaml.safe_dump({"name": f"{_g(plan, 'name')}-node{rank}",
                                     "services": {_g(plan, "name"): svc}}, sort_keys=False, width=200))
        files.append(f)
    serve = " ".join(argv + ["--distributed-executor-backend", "ray", "--pipeline-parallel-size", str(nodes)])
    (out / "README.md").write_text(
        f"# {_g(plan, 'name')} on {nodes} nodes (docker compose, host network)\n\n"
        "Start in this order:\n\n"
        "1. Head (node 0): `NODE_IP=<this node ip> docker compose -f compose.node0.yaml up -d` "
        "(runs `ray start --head --port=6379`).\n"
        "2. Each worker N: `NODE_IP=<its ip> HEAD_IP=<head ip> docker compose -f compose.nodeN.yaml up -d` "
        "(runs `ray start --address=$HEAD_IP:6379 --block`).\n"
        "3. Check `ray status` on the head shows every node's NPUs, then start vLLM on the head:\n\n"
        f"   `docker compose -f compose.node0.yaml exec {_g(plan, 'name')} {serve}`\n\n"
        f"HCCL_IF_IP/HCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME are set per node (interface `{ifname}`).\n")
    return files
