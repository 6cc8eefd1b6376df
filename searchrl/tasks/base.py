"""The Task interface every self-training method and search algorithm works against.

A task supplies verifiable problems: the prompt a model sees, a reward for a response,
where actions end (a line is an action unless the task says otherwise; tree searches
expand one action at a time), and optionally ``guide(problem, response) -> prefix`` for
guided continuation (Guided-ReST).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Task(Protocol):
    name: str
    #: the string that ends one action (tree searches stop generation there)
    action_stop: str

    def problems(self, split: str) -> list[dict[str, Any]]: ...

    def prompt(self, problem: dict[str, Any]) -> str: ...

    def reward(self, problem: dict[str, Any], response: str) -> float: ...


@runtime_checkable
class GuidedTask(Task, Protocol):
    def guide(self, problem: dict[str, Any], response: str, rng: Any = None) -> str: ...
