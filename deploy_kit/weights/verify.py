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
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit (MAX_HEADER_SIZE)
_MAX_CONFIG = 16 * 1024 * 1024  # config.json of the largest multimodal models is well under 1 MiB
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
        raw = f.read(n)  # n is capped above: a bounded read
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise TypeError("header is not a JSON object")
        end, count = _tensor_extent(path, header)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:  # deep nesting: RecursionError
        raise VerificationFailed(f"{path.name}: malformed safetensors header ({_short(exc)})",
                                 file=str(path), hint="corrupted download or not a safetensors file"
                                 ) from None
    if 8 + n + end != size:
        raise VerificationFailed(f"{path.name}: tensors cover {8 + n + end} bytes but the file has "
                                 f"{size}", file=str(path), hint="truncated or corrupted download")
    return count


def _tensor_extent(path: Path, header: dict) -> tuple[int, int]:
    """(end of the data section, tensor count); TypeError/KeyError/ValueError on malformed entries."""
    end = 0
    count = 0
    for key, t in header.items():
        if key == "__metadata__":
            continue
        start, stop = t["data_offsets"]
        if not (type(start) is int and type(stop) is int and 0 <= start <= stop):
            raise VerificationFailed(f"{path.name}: tensor {key[:80]} has bad offsets {start}..{stop}",
                                     file=str(path))
        width = _DTYPE_BYTES.get(t.get("dtype", ""))
        if width is not None:
            numel = 1
            for d in t.get("shape", []):
                if type(d) is not int or d < 0:
                    raise ValueError(f"tensor {key[:80]}: bad shape")
                numel *= d
            if numel * width != stop - start:
                raise VerificationFailed(f"{path.name}: tensor {key[:80]} shape/dtype does not match "
                                         f"its {stop - start} bytes", file=str(path))
        end = max(end, stop)
        count += 1
    return end, count


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


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
    "sliding_window": ("sliding_window",),
}
_NESTED = ("llm_config", "text_config", "language_config", "thinker_config")


def _lm_config(cfg: dict) -> dict:
    """The language-model part of a config (InternVL llm_config, Llava text_config, ...)."""
    for k in _NESTED:
        sub = cfg.get(k)
        if isinstance(sub, dict) and ("num_hidden_layers" in sub or "hidden_size" in sub):
            return _lm_config(sub)
    return cfg


def read_config(config_path: Path) -> dict:
    """config.json as a dict, read with a size cap; VerificationFailed (exit 5) if it is not one."""
    try:
        with open(config_path, "rb") as f:
            raw = f.read(_MAX_CONFIG + 1)
        if len(raw) > _MAX_CONFIG:
            raise ValueError(f"larger than {_MAX_CONFIG // 2**20} MiB")
        cfg = json.loads(raw)
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, RecursionError) as exc:
        raise VerificationFailed(f"cannot read {config_path.name}: {_short(exc)}",
                                 file=str(config_path)) from None
    return cfg


def compare_config(config_path: Path, expected: dict[str, Any]) -> list[str]:
    """Compare config.json with card facts; raise VerificationFailed naming both values."""
    cfg = read_config(Path(config_path))
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
        if fact == "sliding_window" and (got is None or lm.get("use_sliding_window") is False):
            # a card's window shrinks the KV estimate: it must be one the model really uses
            problems.append(f"sliding_window: card says {want}, config.json uses none")
            continue
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


def is_payload(rel_parts: tuple[str, ...]) -> bool:
    """A model file, not hub-client bookkeeping: hidden paths (.cache/, .deploykit.json) and the
    ModelScope client's resumable `<file>.incomplete` partials are not part of the model."""
    return (bool(rel_parts) and not any(part.startswith(".") for part in rel_parts)
            and not rel_parts[-1].endswith(".incomplete"))


def safe_rel(rel: object) -> bool:
    """A relative path inside the model dir (a manifest is ours, but never trusted to leave it)."""
    return (isinstance(rel, str) and bool(rel) and not Path(rel).is_absolute()
            and "\\" not in rel and "\0" not in rel and is_payload(Path(rel).parts))


def payload_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*")
                  if p.is_file() and not p.is_symlink() and is_payload(p.relative_to(d).parts))


def check_against_manifest(d: Path, man_files: list[dict], hub_files: dict[str, dict] | None = None,
                           ) -> dict[str, str]:
    """{file: problem naming it} where the cache does not prove itself: a recorded file missing,
    of another size or sha256 than recorded, or than the hub now lists; a file the hub lists that
    the manifest lacks. Empty: every byte is what was verified at pull time."""
    problems: dict[str, str] = {}
    recorded = {str(f.get("path")): f for f in man_files if isinstance(f, dict)}
    for rel, want in (hub_files or {}).items():
        have = recorded.get(rel)
        if have is None:
            problems[rel] = f"{rel}: listed by the hub but not in the cache"
        elif want.get("size") is not None and want["size"] != have.get("size"):
            problems[rel] = f"{rel}: the hub lists size {want['size']}, the cache recorded {have.get('size')}"
        elif want.get("sha256") and want["sha256"] != have.get("sha256"):
            problems[rel] = (f"{rel}: the hub lists sha256 {want['sha256'][:12]}, the cache recorded "
                             f"{str(have.get('sha256'))[:12]}")
    for rel, have in recorded.items():
        p = d / rel
        if not safe_rel(rel) or not p.is_file() or p.is_symlink():
            problems[rel] = f"{rel}: missing"
        elif p.stat().st_size != have.get("size"):
            problems[rel] = f"{rel}: size {p.stat().st_size}, recorded {have.get('size')}"
        elif sha256_file(p) != have.get("sha256"):
            problems[rel] = f"{rel}: sha256 differs from the one recorded at pull time"
    return problems


def verify_dir(d: Path, expected: dict[str, Any], hub_files: dict[str, dict] | None = None,
               fmt: str = "safetensors") -> list[dict]:
    """Verify a weights dir; return the manifest file list [{path, size, sha256}]."""
    d = Path(d)
    if not (d / "config.json").is_file():
        raise VerificationFailed(f"{d}: no config.json", file=str(d))
    compare_config(d / "config.json", expected)
    if hub_files is None:  # a local dir: every model file in it
        files = payload_files(d)
    else:  # a pull: exactly what was fetched (never an operator's own file beside it)
        missing = [rel for rel in sorted(hub_files) if not (d / rel).is_file()]
        if missing:
            raise VerificationFailed(f"{missing[0]}: listed by the hub but not downloaded", file=str(d))
        files = [d / rel for rel in sorted(hub_files)]
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
