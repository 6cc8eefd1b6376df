"""Countdown, byte-compatible with the published Stream-of-Search / Guided-ReST code.

Public API: :func:`solve`, :func:`sos_trace`, :func:`optimal_trace`, :func:`grade`,
:func:`guide`, the data set helpers and :class:`CountdownTask` (the :class:`~searchrl.tasks.base.Task`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .core import apply_operation, combine_nums, mult_heuristic, solve, successors, sum_heuristic
from .dataset import (SPLITS, CountdownDataConfig, generate_splits, random_trace_settings,
                      read_problems, split_targets, statistics, write_splits)
from .grader import grade, reward
from .guide import guide
from .traces import bfs_trace, dfs_trace, optimal_trace, sos_trace


def prompt_text(problem: dict[str, Any]) -> str:
    """What the model is asked: ``"target:[nums]"``, e.g. ``"42:[86, 43, 44]"``.

    The response is then the whole search trace, starting from the root
    ``Current State`` line (which is what the Guided-ReST splice resets to).
    """
    return f"{problem['target']}:{list(problem['nums'])}"


class CountdownTask:
    """Countdown problems from a data directory written by ``searchrl countdown data``."""

    name = "countdown"
    action_stop = "\n"

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self._cache: dict[str, list[dict]] = {}

    def problems(self, split: str) -> list[dict[str, Any]]:
        if split not in self._cache:
            path = self.data_dir / f"{split}.jsonl"
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such split (make it with `searchrl countdown data --out {self.data_dir}`)")
            self._cache[split] = read_problems(path)
        return self._cache[split]

    def prompt(self, problem: dict[str, Any]) -> str:
        return prompt_text(problem)

    def reward(self, problem: dict[str, Any], response: str) -> float:
        return reward(response, problem["target"], problem["nums"])

    def guide(self, problem: dict[str, Any], response: str, rng: Any = None) -> str:
        return guide(response, problem, rng=rng)


__all__ = ["solve", "sos_trace", "optimal_trace", "dfs_trace", "bfs_trace", "grade", "reward", "guide",
           "apply_operation", "combine_nums", "successors", "sum_heuristic", "mult_heuristic",
           "CountdownDataConfig", "SPLITS", "generate_splits", "write_splits", "read_problems",
           "split_targets", "statistics", "random_trace_settings", "prompt_text", "CountdownTask"]
