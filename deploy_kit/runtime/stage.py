"""Stage a deployment: render the Plan, build (or reuse) its content-addressed image, fetch weights.

``stage(plan, say)`` is public: `up` runs it, and bundles (deploy_kit.bundle) build on it. It never
touches what runs: it renders into ``<run dir>/rendered.next`` (or a temporary dir for a dry run).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BadInput, RuntimeFailure
from ..planner import Plan
from . import context, state

Say = Callable[[str], None]
COMPOSE_FILE = "compose.yaml"


@dataclass
class Staged:
    """What one `up` would run: the rendered files and the image built from them."""

    rendered: Path        # directory holding Dockerfile, model.env, compose.yaml, plan.json, README.md
    image: str            # content-addressed tag (repo:ctx-<hash>)
    image_id: str         # "" in a dry run
    context_hash: str
    built: bool = False
    plan_hash: str = ""   # rendered files + image id: unchanged hash => nothing to do

    @property
    def compose_file(self) -> Path:
        return self.rendered / COMPOSE_FILE


def render_plan(plan: Plan, out_dir: Path) -> Path:
    from ..render import render

    if out_dir.exists():
        shutil.rmtree(out_dir)  # no stale files from an earlier render
    out_dir.mkdir(parents=True, exist_ok=True)
    render(plan, out_dir)
    return out_dir


def ensure_image(plan: Plan, rendered: Path, say: Say, dry_run: bool = False,
                 ctx_dir: Path | None = None) -> tuple[str, str, str, bool]:
    """(content tag, image id, context hash, built?): builds only when the context changed."""
    from . import dockerapi

    ctx = context.prepare_context(rendered, ctx_dir)
    digest = context.context_hash(ctx)
    ref = context.content_tag(context.image_repo(plan.image), digest)
    if dry_run:
        return ref, "", digest, False
    image_id = dockerapi.image_exists(ref)
    built = False
    if image_id is None:
        with _build_lock(digest):
            image_id = dockerapi.image_exists(ref)  # a concurrent `up` (a stack's other deployment) built it
            if image_id is None:
                say(f"building image {ref} (context {digest[:12]})")
                t0 = time.monotonic()
                image_id = dockerapi.build(ctx, ref, context.build_args(),
                                           on_line=lambda ln: say("  " + ln) if ln.startswith("Step") else None)
                built = True
                say(f"built {ref} in {time.monotonic() - t0:.0f} s")
    if plan.image != ref:
        dockerapi.tag(image_id, plan.image)  # a plain `docker compose up` of the render finds it
    return ref, image_id, digest, built


def _build_lock(digest: str):
    """One build per build context at a time, across threads and processes (deployments of a stack
    start side by side and usually share one image): the second waits, then finds it built."""
    from filelock import FileLock

    from ..paths import state_dir

    locks = state_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"build-{digest[:16]}.lock"))


def pin_compose_image(rendered: Path, ref: str) -> None:
    """Point the service at the content-addressed tag just built.

    The renderer cannot know the build-context hash; pinning the exact tag means a later build for
    another deployment can never change what this one runs."""
    import yaml

    f = rendered / COMPOSE_FILE
    head = "".join(ln for ln in f.read_text().splitlines(keepends=True) if ln.startswith("#"))
    doc = yaml.safe_load(f.read_text()) or {}
    for svc in (doc.get("services") or {}).values():
        svc["image"] = ref
    f.write_text(head + yaml.safe_dump(doc, sort_keys=False, width=1000))


def rendered_hash(rendered: Path, image_id: str) -> str:
    """What defines a running deployment: rendered runtime files + the image they run."""
    h = hashlib.sha256(image_id.encode())
    for name in sorted(p.name for p in rendered.iterdir() if p.is_file() and p.name != "README.md"):
        h.update(name.encode() + b"\0" + (rendered / name).read_bytes())
    return h.hexdigest()


def stage(plan: Plan, say: Say, *, dry_run: bool = False) -> Staged:
    """Render and build for ``plan`` without touching what runs.

    Dry run: renders into a temporary dir (the caller removes ``staged.rendered``) and builds nothing."""
    if dry_run:
        rendered = render_plan(plan, Path(tempfile.mkdtemp(prefix="deploykit-dry-")))
        ref, _, digest, _ = ensure_image(plan, rendered, say, dry_run=True)
        return Staged(rendered, ref, "", digest)
    run = state.run_dir(plan.name)
    rendered = render_plan(plan, run / "rendered.next")
    ref, image_id, digest, built = ensure_image(plan, rendered, say, ctx_dir=run / "build-context")
    pin_compose_image(rendered, ref)
    return Staged(rendered, ref, image_id, digest, built, rendered_hash(rendered, image_id))


# ---------------------------------------------------------------- weights

def weights_spec(plan: Plan):
    """The pull request for the plan's weights (from the Plan alone: the card is not reloaded)."""
    from ..weights.spec import WeightSpec

    w = plan.weights
    return WeightSpec(name=plan.card_name, source=w.source, repo_id=w.id, revision=w.revision,
                      trust_remote_code=w.trust_remote_code, weights_format=w.weights_format,
                      path=w.host_path if w.source == "local" else None, gguf_package=w.gguf_package,
                      gguf_file=w.gguf_file, expected=dict(w.expected))


def ensure_weights(plan: Plan, say: Say) -> Path:
    """Make the weights the plan mounts exist on the host (gguf demo conversion or `pull`)."""
    w = plan.weights
    dest = Path(w.host_path)
    if w.source == "local":
        if not dest.exists():
            raise BadInput(f"local weights not found: {dest}", field="model.path")
        return dest
    if _present(plan, dest):
        return dest
    from ..weights.pull import pull

    say(f"fetching weights for {plan.card_name} ({w.source} {w.id})")
    pull(weights_spec(plan), cache=dest.parent, log=say)
    if not _present(plan, dest):
        raise RuntimeFailure(f"weights missing at {dest} after pull", hint=f"run `deploykit pull {plan.card_name}`")
    return dest


def _present(plan: Plan, dest: Path) -> bool:
    """Weights already there: a converted gguf checkpoint is checked; a hub download counts only when
    `deploykit pull` finished and recorded it (an interrupted download is never mounted)."""
    if plan.weights.source == "gguf":
        from ..weights.gguf_convert import is_valid_checkpoint

        return is_valid_checkpoint(dest, plan.weights.gguf_package, plan.weights.gguf_file)
    from ..weights.manifest import is_complete

    return is_complete(dest)
