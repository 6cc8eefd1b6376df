"""Tasks by name.

``TASKS`` maps a task name to ``"module:attribute"`` of its class; the class carries its
settings dataclass as ``Config`` and is built as ``Class(config, data_dir)``. Modules are
imported only when a task is used, so ``searchrl --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .base import GuidedTask, MissingField, Score, Task

#: the task a config without ``task.name`` uses
DEFAULT_TASK = "countdown"

#: name -> "module:class"; one line per task
TASKS: dict[str, str] = {
    "countdown": "searchrl.tasks.countdown:CountdownTask",
    "code": "searchrl.tasks.code:CodeTask",
    "math": "searchrl.tasks.math:MathTask",
}


def task_class(name: str) -> type:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module, attr = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def task_config_class(name: str) -> type:
    """The settings dataclass of task ``name`` (its fields are the ``task.*`` keys)."""
    return task_class(name).Config


def named_task_config(section: Any) -> type | None:
    """The settings dataclass of the task a raw ``task`` section of a config names (the default task when
    it names none); ``None`` for a name not in ``TASKS``, which loading the config reports."""
    name = section.get("name") if isinstance(section, dict) else None
    name = DEFAULT_TASK if name is None else str(name)
    return task_config_class(name) if name in TASKS else None


def make_task(config: Any, data_dir: str | os.PathLike) -> Task:
    """The task named by ``config.name``, reading (and preparing) its data in ``data_dir``."""
    return task_class(config.name)(config, data_dir)


__all__ = ["TASKS", "DEFAULT_TASK", "Task", "GuidedTask", "Score", "MissingField", "task_class", "task_config_class",
           "named_task_config", "make_task"]
