"""The runtime's verbs in one place: `up` (runtime/up.py, in named phases), `stage` (runtime/stage.py),
and `down`, `status`, `logs`, `smoke` (runtime/ops.py). The CLI (commands/runtime.py) only parses and prints.
"""

from __future__ import annotations

from .ops import deployment_log, down, down_plan, logs, metrics, run_smoke, status
from .stage import Staged, stage
from .up import UpResult, make_plan, up

__all__ = ["Staged", "UpResult", "deployment_log", "down", "down_plan", "logs", "make_plan", "metrics", "run_smoke",
           "stage", "status", "up"]
