"""A searchrl task as verl data and a verl reward function.

Why: verl's PPO / GRPO recipes read a parquet file of prompts and grade responses with a reward
function ``compute_score(data_source, solution_str, ground_truth, extra_info)``. With these two a
verl user runs our tasks as they are::

    searchrl export-verl --config recipes/code/synthetic-tiny.yaml --split selftrain --out train.parquet
    python -m verl.trainer.main_ppo data.train_files=train.parquet ... \\
        custom_reward_function.path=$(python -c "import searchrl.tasks.verl as m; print(m.__file__)") \\
        custom_reward_function.name=compute_score

A row (:func:`verl_rows`) has verl's columns: ``data_source`` (``"searchrl/<task>"``), ``prompt``
(the chat messages: the task's prompt as one user turn), ``ability`` (the task's name),
``reward_model`` (``{"style": "rule", "ground_truth": <the problem record as JSON>}``) and
``extra_info`` (``{"split", "index", "task": <the task's settings as JSON>}``). :func:`compute_score`
rebuilds the task from ``extra_info`` (cached) and the problem from ``ground_truth``, grades the
response with the task's own ``score`` (the code task runs it in the sandbox, never here) and
returns ``{"score": reward, "acc": 1.0 if correct else 0.0}`` (verl logs the extra key).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

PREFIX = "searchrl/"


def verl_rows(task, split: str, n: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` problems of ``split`` (0 = all) as verl rows (see the module doc)."""
    problems = task.problems(split)
    if n:
        problems = problems[:n]
    settings = json.dumps(dataclasses.asdict(task.config), sort_keys=True)
    return [{"data_source": PREFIX + task.name,
             "prompt": [{"role": "user", "content": task.prompt(p)}],
             "ability": task.name,
             "reward_model": {"style": "rule", "ground_truth": json.dumps(p, sort_keys=True)},
             "extra_info": {"split": split, "index": i, "task": settings}} for i, p in enumerate(problems)]


def export_parquet(task, split: str, out: str | os.PathLike, n: int = 0) -> Path:
    """Write :func:`verl_rows` as a parquet file (through a temporary file renamed into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(verl_rows(task, split, n)), tmp)
    os.replace(tmp, out)
    return out


@functools.lru_cache(maxsize=16)
def _task(name: str, settings: str):
    from . import task_class

    cls = task_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    cfg = cls.Config(**{k: v for k, v in json.loads(settings).items() if k in fields})
    return cls(cfg, ".")


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> dict:
    """verl's reward-function signature over a searchrl task (see the module doc)."""
    if not isinstance(data_source, str) or not data_source.startswith(PREFIX):
        raise ValueError(f"data_source {data_source!r} is not a searchrl task (expected {PREFIX}<task>)")
    if not extra_info or "task" not in extra_info:
        raise ValueError("extra_info['task'] (the task's settings, written by searchrl export-verl) is missing")
    task = _task(data_source[len(PREFIX):], extra_info["task"])
    [s] = task.score([json.loads(ground_truth)], [solution_str])
    return {"score": float(s.reward), "acc": 1.0 if s.correct else 0.0}


__all__ = ["verl_rows", "export_parquet", "compute_score", "PREFIX"]
