"""Stacks: several deployments on one host (allocation, ledger, compose project, Kubernetes)."""
