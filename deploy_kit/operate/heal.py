"""Self-healing policy for a deployment's compose service (restart policy, engine watchdog).

The one compose service builder (deploy_kit.composefile) merges ``service_policy(plan)`` into every
service it makes:

- ``restart: on-failure:N``: Docker restarts a container whose main process exits non-zero, at most
  N times, with its own growing delay (100 ms doubling per restart, reset after 10 s of running;
  Docker docs "Restart policies"). A clean exit (code 0) or `docker stop` / `deploykit down` is not
  restarted; `deploykit up` recreates the container and so resets the count.
- ``entrypoint``: deploy_kit/operate/watchdog.py as PID 1 (``python3 -c <source> ... --``), with the
  plan's argv as the unchanged exec-form ``command``. Docker never restarts a container that is
  only "unhealthy"; the watchdog turns a hung engine into an exit (code 70) that the policy sees.
- ``healthcheck``: the same /health probe and thresholds, so `docker ps` and the watchdog agree.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..planner import Plan

MAX_RESTARTS = 5          # a crash loop stops after this many tries instead of flapping forever
# The /health poll period and per-poll timeout are the plan's (card `serve.health_check_interval_s`,
# default planner.HEALTH_CHECK_INTERVAL_S = 10 s): a hung engine is restarted after 3-6 periods.
FAILURES = 3              # a busy CPU engine may miss one poll
UNHEALTHY_EXIT = 70       # deploy_kit.operate.watchdog.EXIT_UNHEALTHY


def _strip_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=1)
def watchdog_source() -> str:
    """The watchdog script as it goes into every compose file: without docstrings and comments
    (ast round trip; ~3 KB instead of ~6 KB per service). It must hold no '$' (Compose would
    interpolate it)."""
    text = ast.unparse(_strip_docstrings(ast.parse(Path(__file__).with_name("watchdog.py").read_text())))
    if "$" in text:  # a guard for whoever edits watchdog.py
        raise RuntimeError("deploy_kit/operate/watchdog.py must not contain '$' (compose interpolation)")
    return "# deploykit-watchdog (deploy_kit/operate/watchdog.py)\n" + text + "\n"


def watchdog_entrypoint(plan: Plan) -> list[str]:
    """Exec-form entrypoint: the watchdog with its options; compose appends the plan argv (command)."""
    return ["python3", "-c", watchdog_source(),
            "--port", str(plan.container_port), "--grace", str(plan.readiness_timeout_s),
            "--interval", str(plan.health_check_interval_s), "--timeout", str(plan.health_check_interval_s),
            "--failures", str(FAILURES), "--"]


def healthcheck(plan: Plan) -> dict[str, Any]:
    # python3 is in every vLLM image; curl is not. The port is an int from the plan: no user text.
    period = plan.health_check_interval_s
    probe = ("import urllib.request; urllib.request.urlopen("
             f"'http://127.0.0.1:{plan.container_port}/health', timeout={period})")
    return {"test": ["CMD", "python3", "-c", probe], "interval": f"{period}s",
            "timeout": f"{period}s", "retries": FAILURES, "start_period": f"{plan.readiness_timeout_s}s"}


def service_policy(plan: Plan) -> dict[str, Any]:
    """Extra compose service keys for this plan: restart policy, watchdog entrypoint, healthcheck."""
    return {"restart": f"on-failure:{MAX_RESTARTS}", "entrypoint": watchdog_entrypoint(plan),
            "healthcheck": healthcheck(plan)}
