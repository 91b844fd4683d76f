"""The API key every client of a deployment sends (bench, eval, lm-eval, report, smoke, readiness).

vLLM's `--api-key` (or the VLLM_API_KEY variable of the server) makes every /v1 route answer 401
without `Authorization: Bearer <key>`. An exposed deployment (`up --expose`) is started with the
key from the operator's VLLM_API_KEY, so the verifying side reads the same variable. A blank value
is treated as unset: sending "Bearer " would only turn a missing key into a confusing 401.
"""

from __future__ import annotations

import os

API_KEY_ENV = "VLLM_API_KEY"


def api_key() -> str | None:
    """The key from VLLM_API_KEY, stripped; None when unset or blank."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None


def auth_headers() -> dict[str, str]:
    """{"Authorization": "Bearer <key>"} when VLLM_API_KEY is set and non-blank, else {}."""
    key = api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}
