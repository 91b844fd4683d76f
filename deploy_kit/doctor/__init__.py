"""Preflight (`deploykit doctor`), the pinned vLLM-Ascend compatibility table, and log triage.

Import cost is small (pydantic, yaml); docker and httpx are imported inside the checks.
"""

from __future__ import annotations

from .compat import Issue, check_image_against_driver, load_compat
from .model import Check, Evidence, Report
from .runner import raise_if_blocked, run_doctor
from .triage import TriageResult, triage_text

__all__ = ["Check", "Evidence", "Issue", "Report", "TriageResult", "check_image_against_driver",
           "load_compat", "raise_if_blocked", "run_doctor", "triage_text"]
