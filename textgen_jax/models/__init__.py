"""Flax linen models: module definitions and model math only (no optimisers, no I/O)."""
