"""`stack up` starts its deployments side by side (operate.stackops.up_all) and one image build
per build context at a time (runtime.stage's build lock)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from deploy_kit.errors import RuntimeFailure
from deploy_kit.operate import stackops

pytestmark = pytest.mark.unit


def _plans(*names: str) -> list:
    return [SimpleNamespace(name=n) for n in names]


def test_deployments_of_a_stack_start_side_by_side(monkeypatch):
    """Three 1 s starts take ~1 s together (measured 1.01 s quiet, 1.6 s at load 15), not 3 s."""
    started: list[str] = []

    def fake_up(name, target, *, plan, dry_run=False, say=print):
        started.append(name)
        time.sleep(1.0)

    monkeypatch.setattr("deploy_kit.runtime.deploy.up", fake_up)
    t0 = time.monotonic()
    stackops.up_all(_plans("a", "b", "c"), "cpu", lambda s: None)
    assert time.monotonic() - t0 < 2.5
    assert sorted(started) == ["a", "b", "c"]


def test_every_failure_is_said_and_the_first_is_raised_after_all_finished(monkeypatch):
    finished: list[str] = []

    def fake_up(name, target, *, plan, dry_run=False, say=print):
        if name in ("b", "c"):
            raise RuntimeFailure(f"{name} exited (code 1)")
        time.sleep(0.3)
        finished.append(name)

    monkeypatch.setattr("deploy_kit.runtime.deploy.up", fake_up)
    said: list[str] = []
    with pytest.raises(RuntimeFailure, match=r"^b exited \(code 1\)$"):
        stackops.up_all(_plans("a", "b", "c"), "cpu", said.append)
    assert finished == ["a"]  # the healthy one was waited for, not abandoned
    assert said == ["b: failed: b exited (code 1)", "c: failed: c exited (code 1)"]


def test_a_dry_run_stays_in_order_and_in_this_thread(monkeypatch):
    seen: list[tuple[str, bool, str]] = []

    def fake_up(name, target, *, plan, dry_run=False, say=print):
        seen.append((name, dry_run, threading.current_thread().name))

    monkeypatch.setattr("deploy_kit.runtime.deploy.up", fake_up)
    stackops.up_all(_plans("a", "b"), "cpu", lambda s: None, dry_run=True)
    assert seen == [("a", True, "MainThread"), ("b", True, "MainThread")]


def test_one_build_per_context_at_a_time(monkeypatch, tmp_path):
    """Two stagings of the same context at once: the second waits for the first's build and
    reuses its image instead of building it again."""
    from deploy_kit.planner import plan
    from deploy_kit.runtime import dockerapi, stage

    monkeypatch.setenv("DEPLOYKIT_STATE", str(tmp_path / "state"))
    images: dict[str, str] = {}
    builds: list[str] = []

    def build(ctx, ref, args, on_line=None):
        builds.append(ref)
        time.sleep(0.3)
        images[ref] = "sha256:built"
        return "sha256:built"

    monkeypatch.setattr(dockerapi, "image_exists", lambda ref: images.get(ref))
    monkeypatch.setattr(dockerapi, "build", build)
    monkeypatch.setattr(dockerapi, "tag", lambda image_id, ref: None)
    p = plan("smollm2-135m-instruct", target="cpu", port_probe=None)
    out: list[tuple] = []

    def one(i: int) -> None:
        rendered = stage.render_plan(p, tmp_path / f"r{i}")
        out.append(stage.ensure_image(p, rendered, lambda s: None, ctx_dir=tmp_path / f"ctx{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert sorted(built for *_, built in out) == [False, True]
    assert {image_id for _, image_id, *_ in out} == {"sha256:built"}


def _stack(image: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(name="pair", host=SimpleNamespace(target="cpu"),
                           front_door=SimpleNamespace(enabled=True, image=image, port=4000), observability=None)


def test_front_door_image_builds_while_the_deployments_start(monkeypatch):
    """The build and the starts overlap (each 1 s: ~1 s together, measured 1.01 s), and the
    companions start with the image that build made, after every deployment is up."""
    events: list[str] = []

    def fake_up(name, target, *, plan, dry_run=False, say=print):
        time.sleep(1.0)
        events.append(f"up {name}")

    def fake_build(ctx, say):
        time.sleep(1.0)
        events.append("built")
        return "deploykit/litellm:ctx-1"

    def fake_start(stack, plans, say, *, dry_run=False, image=None):
        events.append(f"start {image}")
        return {"front-door": "http://127.0.0.1:4000"}

    monkeypatch.setattr("deploy_kit.runtime.deploy.up", fake_up)
    monkeypatch.setattr(stackops.frontdoor, "ensure_image", fake_build)
    monkeypatch.setattr(stackops, "start", fake_start)
    t0 = time.monotonic()
    urls = stackops.up(_stack(), _plans("a", "b"), lambda s: None)
    assert time.monotonic() - t0 < 1.8
    assert sorted(events[:3]) == ["built", "up a", "up b"] and events[3] == "start deploykit/litellm:ctx-1"
    assert urls == {"front-door": "http://127.0.0.1:4000"}


def test_a_failed_deployment_waits_for_the_build_and_starts_no_companion(monkeypatch):
    events: list[str] = []

    def fake_up(name, target, *, plan, dry_run=False, say=print):
        raise RuntimeFailure(f"{name} exited (code 1)")

    def fake_build(ctx, say):
        time.sleep(0.3)
        events.append("built")
        return "deploykit/litellm:ctx-1"

    monkeypatch.setattr("deploy_kit.runtime.deploy.up", fake_up)
    monkeypatch.setattr(stackops.frontdoor, "ensure_image", fake_build)
    monkeypatch.setattr(stackops, "start", lambda *a, **k: events.append("start"))
    with pytest.raises(RuntimeFailure, match=r"^a exited \(code 1\)$"):
        stackops.up(_stack(), _plans("a", "b"), lambda s: None)
    assert events == ["built"]


def test_a_given_front_door_image_is_not_built(monkeypatch):
    seen: list = []
    monkeypatch.setattr("deploy_kit.runtime.deploy.up", lambda *a, **k: None)
    monkeypatch.setattr(stackops.frontdoor, "ensure_image", lambda *a: seen.append("built"))
    monkeypatch.setattr(stackops, "start", lambda stack, plans, say, *, dry_run=False, image="":
                        seen.append(("start", image)) or {})
    stackops.up(_stack(image="registry.local/litellm:1"), _plans("a", "b"), lambda s: None)
    assert seen == [("start", "registry.local/litellm:1")]
