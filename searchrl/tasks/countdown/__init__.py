"""Countdown, byte-compatible with the published Stream-of-Search / Guided-ReST code.

Public API: :func:`solve`, :func:`sos_trace`, :func:`optimal_trace`, :func:`grade`,
:func:`guide`, the data set helpers and :class:`CountdownTask` (the :class:`~searchrl.tasks.base.Task`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ...data import read_json
from ..base import MissingField, Score
from .core import apply_operation, combine_nums, mult_heuristic, solve, successors, sum_heuristic
from .dataset import (SPLITS, CountdownDataConfig, generate_splits, random_trace_settings,
                      read_problems, split_targets, statistics, write_splits)
from .grader import claimed_operations, grade, reward
from .guide import guide
from .traces import bfs_trace, dfs_trace, optimal_trace, sos_trace


def prompt_text(problem: dict[str, Any]) -> str:
    """What the model is asked: ``"target:[nums]"``, e.g. ``"42:[86, 43, 44]"``.

    The response is then the whole search trace, starting from the root
    ``Current State`` line (which is what the Guided-ReST splice resets to).
    """
    return f"{problem['target']}:{list(problem['nums'])}"


@dataclass
class CountdownConfig(CountdownDataConfig):
    """The ``task`` section of a run's config for Countdown: the data settings, plus the vocabulary."""

    name: str = field(default="countdown", metadata={"help": "task name (see searchrl.tasks.TASKS)"})
    number_digits: int = field(default=0, metadata={
        "help": "tokenizer of models created from scratch: 0 = one token per digit, D = whole numbers of "
                "<= D digits as one token"})

    #: settings that do not change the problems written by ``prepare``
    NOT_DATA = ("name", "number_digits", "workers")
    #: settings that change prompts or grades but not the problems (number_digits changes only a from-scratch
    #: model's vocabulary, which the SFT stage records)
    SCORING = ()
    #: settings added later, at the values that reproduce data recorded before they existed
    RECORDED_DEFAULTS = {"n_selftrain": 0, "n_valid_unseen": 0, "max_number": 0}

    @classmethod
    def migrate(cls, raw: dict) -> dict:
        """A raw config (a recipe, the command line, a recorded config) with Countdown's settings where
        older searchrl wrote them moved to where they are now: ``model.number_digits`` (before tasks had a
        config section) -> ``task.number_digits`` (a value already in ``task`` wins). ``raw`` is not changed."""
        model = raw.get("model")
        if not (isinstance(model, dict) and "number_digits" in model):
            return raw
        model = dict(model)
        number_digits = model.pop("number_digits")
        task = dict(raw.get("task") or {})
        task.setdefault("number_digits", number_digits)
        return {**raw, "model": model, "task": task}

    def __post_init__(self):
        super().__post_init__()  # the data settings
        if not 0 <= self.number_digits <= 4:
            raise ValueError(f"number_digits must be in 0..4, got {self.number_digits}")


class CountdownTask:
    """Countdown problems (:class:`~searchrl.tasks.base.Task`), read from ``data_dir``.

    ``prepare`` writes the splits with ``searchrl data`` semantics (``stats.json`` last, so a
    directory without it is not trusted); ``problems`` validates every record and
    remembers its line, so an error about a problem later names its file and line.
    """

    name = "countdown"
    action_stop = "\n"
    Config = CountdownConfig

    def __init__(self, config: CountdownConfig | None = None, data_dir: str | os.PathLike = "."):
        self.config = config if config is not None else CountdownConfig()
        self.data_dir = Path(data_dir)
        self._cache: dict[str, list[dict]] = {}
        self._lines: dict[str, list[int]] = {}

    # ---- data
    def is_prepared(self) -> bool:
        return (self.data_dir / "stats.json").exists()

    def prepare(self, data_dir: str | os.PathLike | None = None, progress: bool = True) -> dict | None:
        """Write the splits into ``data_dir`` (default: this task's) unless they are there already."""
        out = Path(data_dir) if data_dir is not None else self.data_dir
        if (out / "stats.json").exists():
            return None
        data_cfg = CountdownDataConfig(**{f.name: getattr(self.config, f.name)
                                          for f in fields(CountdownDataConfig)})
        stats = write_splits(out, data_cfg, progress=progress)
        run = stats.pop("_run")
        return {"seconds": run["seconds"], "problems_per_s": run["problems_per_s"], "workers": run["workers"],
                "held-out (unseen) targets": run["unseen_targets"], **stats}

    def prepared_settings(self) -> dict | None:
        """The data settings the directory was prepared with (``config.json``), if recorded."""
        path = self.data_dir / "config.json"
        return read_json(path) if path.exists() else None

    def _path(self, split: str) -> Path:
        for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
            if (self.data_dir / f"{split}{suffix}").exists():
                return self.data_dir / f"{split}{suffix}"
        raise FileNotFoundError(f"{self.data_dir / (split + '.jsonl')}: no such split "
                                f"(make it with `searchrl data --out {self.data_dir}`)")

    def problems(self, split: str) -> list[dict[str, Any]]:
        if split not in self._cache:
            lines: list[int] = []
            self._cache[split] = read_problems(self._path(split), lines)
            self._lines[split] = lines
        return self._cache[split]

    def where(self, split: str, index: int) -> tuple[str, int] | None:
        """The file and 1-based line problem ``index`` of ``split`` was read from."""
        self.problems(split)
        return str(self._path(split)), self._lines[split][index]

    # ---- model-facing
    def prompt(self, problem: dict[str, Any]) -> str:
        return prompt_text(problem)

    def demonstration(self, problem: dict[str, Any]) -> str:
        """The Stream-of-Search trace stored with a training problem (``searchrl data`` writes it)."""
        trace = problem.get("trace")
        if not isinstance(trace, str):
            raise MissingField("trace", "missing: the Stream-of-Search trace that SFT imitates "
                                        "(`searchrl data` writes one for every training problem)")
        return trace

    def score(self, problems: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[Score]:
        """The strict grader (:func:`grade`): reward 1.0 and correct, or 0.0 and not."""
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems for {len(responses)} responses")
        out = []
        for p, r in zip(problems, responses):
            ok = grade(r, p["target"], p["nums"])
            out.append(Score(reward=1.0 if ok else 0.0, correct=ok))
        return out

    def answer(self, problem: dict[str, Any], response: str) -> str | None:
        """The solution a trace claims (its operations, in order, ``"a+b=c, ..."``), checked or not:
        what majority votes group by. ``None`` when the trace reaches no goal."""
        operations = claimed_operations(response)
        return None if operations is None else ", ".join(operations)

    def reward(self, problem: dict[str, Any], response: str) -> float:
        return reward(response, problem["target"], problem["nums"])

    def guide(self, problem: dict[str, Any], response: str, rng: Any = None) -> str:
        return guide(response, problem, rng=rng)

    def tokenizer(self):
        """The Countdown vocabulary for models created from scratch (``number_digits`` decides numbers)."""
        from .tokenizer import build_countdown_tokenizer

        return build_countdown_tokenizer(self.config.number_digits)


__all__ = ["solve", "sos_trace", "optimal_trace", "dfs_trace", "bfs_trace", "grade", "reward", "guide",
           "apply_operation", "combine_nums", "successors", "sum_heuristic", "mult_heuristic",
           "CountdownDataConfig", "SPLITS", "generate_splits", "write_splits", "read_problems",
           "split_targets", "statistics", "random_trace_settings", "prompt_text", "CountdownTask", "CountdownConfig", "build_countdown_tokenizer"]


def __getattr__(name):  # the tokenizer imports transformers: only when asked for
    if name == "build_countdown_tokenizer":
        from .tokenizer import build_countdown_tokenizer

        return build_countdown_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
