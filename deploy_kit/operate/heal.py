"""Self-healing policy for a deployment's compose service (restart policy, engine watchdog).

The one compose service builder (deploy_kit.composefile) merges ``service_policy(plan)`` into every
service it makes.
"""

from __future__ import annotations

from typing import Any


def service_policy(plan: Any) -> dict[str, Any]:
    """Extra compose service keys (restart policy, healthcheck) for this plan. Stub: none yet."""
    return {}
