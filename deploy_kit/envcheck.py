"""Environment-variable rules: which names a target allows and which values are legal.

Values are checked where a wrong value is known to crash or silently misbehave on the target
(PYTORCH_NPU_ALLOC_CONF grammar, HCCL enums, ASCEND_RT_VISIBLE_DEVICES against the plan).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Callable

# Secrets never go into rendered files; they are passed from the operator's environment.
SECRET_NAMES = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "VLLM_API_KEY"}


# torch_npu's PYTORCH_NPU_ALLOC_CONF options, as its environment-variable reference documents them
# (https://gitcode.com/Ascend/pytorch/blob/v2.7.1-26.0.0/docs/zh/environment_variable_reference/PYTORCH_NPU_ALLOC_CONF.md):
# each option maps to a check of its value that returns a problem or None.
def _int_above(low: int, v: str) -> str | None:
    return None if v.isdigit() and int(v) > low else f"must be an integer > {low} (got '{v}')"


def _fraction(v: str) -> str | None:
    try:
        f = float(v)
    except ValueError:
        return f"must be a number in (0, 1) (got '{v}')"
    return None if 0 < f < 1 else f"must be in (0, 1) (got '{v}')"


def _bool_word(v: str) -> str | None:
    return None if v in ("True", "False") else f"must be True or False (got '{v}')"


def _aligned_kb(v: str) -> str | None:
    return None if v.isdigit() and 0 <= int(v) <= 16 else f"must be an integer 0..16 (got '{v}')"


def _page_size(v: str) -> str | None:
    return None if v.lower() in ("1g", "1gb") else f"only 1g is supported (got '{v}')"


NPU_ALLOC_OPTIONS: dict[str, Callable[[str], str | None]] = {
    "max_split_size_mb": partial(_int_above, 20),
    "garbage_collection_threshold": _fraction,
    "expandable_segments": _bool_word,
    "base_addr_aligned_kb": _aligned_kb,
    "page_size": _page_size,
    "segment_size_mb": partial(_int_above, 0),
}
# "max_split_size_mb and garbage_collection_threshold ... expandable_segments must be False" (same page).
_NOT_WITH_EXPANDABLE = ("max_split_size_mb", "garbage_collection_threshold")


def check_npu_alloc_conf(value: str) -> str | None:
    """PYTORCH_NPU_ALLOC_CONF: comma-separated option:value pairs; returns a problem or None."""
    seen: dict[str, str] = {}
    for part in [p.strip() for p in value.split(",") if p.strip()]:
        key, sep, val = part.partition(":")
        if not sep:
            return f"option '{part}' has no ':value'"
        if key in seen:
            return f"option '{key}' given twice"
        seen[key] = val
        check = NPU_ALLOC_OPTIONS.get(key)
        if check is None:
            return f"unknown option '{key}' (legal: {', '.join(NPU_ALLOC_OPTIONS)})"
        problem = check(val)
        if problem:
            return f"{key} {problem}"
    if seen.get("expandable_segments") == "True" and any(k in seen for k in _NOT_WITH_EXPANDABLE):
        return "expandable_segments:True cannot be combined with max_split_size_mb or garbage_collection_threshold"
    return None


_ENUMS = {
    "HCCL_OP_EXPANSION_MODE": {"AI_CPU", "AIV", "HOST", "HOST_TS"},
    "TASK_QUEUE_ENABLE": {"0", "1", "2"},
    "HCCL_INTRA_ROCE_ENABLE": {"0", "1"},
}
_POSITIVE_INT = {"HCCL_BUFFSIZE", "HCCL_CONNECT_TIMEOUT", "HCCL_EXEC_TIMEOUT", "OMP_NUM_THREADS",
                 "VLLM_CPU_KVCACHE_SPACE"}


def check_value(key: str, value: str) -> str | None:
    if key == "PYTORCH_NPU_ALLOC_CONF":
        return check_npu_alloc_conf(value)
    if key in _ENUMS and value not in _ENUMS[key]:
        return f"must be one of {', '.join(sorted(_ENUMS[key]))} (got '{value}')"
    if key in _POSITIVE_INT and not (value.isdigit() and int(value) > 0):
        return f"must be a positive integer (got '{value}')"
    if key in ("ASCEND_RT_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES") and not re.fullmatch(r"\d+(,\d+)*", value):
        return f"must be a comma-separated list of device ids (got '{value}')"
    return None


ENV_KEY = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def env_key_problem(key: str) -> str | None:
    """Why ``key`` is not a safe environment variable name, or None.

    Checked before any allowed_env glob: a glob such as VLLM_* also matches ';', '$(...)',
    backticks and newlines, and a key reaches model.env and the README's `export` lines.
    """
    if isinstance(key, str) and ENV_KEY.fullmatch(key):
        return None
    return (f"env key {key!r} is not a variable name: upper-case letters, digits and '_', "
            "not starting with a digit (^[A-Z_][A-Z0-9_]*$)")
