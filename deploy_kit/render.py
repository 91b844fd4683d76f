"""Renderers: Plan -> Dockerfile, model.env, compose.yaml, plan.json, README.md.

Every renderer reads only the Plan. Text files come from jinja2 templates in a
SandboxedEnvironment with StrictUndefined (a missing value is an error, never an empty string);
compose.yaml is built as a Python dict and dumped with yaml.safe_dump, so it is valid YAML by
construction and parses back to exactly what the plan says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import yaml

from .errors import BadInput, DeployKitError
from .paths import data_dir
from .planner import Plan

MARKER = "plan.json"  # a directory holding it is a previous deploykit render
FILES = ("Dockerfile", "model.env", "compose.yaml", "plan.json", "README.md")
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*$")


def _env():
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=FileSystemLoader([str(data_dir("templates")), str(data_dir("images"))]),
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["shjoin"] = shlex.join
    env.filters["shquote"] = shlex.quote
    return env


# ------------------------------------------------------------------ model.env

def env_file_text(env: dict[str, str]) -> str:
    """KEY=value lines. Values with characters Compose would interpret are single-quoted
    (literal in Compose v2 env files); newlines cannot be represented and are refused."""
    lines = ["# Rendered by deploykit. Secrets are never written here: they pass from your environment."]
    for key in sorted(env):
        val = str(env[key])
        if "\n" in val or "\r" in val or "'" in val:
            raise BadInput(f"env value of {key} contains a newline or a single quote", field=f"env.{key}")
        lines.append(f"{key}={val}" if _SAFE_ENV_VALUE.match(val) else f"{key}='{val}'")
    return "\n".join(lines) + "\n"


def parse_env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, val = line.partition("=")
        if len(val) >= 2 and val[0] == val[-1] == "'":
            val = val[1:-1]
        out[key] = val
    return out


# ------------------------------------------------------------------ compose

def project_name(plan: Plan) -> str:
    return f"deploykit-{plan.name}"


def healthcheck(plan: Plan) -> dict:
    # python3 is in every vLLM image; curl is not.
    probe = (f"import urllib.request; urllib.request.urlopen("
             f"'http://127.0.0.1:{plan.container_port}/health', timeout=5)")
    return {
        "test": ["CMD", "python3", "-c", probe],
        "interval": "10s", "timeout": "10s", "retries": 3,
        "start_period": f"{plan.readiness_timeout_s}s",
    }


def service_dict(plan: Plan, *, env_file: str = "model.env", build_context: str = ".") -> dict:
    """One compose service for a plan (also used by stacks)."""
    svc: dict = {
        "image": plan.image,
        "build": {"context": build_context, "dockerfile": "Dockerfile"},
        "command": list(plan.argv),
        "env_file": [env_file],
        "ports": [f"{plan.bind_host}:{plan.port}:{plan.container_port}"],
        "volumes": [f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in plan.mounts],
        "shm_size": plan.shm_size,
        "healthcheck": healthcheck(plan),
        "restart": "no",
        "labels": {
            "org.deploykit.name": plan.name,
            "org.deploykit.card": plan.card_name,
            "org.deploykit.target": plan.target,
            "org.deploykit.devices": ",".join(map(str, plan.host_devices)),
        },
    }
    if plan.secret_env:
        # null = pass the value through from the operator's environment at `up` time.
        svc["environment"] = {k: None for k in plan.secret_env}
    if plan.device_nodes:
        svc["devices"] = [f"{d}:{d}" for d in plan.device_nodes]
    if plan.target_kind == "cuda":
        svc["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "device_ids": [str(d) for d in plan.host_devices], "capabilities": ["gpu"]}
        ]}}}
    return svc


def compose_dict(plan: Plan) -> dict:
    return {"name": project_name(plan), "services": {plan.name: service_dict(plan)}}


def compose_text(plan: Plan) -> str:
    head = ("# Rendered by deploykit from plan.json. Start: docker compose -f compose.yaml up -d\n"
            "# Weights are mounted read-only from the host cache; nothing runs privileged.\n")
    return head + yaml.safe_dump(compose_dict(plan), sort_keys=False, width=1000)


# ------------------------------------------------------------------ commands for the operator README

def docker_run_argv(plan: Plan) -> list[str]:
    argv = ["docker", "run", "--detach", "--name", plan.name, "--shm-size", plan.shm_size,
            "--publish", f"{plan.bind_host}:{plan.port}:{plan.container_port}", "--env-file", "model.env"]
    for k in plan.secret_env:
        argv += ["--env", k]
    for d in plan.device_nodes:
        argv += ["--device", d]
    if plan.target_kind == "cuda":
        argv += ["--gpus", f'"device={",".join(map(str, plan.host_devices))}"']
    for m in plan.mounts:
        argv += ["--volume", f"{m.source}:{m.target}" + (":ro" if m.read_only else "")]
    return argv + [plan.image] + list(plan.argv)


def vllm_serve_argv(plan: Plan) -> list[str]:
    """The same server as `vllm serve MODEL --flags` (what the operator would type by hand)."""
    argv = list(plan.argv)
    first = next(i for i, a in enumerate(argv) if a.startswith("--"))
    flags = argv[first:]
    i = flags.index("--model")
    model = flags[i + 1]
    del flags[i:i + 2]
    return ["vllm", "serve", model] + flags


def format_command(argv: list[str]) -> str:
    """Shell-quoted, one option (with its value) per line: for people to read and paste.

    A new line starts at every long option; docker_run_argv uses long options only, so the
    image and the container's entrypoint stay on the line of the option before them.
    """
    groups: list[list[str]] = [[]]
    for tok in argv:
        if tok.startswith("--"):
            groups.append([])
        groups[-1].append(tok)
    return " \\\n  ".join(shlex.join(g) for g in groups if g)


# ------------------------------------------------------------------ render

def render_files(plan: Plan) -> dict[str, str]:
    env = _env()
    try:
        dockerfile = env.get_template(plan.dockerfile_template).render(plan=plan)
    except Exception as exc:
        from jinja2 import TemplateNotFound, UndefinedError

        if isinstance(exc, TemplateNotFound):
            raise DeployKitError(f"Dockerfile template {plan.dockerfile_template} is missing from images/") from exc
        if isinstance(exc, UndefinedError):
            raise DeployKitError(f"template {plan.dockerfile_template}: {exc}") from exc
        raise
    readme = env.get_template("operator-README.md.j2").render(
        plan=plan, docker_run=format_command(docker_run_argv(plan)),
        vllm_serve=format_command(vllm_serve_argv(plan)),
        project=project_name(plan))
    return {
        "Dockerfile": dockerfile,
        "model.env": env_file_text(plan.env),
        "compose.yaml": compose_text(plan),
        "plan.json": json.dumps(plan.model_dump(mode="json"), indent=2, sort_keys=True) + "\n",
        "README.md": readme,
    }


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} exists and is not a directory", field="--out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise BadInput(f"--out {out} is not empty and holds no earlier deploykit render",
                       field="--out", hint="choose an empty directory or pass --force")


def render(plan: Plan, out_dir: Path | str, *, force: bool = False) -> list[Path]:
    """Write all files atomically: a failure never leaves a half-written output directory."""
    out = Path(out_dir)
    check_out_dir(out, force)
    files = render_files(plan)  # every template renders before anything touches the disk
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in files]
