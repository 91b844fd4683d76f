"""deploykit: model card -> validated plan -> proven vLLM deployment.

Use as a library (imported lazily, so `deploykit --help` stays fast)::

    import deploy_kit as dk
    card = dk.load_card("smollm2-135m-instruct")      # cardload.LoadedCard
    plan = dk.plan(card, target="cpu", port=8100)     # typed dk.Plan; raises Infeasible (exit 3) with reasons
    dk.render(plan, "out/")                           # Dockerfile, model.env, compose.yaml, plan.json, README.md
    res = dk.up("smollm2-135m-instruct", "cpu", port=8100)   # or dk.up(plan.name, plan=plan)
    dk.down(res.name)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "load_card": ("deploy_kit.cardload", "load_card"),
    "plan": ("deploy_kit.planner", "plan"),
    "Plan": ("deploy_kit.planner", "Plan"),
    "render": ("deploy_kit.render", "render"),
    "up": ("deploy_kit.runtime.up", "up"),
    "down": ("deploy_kit.runtime.ops", "down"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'deploy_kit' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    return getattr(importlib.import_module(module), attr)
