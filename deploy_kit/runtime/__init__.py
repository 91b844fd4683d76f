"""Runtime: run a rendered Plan in Docker (Compose v2), prove it with readiness + smoke, keep state.

Modules: context (build context + content tag), dockerapi (Docker SDK, lazy), compose (v2 CLI),
state (records + ledger lock), readiness, smoke, deploy (up/down/status/logs/smoke).
"""
