"""The Task interface every self-training method, evaluation and search works against.

A task supplies verifiable problems. Everything above ``searchrl/tasks/`` talks to a
task only through this interface, and finds it by name in the registry
(:mod:`searchrl.tasks`), so adding a task means one folder under ``tasks/`` and one
registry line; no pipeline, command or config class names a task.

* ``prepare(data_dir, progress)`` writes the task's splits unless ``is_prepared()`` (``problems(split)``
  reads them) and returns a summary dict for people (or ``None`` when nothing was done);
* ``prompt(problem)`` is the user message a model sees (the chat template is applied by
  the caller, so the same task serves any tokenizer);
* ``demonstration(problem)`` is the SFT target (Countdown: its Stream-of-Search trace);
* ``score(problems, responses)`` grades a batch, one :class:`Score` each. ``reward`` may be
  partial credit (the fraction of unit tests passed), so "correct" is its own field and
  never ``reward > 0``;
* ``action_stop`` ends one action (a line unless the task says otherwise; tree searches
  expand one action at a time);
* optional ``answer(problem, response) -> str | None``: the final answer a response claims
  (checked or not), which majority votes group by (:mod:`searchrl.search.bon`);
* optional ``guide(problem, response, rng) -> prefix`` for guided continuation
  (Guided-ReST), and ``tokenizer()`` for tasks that bring their own vocabulary (used by
  models created from scratch, never for a pretrained model directory);
* optional ``feedback(problems, responses) -> [Feedback(message, done)]``: the next user message
  after each response and whether its episode is done, for multi-turn episodes
  (:mod:`searchrl.episodes`; code: the public tests, :mod:`searchrl.tasks.code.repair`), and
  ``reference(problem) -> str``, the reference solution a guidance round shows;
* ``demonstration`` may return a list of messages after the prompt instead of a string (a
  multi-turn demonstration; SFT learns its last assistant turn);
* optional ``split_titles``: split name -> the title reports give it (default Countdown's
  "Seen target" / "Unseen target", :data:`searchrl.eval.report.SPLIT_TITLES`).

A task's settings are a dataclass (its ``Config``) with a ``name`` field; it becomes the
``task`` section of a run's config, so ``task.n_train=...`` is checked against that task's
fields and listed in ``--help``. The dataclass says what each setting changes, because a run
directory keys its stages and shards by it:

* ``NOT_DATA``: the settings that do not change the problems ``prepare`` writes (every other one
  is part of the data stage's identity);
* ``SCORING``: those of ``NOT_DATA`` that change prompts, rewards or grades (reward shaping,
  sandbox limits, a grader's timeout); every stage and shard of graded samples depends on them,
  so changing one refuses a finished stage instead of reusing its old grades;
* ``RECORDED_DEFAULTS``: settings added later, at the values that reproduce older run directories;
* optional classmethod ``migrate(raw) -> raw``: a raw config (a recipe, the command line or a
  recorded config, as a dict of sections) with the task's settings that older versions wrote
  elsewhere moved to where they are now (Countdown: ``model.number_digits`` ->
  ``task.number_digits``), so a task renames or moves its own settings and old recipes and run
  directories keep loading; it returns a new dict and leaves ``raw`` as it was. The config loader
  calls the hook of the task a layer names (the default task when it names none).

Vocabularies of tasks for models created from scratch are built by
:func:`searchrl.tasks.vocab.build_phrase_tokenizer`, so no task imports ``searchrl.models``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


#: the words a guidance round adds to the feedback before the reference (Guided-ReST's code recipe)
GUIDANCE = "Here is the reference code to assist you:"
#: what a stored episode shows instead of the reference (the recipe's ``DUMMY_SOLUTION``)
PLACEHOLDER = "```python\n# REFERENCE CODE HERE\n```"


def guided_message(feedback: str, reference: str) -> str:
    """The user message of a guidance round: the feedback, then the reference (the recipe's words)."""
    return f"{feedback}\n\n{GUIDANCE}\n\n{reference}"


@dataclass(frozen=True)
class Score:
    """The verdict on one response: ``reward`` (partial credit allowed), ``correct`` (fully solved)."""

    reward: float
    correct: bool
    info: dict[str, Any] = field(default_factory=dict)


class MissingField(ValueError):
    """A problem lacks a field an operation needs (turned into a file:line error by the caller)."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(message)


@runtime_checkable
class Task(Protocol):
    name: str
    #: the string that ends one action (tree searches stop generation there)
    action_stop: str

    def prepare(self, data_dir: str | os.PathLike, progress: bool = True) -> dict | None: ...

    def is_prepared(self) -> bool: ...

    def problems(self, split: str) -> list[dict[str, Any]]: ...

    def prompt(self, problem: dict[str, Any]) -> str: ...

    def demonstration(self, problem: dict[str, Any]) -> str: ...

    def score(self, problems: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[Score]: ...


@runtime_checkable
class GuidedTask(Task, Protocol):
    def guide(self, problem: dict[str, Any], response: str, rng: Any = None) -> str: ...


def where(task: Any, split: str, index: int) -> tuple[str, int]:
    """``(file, line)`` of problem ``index`` of ``split`` when the task knows it, else the split name."""
    locate = getattr(task, "where", None)
    if locate is not None:
        found = locate(split, index)
        if found is not None:
            return found
    return (split, index + 1)
