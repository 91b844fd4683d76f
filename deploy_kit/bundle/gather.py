"""What goes into a bundle of a card or a stack: plans, staged images and files, weights, wheels."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import BadInput, Infeasible
from .fmt import FORMAT, host_arch
from .write import Content, DirPart, ImagePart

Say = Callable[[str], None]
_WEIGHTS_SKIP = (".cache/", ".deploykit.json.tmp")


def is_stack_file(what: str) -> bool:
    """A stack file (compose/*.yaml: top-level `deployments`) rather than a card name or card file."""
    p = Path(what)
    if p.suffix not in (".yaml", ".yml") or not p.is_file():
        return False
    from ..cardload import load_yaml_with_lines

    doc, _ = load_yaml_with_lines(p)  # bounded in size, depth and aliases; a bad file is exit 2
    return isinstance(doc, dict) and "deployments" in doc


def make_plans(what: str, target: str | None, sets: list[str] | None) -> tuple[list[Any], str, bool]:
    """(plans, target, front door?). Ports are not probed: a bundle is made here and run elsewhere."""
    if is_stack_file(what):
        from ..stack.stackfile import apply_sets, load_stack, plan_stack

        stack = apply_sets(load_stack(what), sets)
        if target and target != stack.host.target:
            raise BadInput(f"the stack runs on {stack.host.target}, not {target}", field="--target")
        door = bool(stack.front_door and stack.front_door.enabled)
        return plan_stack(stack, source=what), stack.host.target, door
    from ..planner import plan
    from ..targets import DEFAULT_TARGET

    p = plan(what, target=target or DEFAULT_TARGET, sets=list(sets or []), port_probe=None)
    return [p], p.target, False


def front_door_ref(say: Say, *, dry_run: bool = False) -> str:
    """The stack front door's (LiteLLM) content tag on this host; built when bundling if missing."""
    import tempfile

    from ..operate.frontdoor import ensure_image

    with tempfile.TemporaryDirectory(prefix="deploykit-door-") as ctx:
        return ensure_image(Path(ctx), say, dry_run=dry_run)


def stage_plan(plan: Any, say: Say) -> tuple[Path, str, str]:
    """(rendered dir, image ref, image id) from the runtime's public staging (builds if missing)."""
    from ..runtime.deploy import stage

    st = stage(plan, say)
    return Path(st.rendered), st.image, st.image_id


def weights_part(plan: Any, say: Say) -> DirPart:
    """The cache directory at its locked revision, refusing a cache that contradicts the card."""
    from ..runtime.stage import ensure_weights
    from ..weights.pull import read_manifest

    w = plan.weights
    if w.source == "local":
        raise BadInput(f"{plan.card_name}: weights come from a local path ({w.host_path}); a bundle carries "
                       "cached weights only", field="model.source", hint="copy that folder yourself")
    d = Path(ensure_weights(plan, say))
    man = read_manifest(d)
    if man and w.revision and w.revision not in (man.get("commit"), man.get("requested_revision")):
        raise Infeasible(f"{plan.card_name}: the cache does not hold the pinned revision",
                         reasons=[f"card pins {w.revision}, cache {d} holds {man.get('commit')}"],
                         hint=f"run `deploykit pull {plan.card_name}` first")
    synth = None if man else {"name": plan.card_name, "source": w.source, "repo": w.id,
                              "requested_revision": w.revision, "commit": None,
                              "bundled_from": str(d)}
    return DirPart(prefix=f"weights/{plan.card_name}", path=d, label=f"weights {plan.card_name}",
                   skip=lambda rel: rel.startswith(_WEIGHTS_SKIP) or rel.endswith(".lock"),
                   synth_manifest=synth)


def _rendered_skip(rel: str) -> bool:
    return rel.startswith(".")  # the build context (wheel copies) is not part of what was rendered


def gather(what: str, *, target: str | None, sets: list[str] | None, workdir: Path, say: Say,
           wheels: Callable[[Path, str], list[Path]] | None) -> Content:
    """Everything for ``what`` (a card name/file or a stack file); images built if missing."""
    plans, target_name, door = make_plans(what, target, sets)
    content = Content(head={})
    by_id: dict[str, ImagePart] = {}
    deployments, cards = [], {}
    from .images import image_part

    for plan in plans:
        rendered, ref, image_id = stage_plan(plan, say)
        if image_id not in by_id:
            by_id[image_id] = image_part(len(by_id), ref)
            content.images.append(by_id[image_id])
        content.dirs.append(DirPart(prefix=f"rendered/{plan.name}", path=rendered,
                                    label=f"rendered {plan.name}", skip=_rendered_skip))
        if plan.card_name not in cards:
            content.dirs.append(weights_part(plan, say))
            content.files.append((f"cards/{plan.card_name}.yaml", Path(plan.card_path)))
            cards[plan.card_name] = plan.card_digest
        deployments.append({"name": plan.name, "card": plan.card_name, "target": plan.target,
                            "port": plan.port, "image": by_id[image_id].index, "image_ref": ref,
                            "served_model_name": plan.served_model_name, "plan_image": plan.image})
    front_door = None
    if door:
        ref = front_door_ref(say)
        part = image_part(len(content.images), ref)
        content.images.append(part)
        front_door = {"image": part.index, "image_ref": ref}
    wheel_info: dict[str, Any] = {"included": False}
    if wheels is not None:
        arch = content.images[0].architecture if content.images else host_arch()
        wdir = workdir / "wheels"
        wdir.mkdir(parents=True, exist_ok=True)
        found = wheels(wdir, arch)
        content.dirs.append(DirPart(prefix="wheels", path=wdir, label="wheels"))
        wheel_info = {"included": True, "count": len(found), "architecture": arch,
                      "install": "tar -xf BUNDLE.tar wheels && pip install --no-index --find-links wheels "
                                 "'deploykit[docker]'"}
    content.head = {
        "format": FORMAT, "kind": "stack" if is_stack_file(what) else "card", "deploykit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_on": {"architecture": host_arch(), "python": platform.python_version()},
        "source": what if not Path(what).is_file() else Path(what).name, "target": target_name,
        "sets": list(sets or []), "images": [i.head() for i in content.images],
        "cards": cards, "deployments": deployments, "front_door": front_door, "wheels": wheel_info,
    }
    return content
