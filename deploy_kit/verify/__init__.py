"""Verification: bench (load generation + vLLM-style metrics), eval (greedy equivalence), report."""
