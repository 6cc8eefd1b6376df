"""Outer self-training loops (ReST, Guided-ReST); the demo that compares them is in :mod:`searchrl.pipelines.demo`."""

from .rest import SelfTrainConfig, generate_guided, generation_stats, run_selftrain, selftrain_stage

__all__ = ["SelfTrainConfig", "generate_guided", "generation_stats", "run_selftrain", "selftrain_stage"]
