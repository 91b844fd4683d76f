"""Bundles without Docker: a small fake `docker save` tar, fake weights, the real format code."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy_kit.bundle import fmt
from deploy_kit.bundle.fmt import Meter, host_arch
from deploy_kit.bundle.ops import load_bundle
from deploy_kit.bundle.read import verify_bundle
from deploy_kit.bundle.write import Content, DirPart, ImagePart, write_bundle
from deploy_kit.cli import main
from deploy_kit.errors import VerificationFailed

pytestmark = pytest.mark.unit

OTHER_ARCH = "arm64" if host_arch() != "arm64" else "amd64"
LAYER = os.urandom(70_000)
CONFIG = b'{"architecture": "amd64"}'


def fake_save_tar() -> bytes:
    """What `docker save` streams (OCI layout): blobs, index, a folder and a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo("blobs/sha256")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in ((f"blobs/sha256/{hashlib.sha256(LAYER).hexdigest()}", LAYER),
                           ("blobs/sha256/cfg", CONFIG), ("index.json", b'{"manifests": []}'),
                           ("manifest.json", b'[{"RepoTags": ["fake/img:ctx-1"]}]')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, f"blobs/sha256/{hashlib.sha256(LAYER).hexdigest()}"
        tf.addfile(link)
    return buf.getvalue()


def chunked(data: bytes, size: int = 7_777):
    """Irregular chunks, like the engine's HTTP stream."""
    return (data[i:i + size] for i in range(0, len(data), size))


def make_content(tmp: Path, arch: str | None = None, chunks=None) -> Content:
    weights = tmp / "src-cache" / "tiny"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (weights / "model.safetensors").write_bytes(os.urandom(50_000))
    (weights / ".cache").mkdir()
    (weights / ".cache" / "junk").write_text("hub client metadata: not carried")
    rendered = tmp / "rendered"
    rendered.mkdir()
    (rendered / "Dockerfile").write_text("FROM scratch\n")
    (rendered / "compose.yaml").write_text("services: {}\n")
    card = tmp / "tiny.yaml"
    card.write_text("name: tiny\n")
    data = fake_save_tar()
    img = ImagePart(0, "fake/img:ctx-1", "sha256:abc", arch or host_arch(), "linux", len(data),
                    chunks or (lambda: chunked(data)))
    head = {"format": fmt.FORMAT, "target": "cpu", "images": [img.head()], "deploykit_version": "0",
            "deployments": [{"name": "tiny", "card": "tiny", "target": "cpu", "port": 8123, "image": 0,
                             "image_ref": "fake/img:ctx-1"}]}
    return Content(head=head, images=[img], files=[("cards/tiny.yaml", card)], dirs=[
        DirPart("weights/tiny", weights, "weights", skip=lambda rel: rel.startswith(".cache/"),
                synth_manifest={"name": "tiny", "source": "gguf"}),
        DirPart("rendered/tiny", rendered, "rendered")])


@pytest.fixture()
def bundle(tmp_path) -> Path:
    out = tmp_path / "b.tar"
    write_bundle(make_content(tmp_path), out)
    return out


def member_offset(path: Path, name: str) -> int:
    with tarfile.open(path) as tf:
        return tf.getmember(name).offset_data


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def test_manifest_lists_every_member_with_size_and_sha256(bundle):
    with tarfile.open(bundle) as tf:
        names = tf.getnames()
        man = json.loads(tf.extractfile("manifest.json").read())
        layer = tf.extractfile(f"images/0/blobs/sha256/{hashlib.sha256(LAYER).hexdigest()}").read()
    assert names[0] == "bundle.json" and names[-2:] == ["manifest.json", "manifest.sha256"]
    listed = {m["name"]: m for m in man["members"]}
    assert set(listed) == set(names) - {"manifest.json", "manifest.sha256"}
    assert "weights/tiny/.cache/junk" not in listed
    assert layer == LAYER
    w = listed["weights/tiny/model.safetensors"]
    assert w["size"] == 50_000 and len(w["sha256"]) == 64
    assert listed["images/0/layer.tar"] == {"name": "images/0/layer.tar", "kind": "symlink",
                                            "link": f"blobs/sha256/{hashlib.sha256(LAYER).hexdigest()}"}


def test_load_restores_the_image_stream_weights_and_files(bundle, tmp_path):
    got = []

    def loader(stream):
        got.append(b"".join(stream))
        return ["fake/img:ctx-1"]

    tags = []
    res = load_bundle(bundle, cache=tmp_path / "cache", place_root=tmp_path / "placed", loader=loader,
                      tagger=lambda i, r: tags.append((i, r)), say=lambda s: None)
    with tarfile.open(fileobj=io.BytesIO(got[0])) as again, tarfile.open(fileobj=io.BytesIO(fake_save_tar())) as orig:
        assert again.getnames() == orig.getnames()
        for m in orig.getmembers():
            if m.isfile():
                assert again.extractfile(m.name).read() == orig.extractfile(m).read()
        assert again.getmember("layer.tar").linkname == orig.getmember("layer.tar").linkname
    w = tmp_path / "cache" / "tiny"
    man = json.loads((w / ".deploykit.json").read_text())
    files = {f["path"]: f for f in man["files"]}
    assert files["model.safetensors"]["sha256"] == hashlib.sha256((w / "model.safetensors").read_bytes()).hexdigest()
    assert man["source"] == "gguf" and set(files) == {"config.json", "model.safetensors"}
    assert (tmp_path / "placed" / "tiny" / "rendered" / "Dockerfile").read_text() == "FROM scratch\n"
    assert res.installed.cards == {"tiny": tmp_path / "placed" / "cards" / "tiny" / "tiny.yaml"}
    assert not list((tmp_path / "cache").glob(".*bundle*"))
    assert tags == []  # no plan.json in this fake render: nothing to compute a local tag from


@pytest.mark.parametrize("member", ["weights/tiny/model.safetensors", "images/0/blobs/sha256/cfg",
                                    "rendered/tiny/compose.yaml", "bundle.json"])
def test_one_flipped_byte_is_exit_5_naming_the_member(bundle, member, capsys):
    flip(bundle, member_offset(bundle, member) + 3)
    assert main(["load", str(bundle), "--verify-only"]) == 5
    err = capsys.readouterr().err
    assert f"{member}: sha256" in err and "manifest says" in err


def test_flipped_byte_in_the_manifest_is_named(bundle, capsys):
    flip(bundle, member_offset(bundle, "manifest.json") + 10)
    assert main(["load", str(bundle), "--verify-only"]) == 5
    assert "manifest.json: its sha256 does not match manifest.sha256" in capsys.readouterr().err


def test_flipped_byte_in_a_tar_header_names_the_member_it_hides(bundle, capsys):
    off = member_offset(bundle, "rendered/tiny/Dockerfile")
    with tarfile.open(bundle) as tf:
        header = tf.getmember("rendered/tiny/Dockerfile").offset
    assert header < off
    flip(bundle, off - 512 + 100)  # inside the ustar header (mode field) of that member
    assert main(["load", str(bundle), "--verify-only"]) == 5
    assert "rendered/tiny/Dockerfile: missing from the bundle" in capsys.readouterr().err


def test_truncated_bundle_is_exit_5(bundle, capsys):
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data) // 2])
    assert main(["load", str(bundle), "--verify-only"]) == 5
    assert "truncated" in capsys.readouterr().err


def test_verify_only_passes_and_changes_nothing(bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "c"))
    assert main(["load", str(bundle), "--verify-only"]) == 0
    assert "every checksum matches" in capsys.readouterr().out
    assert not (tmp_path / "c").exists()


def test_other_architecture_is_refused_with_exit_3(tmp_path, capsys, monkeypatch):
    out = tmp_path / "arm.tar"
    write_bundle(make_content(tmp_path, arch=OTHER_ARCH), out)
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "c"))
    assert main(["load", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"another architecture than this host ({host_arch()})" in err
    assert f"fake/img:ctx-1 is {OTHER_ARCH}" in err
    assert not (tmp_path / "c").exists()
    assert main(["load", str(out), "--verify-only"]) == 0  # checking it here is still allowed


class Boom(Exception):
    pass


def test_interrupted_write_leaves_no_bundle(tmp_path):
    data = fake_save_tar()

    def dying():
        yield data[:30_000]
        raise Boom("engine went away")

    out = tmp_path / "x.tar"
    with pytest.raises(Boom):
        write_bundle(make_content(tmp_path, chunks=dying), out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("x.")) == []


def test_existing_bundle_needs_force(tmp_path, capsys):
    out = tmp_path / "b.tar"
    out.write_text("precious")
    assert main(["bundle", "smollm2-135m-instruct", "--target", "cpu", "--out", str(out)]) == 2
    assert "--force replaces it" in capsys.readouterr().err
    assert out.read_text() == "precious"


def test_unsafe_member_is_refused_before_anything_is_written(tmp_path):
    """Even with a matching manifest and checksum, a path escaping the cache is exit 5, nothing written."""
    evil = tmp_path / "evil.tar"
    head = {"format": fmt.FORMAT, "images": []}
    members = {"bundle.json": json.dumps(head).encode(), "weights/../../escape": b"{}"}
    man = {**head, "members": [{"name": n, "kind": "file", "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                               for n, d in members.items()]}
    members["manifest.json"] = json.dumps(man).encode()
    members["manifest.sha256"] = hashlib.sha256(members["manifest.json"]).hexdigest().encode()
    with tarfile.open(evil, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(VerificationFailed, match="'weights/../../escape' has an unsafe or unknown path"):
        load_bundle(evil, cache=tmp_path / "cache", place_root=tmp_path / "p", loader=lambda s: [],
                    tagger=lambda i, r: None, say=lambda s: None)
    assert not (tmp_path.parent / "escape").exists() and not (tmp_path / "cache").exists()


@given(st.lists(st.sampled_from(["a", "..", ".", "b.c", ""]), min_size=1, max_size=5),
       st.sampled_from(["weights/", "images/0/", "/", "rendered/", "other/"]))
def test_safe_name_refuses_escapes_and_unknown_roots(parts, prefix):
    name = prefix + "/".join(parts)
    ok = (".." not in name.split("/") and not name.startswith("/") and prefix != "other/" and name != "")
    if ok:
        assert fmt.safe_name(name) == name
    else:
        with pytest.raises(VerificationFailed):
            fmt.safe_name(name)


class Counting(Meter):
    def __init__(self):
        self.bytes = 0

    def advance(self, n):
        self.bytes += n


def test_write_and_verify_stream_in_bounded_memory(tmp_path):
    """A 48 MiB layer goes through without being held: peak Python allocations stay under 8 MiB."""
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(48 << 20)
    content = make_content(tmp_path)
    content.dirs.append(DirPart("weights/big", tmp_path, "big", skip=lambda rel: rel != "big"))
    out = tmp_path / "b.tar"
    tracemalloc.start()
    try:
        write_bundle(content, out)
        meter = Counting()
        verify_bundle(out, meter)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert meter.bytes >= 48 << 20
    assert peak < 8 << 20, peak
