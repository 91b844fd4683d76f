"""One compose project for a whole stack (one service per deployment) plus a LiteLLM front door.

Each service maps only its own /dev/davinciN and leaves ASCEND_RT_VISIBLE_DEVICES unset (the
planner's rule), so the process sees exactly its NPUs as 0..n-1. Multi-node: one file per node.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from .. import composefile
from ..errors import BadInput
from ..planner import Plan


def stack_service(plan: Plan, out: Path, image: str | None = None) -> dict:
    """The one compose service, its env in env/<name>.env and its own build context build/<name>/,
    so a plain `docker compose up` of the stack dir builds what `deploykit stack up` would run."""
    from ..render import env_file_text, render_files
    from ..runtime.context import add_build_inputs

    (out / "env").mkdir(parents=True, exist_ok=True)
    (out / "env" / f"{plan.name}.env").write_text(env_file_text(composefile.service_env(plan)))
    ctx = out / "build" / plan.name
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / composefile.DOCKERFILE).write_text(render_files(plan)["Dockerfile"])
    add_build_inputs(ctx)
    return composefile.service(plan, env_file=f"env/{plan.name}.env", build_context=f"./build/{plan.name}",
                               image=image)


def render_stack(stack_name: str, plans: list[Plan], out_dir: str | Path, *, front_door: Any = None,
                 images: dict[str, str] | None = None, observability: Any = None) -> Path:
    """Write compose.yaml (+ litellm-config.yaml, plans/<name>.json) into out_dir; return the compose file."""
    out = Path(out_dir)
    (out / "plans").mkdir(parents=True, exist_ok=True)
    services: dict[str, Any] = {}
    for p in plans:
        services[p.name] = stack_service(p, out, (images or {}).get(p.name))
        (out / "plans" / f"{p.name}.json").write_text(json.dumps(p.model_dump(mode="json"), indent=2,
                                                                 sort_keys=True) + "\n")
    # front door, Prometheus, Grafana: deploy_kit/operate/companions.py (files + services)
    from ..operate.companions import stack_companions

    services.update(stack_companions(plans, out, front_door=front_door, observability=observability))
    doc = {"name": stack_name, "services": services}
    f = out / "compose.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False, width=200))
    return f


def multinode_env(ifname: str) -> dict[str, str]:
    """Per-node variables of upstream's tutorials/features/ray.md; NODE_IP/HEAD_IP come from the
    operator's shell at `docker compose up` (Compose interpolation), never written here."""
    from .k8s import NOSET

    return {"HCCL_IF_IP": "${NODE_IP:?set NODE_IP to this node's IP on " + ifname + "}",
            "GLOO_SOCKET_IFNAME": ifname, "TP_SOCKET_IFNAME": ifname,
            "HCCL_SOCKET_IFNAME": ifname,  # upstream's multi-node model tutorials set it beside the others
            NOSET: "1"}


def render_multinode(plan: Plan, out_dir: str | Path, nodes: int, *, ifname: str = "eth0",
                     force: bool = False) -> list[Path]:
    """Write multinode_files into out_dir through render.write_tree (a directory holding files
    deploykit did not write is refused, exit 2); returns the compose files (README.md is written too)."""
    from ..render import write_tree

    written = write_tree(out_dir, multinode_files(plan, nodes, ifname=ifname), force=force)
    return [f for f in written if f.suffix == ".yaml"]


def multinode_files(plan: Plan, nodes: int, *, ifname: str = "eth0") -> dict[str, str]:
    """compose.node<N>.yaml per node (+ README.md), nothing written: host networking, upstream image;
    the head (node 0) starts Ray, waits for every node, then vLLM; workers join with their own IP."""
    from .k8s import HCCN_TOOL, leader_script, ray_argv, worker_script

    if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,15}", ifname):
        raise BadInput(f"--ifname {ifname!r} is not a network interface name", field="--ifname",
                       hint="see `ip addr` on each node")
    files: dict[str, str] = {}
    for rank in range(nodes):
        svc = composefile.service(plan, env_file=None, build_context=None, image=plan.base_image, publish=False)
        if rank:
            svc.pop("healthcheck", None)  # workers run only Ray: nothing answers /health there
        svc["network_mode"] = "host"
        svc["environment"].update(multinode_env(ifname))
        svc["volumes"] = svc.get("volumes", []) + [f"{HCCN_TOOL}:{HCCN_TOOL}:ro"]
        svc["entrypoint"] = ["bash", "-c"]
        if rank == 0:
            script = leader_script(plan, nodes, "HCCL_IF_IP")
        else:
            svc["environment"]["HEAD_IP"] = "${HEAD_IP:?set HEAD_IP to the head node's IP}"
            script = worker_script("HEAD_IP", "HCCL_IF_IP")
        svc["command"] = [composefile.escape(script)]  # $VAR reaches the shell, not Compose
        svc["labels"][composefile.label("node_rank")] = str(rank)
        files[f"compose.node{rank}.yaml"] = yaml.safe_dump(
            {"name": f"{plan.name}-node{rank}", "services": {plan.name: svc}}, sort_keys=False, width=200)
    files["README.md"] = _multinode_readme(plan, nodes, ifname, shlex.join(ray_argv(plan, nodes)))
    return files


def _multinode_readme(plan: Plan, nodes: int, ifname: str, serve: str) -> str:
    return (
        f"# {plan.name} on {nodes} nodes (docker compose, host network, image {plan.base_image})\n\n"
        "Find each node's NIC and IP with `ip addr` (upstream tutorials/features/ray.md), then:\n\n"
        "1. Head (node 0): `NODE_IP=<this node ip> docker compose -f compose.node0.yaml up -d`: "
        "starts `ray start --head`, waits until every node joined, then runs vLLM.\n"
        "2. Each worker N: `NODE_IP=<its ip> HEAD_IP=<head ip> docker compose -f compose.nodeN.yaml up -d`: "
        "`ray start --address=$HEAD_IP:6379 --node-ip-address=$NODE_IP --block`.\n"
        "3. `ray status` on the head lists every node's NPUs; vLLM then serves:\n\n"
        f"   `{serve}`\n\n"
        f"HCCL_IF_IP = NODE_IP; GLOO/TP/HCCL_SOCKET_IFNAME = `{ifname}` (--ifname); "
        "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES=1.\n")
