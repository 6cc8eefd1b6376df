"""Outer self-training loops (ReST, Guided-ReST) and the demo that compares them."""

from .rest import SelfTrainConfig, generate_guided, generation_stats, run_selftrain

__all__ = ["SelfTrainConfig", "generate_guided", "generation_stats", "run_selftrain"]
