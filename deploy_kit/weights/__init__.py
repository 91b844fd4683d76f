"""Weights: pull from ModelScope / Hugging Face / a local dir / a GGUF package, verify, cache."""
