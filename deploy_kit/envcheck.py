"""Environment-variable rules: which names a target allows and which values are legal.

Values are checked where a wrong value is known to crash or silently misbehave on the target
(PYTORCH_NPU_ALLOC_CONF grammar, HCCL enums, ASCEND_RT_VISIBLE_DEVICES against the plan).
"""

from __future__ import annotations

import re

# Secrets never go into rendered files; they are passed from the operator's environment.
SECRET_NAMES = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MODELSCOPE_API_TOKEN", "VLLM_API_KEY"}


def check_npu_alloc_conf(value: str) -> str | None:
    """PYTORCH_NPU_ALLOC_CONF: comma-separated options; returns a problem or None.

    Legal: max_split_size_mb:N (N > 20), garbage_collection_threshold:F (0 < F < 1),
    expandable_segments:True|False; expandable_segments:True excludes the other two.
    """
    seen: dict[str, str] = {}
    for part in [p.strip() for p in value.split(",") if p.strip()]:
        key, sep, val = part.partition(":")
        if not sep:
            return f"option '{part}' has no ':value'"
        if key in seen:
            return f"option '{key}' given twice"
        seen[key] = val
        if key == "max_split_size_mb":
            if not val.isdigit() or int(val) <= 20:
                return f"max_split_size_mb must be an integer > 20 (got '{val}')"
        elif key == "garbage_collection_threshold":
            try:
                f = float(val)
            except ValueError:
                return f"garbage_collection_threshold must be a number in (0, 1) (got '{val}')"
            if not 0 < f < 1:
                return f"garbage_collection_threshold must be in (0, 1) (got '{val}')"
        elif key == "expandable_segments":
            if val not in ("True", "False"):
                return f"expandable_segments must be True or False (got '{val}')"
        else:
            return (f"unknown option '{key}' (legal: max_split_size_mb, "
                    "garbage_collection_threshold, expandable_segments)")
    if seen.get("expandable_segments") == "True" and len(seen) > 1:
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
