"""Checks on a weights directory: safetensors headers, file sizes/hashes, config.json vs card facts."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from deploy_kit.errors import VerificationFailed

# The header is parsed by hand (8-byte LE length + JSON) rather than with the safetensors package:
# that is the whole format, it needs no numpy/torch, and reading 8+N bytes avoids mapping a 10 GB file.
_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def check_safetensors(path: Path) -> int:
    """Validate one .safetensors file; return its tensor count. Raise VerificationFailed if broken."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise VerificationFailed(f"{path.name}: truncated (no header length)", file=str(path))
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise VerificationFailed(f"{path.name}: header length {n} exceeds file size {size}",
                                     file=str(path))
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise VerificationFailed(f"{path.name}: header is not JSON ({exc})", file=str(path)) from None
    end = 0
    count = 0
    for key, t in header.items():
        if key == "__metadata__":
            continue
        start, stop = t["data_offsets"]
        if not 0 <= start <= stop:
            raise VerificationFailed(f"{path.name}: tensor {key} has bad offsets {start}..{stop}",
                                     file=str(path))
        width = _DTYPE_BYTES.get(t.get("dtype", ""))
        if width is not None:
            numel = 1
            for d in t.get("shape", []):
                numel *= d
            if numel * width != stop - start:
                raise VerificationFailed(f"{path.name}: tensor {key} shape/dtype does not match its "
                                         f"{stop - start} bytes", file=str(path))
        end = max(end, stop)
        count += 1
    if 8 + n + end != size:
        raise VerificationFailed(f"{path.name}: tensors cover {8 + n + end} bytes but the file has "
                                 f"{size}", file=str(path), hint="truncated or corrupted download")
    return count


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# card fact -> config.json keys tried in order
_CONFIG_KEYS = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "multi_query_group_num"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_experts": ("num_experts", "n_routed_experts", "num_local_experts"),
}
_NESTED = ("llm_config", "text_config", "language_config", "thinker_config")


def _lm_config(cfg: dict) -> dict:
    """The language-model part of a config (InternVL llm_config, Llava text_config, ...)."""
    for k in _NESTED:
        sub = cfg.get(k)
        if isinstance(sub, dict) and ("num_hidden_layers" in sub or "hidden_size" in sub):
            return _lm_config(sub)
    return cfg


def compare_config(config_path: Path, expected: dict[str, Any]) -> list[str]:
    """Compare config.json with card facts; raise VerificationFailed naming both values."""
    try:
        cfg = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise VerificationFailed(f"cannot read {config_path}: {exc}", file=str(config_path)) from None
    lm = _lm_config(cfg)
    problems: list[str] = []
    arch = expected.get("architecture")
    if arch:
        archs = list(cfg.get("architectures") or []) + list(lm.get("architectures") or [])
        if archs and arch not in archs:
            problems.append(f"architecture: card says {arch}, config.json says {archs[0]}")
    for fact, keys in _CONFIG_KEYS.items():
        want = expected.get(fact)
        if want is None:
            continue
        got = next((lm[k] for k in keys if lm.get(k) is not None), None)
        if got is None and fact == "num_kv_heads":
            got = lm.get("num_attention_heads")  # MHA configs omit num_key_value_heads
        if got is None:
            continue
        if fact == "vocab_size" and isinstance(got, int) and got < want:
            problems.append(f"vocab_size: card says {want}, config.json says {got}")
        elif fact != "vocab_size" and got != want:
            problems.append(f"{fact} ({keys[0]}): card says {want}, config.json says {got}")
    if problems:
        raise VerificationFailed("downloaded config.json contradicts the card: " + "; ".join(problems),
                                 file=str(config_path), field="model.config")
    return problems


def verify_dir(d: Path, expected: dict[str, Any], hub_files: dict[str, dict] | None = None,
               fmt: str = "safetensors") -> list[dict]:
    """Verify a weights dir; return the manifest file list [{path, size, sha256}]."""
    d = Path(d)
    if not (d / "config.json").is_file():
        raise VerificationFailed(f"{d}: no config.json", file=str(d))
    compare_config(d / "config.json", expected)
    files = sorted(p for p in d.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(d).parts))
    if fmt == "safetensors" and not any(p.suffix == ".safetensors" for p in files):
        raise VerificationFailed(f"{d}: no .safetensors files", file=str(d))
    out = []
    for p in files:
        rel = p.relative_to(d).as_posix()
        size = p.stat().st_size
        want = (hub_files or {}).get(rel)
        if want and want.get("size") is not None and want["size"] != size:
            raise VerificationFailed(f"{rel}: size {size} but the hub lists {want['size']}", file=str(p))
        if p.suffix == ".safetensors":
            check_safetensors(p)
        digest = sha256_file(p)
        if want and want.get("sha256") and want["sha256"] != digest:
            raise VerificationFailed(f"{rel}: sha256 {digest[:12]} but the hub lists "
                                     f"{want['sha256'][:12]}", file=str(p))
        out.append({"path": rel, "size": size, "sha256": digest})
    return out
