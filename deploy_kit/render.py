"""Renderers: Plan -> Dockerfile, model.env, compose.yaml, plan.json, README.md.

Every renderer reads only the Plan. Text files come from jinja2 templates in a
SandboxedEnvironment with StrictUndefined (a missing value is an error, never an empty string);
compose.yaml is built as a Python dict and dumped with yaml.safe_dump, so it is valid YAML by
construction and parses back to exactly what the plan says.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path

from . import __version__
from .cardload import read_text_bounded
from .envcheck import env_key_problem
from .errors import BadInput, DeployKitError, RuntimeFailure
from .paths import data_dir
from .planner import Plan

FILES = ("Dockerfile", "model.env", "compose.yaml", "plan.json", "README.md")
# What a render wrote, with sha256 of each file: the only files a later render may replace.
MANIFEST = ".deploykit-render.json"
TMP_PREFIX = ".deploykit-tmp-"
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:,=+@%-]*$")
# What could end or split a line for some reader of model.env (C0/C1 controls, Unicode separators).
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


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


def render_template(name: str, **values: object) -> str:
    """A template of templates/ or images/ that is not a Plan's (the front door's Dockerfile),
    through the same sandboxed environment."""
    return str(_env().get_template(name).render(**values))


# ------------------------------------------------------------------ model.env

def env_file_text(env: dict[str, str]) -> str:
    """KEY=value lines. Values with characters Compose would interpret are single-quoted
    (literal in Compose v2 env files); newlines cannot be represented and are refused."""
    lines = ["# Rendered by deploykit. Secrets are never written here: they pass from your environment."]
    for key in sorted(env):
        problem = env_key_problem(key)  # plan.json may come from elsewhere (a bundle, a state record)
        if problem:
            raise BadInput(problem, field=f"env.{key}")
        val = str(env[key])
        if "'" in val or _LINE_BREAKING.search(val):
            raise BadInput(f"env value of {key} contains a control character, a line separator or a single quote",
                           field=f"env.{key}")
        lines.append(f"{key}={val}" if _SAFE_ENV_VALUE.match(val) else f"{key}='{val}'")
    return "\n".join(lines) + "\n"


def parse_env_file(text: str) -> dict[str, str]:
    out = {}
    for line in text.split("\n"):  # str.splitlines would also split at \x1c-\x1e, \x85, \u2028
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, val = line.partition("=")
        if len(val) >= 2 and val[0] == val[-1] == "'":
            val = val[1:-1]
        out[key] = val
    return out


# ------------------------------------------------------------------ compose
# The compose contract lives in composefile.py (one project name, one service builder, one label
# namespace); these names stay importable from here.
from . import composefile  # noqa: E402
from .composefile import compose_dict, compose_text  # noqa: E402,F401
from .composefile import service as service_dict  # noqa: E402,F401


def project_name(plan: Plan) -> str:
    return composefile.project_name(plan.name)


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

# Values the Dockerfile templates write unquoted: one token each, so no value (a registry mirror from
# the environment, a target profile) can add a line (a RUN) or an argument to the Dockerfile.
_DOCKERFILE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,255}")


def check_dockerfile_values(plan: Plan) -> None:
    for what, value in (("base image", plan.base_image), ("image", plan.image), ("target", plan.target),
                        ("name", plan.name)):
        if not _DOCKERFILE_TOKEN.fullmatch(value):
            raise BadInput(f"{what} {value!r} is not a single token (letters, digits, ._/:@+-)",
                           hint="check DEPLOYKIT_REGISTRY_MIRROR and the target profile" if "image" in what else None)


def render_files(plan: Plan) -> dict[str, str]:
    check_dockerfile_values(plan)
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


# ------------------------------------------------------------------ the output directory

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _read_manifest(out: Path) -> dict[str, str | None] | None:
    """{file name: sha256} of an earlier render, or None when ``out`` holds no readable manifest."""
    path = out / MANIFEST
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(read_text_bounded(path, limit=1 << 16))
        files = data["files"]
    except (BadInput, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not all(_plain_name(k) and isinstance(v, str) for k, v in files.items()):
        return None
    return dict(files)


def _legacy_render(out: Path, entries: list[str]) -> dict[str, str | None] | None:
    """A render from before manifests: only deploykit's file names, and a plan.json deploykit wrote."""
    if not set(entries) <= set(FILES) or "plan.json" not in entries:
        return None
    try:
        plan = json.loads(read_text_bounded(out / "plan.json", limit=1 << 20))
    except (BadInput, ValueError):
        return None
    return {name: None for name in entries} if isinstance(plan, dict) and "deploykit_version" in plan else None


def check_out_dir(out: Path, force: bool = False) -> dict[str, str | None]:
    """The files of an earlier render that a new render into ``out`` may replace ({name: recorded
    sha256, None for a render without a manifest}); BadInput (exit 2) when ``out`` holds anything
    deploykit did not write. --force only allows replacing deploykit's own files edited since."""
    if out.is_symlink():
        raise BadInput(f"{out} is a symbolic link: give the directory it points to", field="--out")
    if not out.exists():
        return {}
    if not out.is_dir():
        raise BadInput(f"{out} exists and is not a directory", field="--out")
    try:
        entries = sorted(os.listdir(out))
    except OSError as exc:
        raise BadInput(f"cannot read {out}: {exc.strerror or exc}", field="--out") from None
    if not entries:
        return {}
    recorded = _read_manifest(out) or _legacy_render(out, entries)
    if recorded is None:
        raise BadInput(f"{out} is not empty and holds no deploykit render ({len(entries)} entries)",
                       field="--out", hint="choose a new or empty directory; --force never deletes "
                                           "files deploykit did not write")
    foreign = [e for e in entries if e != MANIFEST and (e not in recorded or not _regular(out / e))]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise BadInput(f"{out} holds files deploykit did not write: {shown}", field="--out",
                       hint="move them away or choose another directory; --force does not delete them")
    edited = [n for n, h in recorded.items() if h and _regular(out / n) and _sha256((out / n).read_bytes()) != h]
    if edited and not force:
        raise BadInput(f"{', '.join(edited)} in {out} changed since deploykit wrote them",
                       field="--out", hint="pass --force to replace them")
    return recorded


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_all(tmp: Path, files: dict[str, str], manifest: dict) -> None:
    for name, text in files.items():
        with open(tmp / name, "x", encoding="utf-8") as fh:
            fh.write(text)
    with open(tmp / MANIFEST, "x", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _os_failure(exc: OSError, out: Path) -> DeployKitError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RuntimeFailure(f"cannot write {out}: {reason}", field="--out",
                              hint="free some space; an earlier render there is unchanged")
    return BadInput(f"cannot write {out}: {reason}", field="--out",
                    hint="an earlier render there is unchanged")


def write_tree(out: Path | str, files: dict[str, str], *, force: bool = False) -> list[Path]:
    """Write ``files`` into ``out`` and record them (with sha256) in its manifest.

    A new directory appears whole (written aside, then renamed). An earlier render is replaced file
    by file with os.replace after every new file is on disk, and files it had that this one lacks
    are removed; nothing else is ever deleted (check_out_dir). A failure leaves the earlier render
    as it was and no temporary directory behind."""
    out = Path(out).absolute()
    recorded = check_out_dir(out, force)
    manifest = {"deploykit_version": __version__,
                "files": {name: _sha256(text.encode("utf-8")) for name, text in files.items()}}
    tmp: Path | None = None
    try:
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out.parent))
            _write_all(tmp, files, manifest)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the render is an ordinary directory
            os.rename(tmp, out)  # atomic: the directory appears with every file in it
        else:
            tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out))
            _write_all(tmp, files, manifest)
            for name in files:
                os.replace(tmp / name, out / name)
            os.replace(tmp / MANIFEST, out / MANIFEST)
            for name in set(recorded) - set(files):
                (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise _os_failure(exc, out) from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # our own temporary directory, nothing else
    return [out / name for name in files]


def render(plan: Plan, out_dir: Path | str, *, force: bool = False) -> list[Path]:
    """Render every file (all templates first: nothing touches the disk if one fails), then write
    them with write_tree. Returns the paths of the rendered files (not the manifest)."""
    check_out_dir(Path(out_dir).absolute(), force)  # refuse before the work of rendering
    return write_tree(out_dir, render_files(plan), force=force)
