"""A searchrl task as a TRL reward function.

Why: TRL's ``GRPOTrainer`` and ``RLOOTrainer`` take reward functions, and every searchrl
task already has a verifier (``task.score``). :func:`trl_reward` wraps that verifier in
TRL's reward-function signature, so a TRL user can train on our tasks' rewards as they are::

    from trl import GRPOConfig, GRPOTrainer
    from searchrl.tasks.reward import trl_reward

    trainer = GRPOTrainer(model=..., reward_funcs=trl_reward(task), train_dataset=ds, args=GRPOConfig(...))

The signature is ``f(prompts, completions, **columns) -> list[float]``. TRL passes the
dataset's other columns as keywords, one list per column with one entry per completion
(rows repeated ``num_generations`` times), so the dataset needs a ``prompt`` column and the
problem's fields (Countdown: ``target``, ``nums``, ...) as columns. Each completion's problem
dict is rebuilt from those list-valued columns; what TRL adds of its own is left out: values
that are not lists (``trainer_state``, ``log_extra``, ``log_metric``) and the list-valued
``completion_ids`` and ``environments``. A completion is a string, or a conversation (a list
of ``{"role", "content"}`` messages), whose last assistant message is the response.

The batch is graded by ONE call of the task's ``task.score(problems, responses)``, and the
rewards are ``[float(s.reward) for s in scores]`` (partial credit included). The task's
grader is the only thing that sees the model's output: nothing in it is evaluated or run
(Countdown parses the arithmetic itself, see :mod:`searchrl.tasks.countdown.grader`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: keywords TRL passes beside the dataset's columns (list-valued ones included): never problem fields
TRL_KWARGS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


def response_text(completion: Any) -> str:
    """The response in a TRL completion: the string itself, or a conversation's last assistant message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):  # one message
        completion = [completion]
    if isinstance(completion, Sequence):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content", "")
                if isinstance(content, str):
                    return content
                if content is None:
                    return ""
                # content blocks: [{"type": "text", "text": ...}, ...]
                return "".join(part.get("text", "") for part in content
                               if isinstance(part, dict) and part.get("type", "text") == "text")
        return ""
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


class TaskReward:
    """TRL reward function grading completions with ``task.score`` (see the module doc).

    ``fields``: the dataset columns that make a problem (default: every list-valued column
    that TRL does not add itself).
    """

    def __init__(self, task: Any, fields: Iterable[str] | None = None):
        self.task = task
        self.fields = None if fields is None else tuple(fields)
        self.__name__ = f"{task.name}_reward"  # TRL logs rewards/<__name__>/mean

    def problems(self, n: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
        """``n`` problem dicts, one per completion, from TRL's per-completion column lists."""
        if self.fields is not None:
            missing = [f for f in self.fields if f not in columns]
            if missing:
                raise ValueError(f"{self.__name__}: the dataset lacks the column(s) {missing}; "
                                 f"TRL passed {sorted(columns)}")
            names = list(self.fields)
        else:
            names = [k for k, v in columns.items() if k not in TRL_KWARGS and isinstance(v, (list, tuple))]
        if not names:
            raise ValueError(f"{self.__name__}: no problem fields among the columns TRL passed ({sorted(columns)}); "
                             f"the dataset needs the problems' fields as columns beside 'prompt'")
        for k in names:
            if len(columns[k]) != n:
                raise ValueError(f"{self.__name__}: column {k!r} has {len(columns[k])} entries for {n} completions")
        return [{k: columns[k][i] for k in names} for i in range(n)]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        responses = [response_text(c) for c in completions]
        scores = self.task.score(self.problems(len(responses), columns), responses)
        if len(scores) != len(responses):
            raise ValueError(f"{self.task.name}: score() returned {len(scores)} scores for {len(responses)} responses")
        return [float(s.reward) for s in scores]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__})"


def trl_reward(task: Any, fields: Iterable[str] | None = None) -> TaskReward:
    """``task``'s grader as a TRL reward function ``f(prompts, completions, **columns) -> list[float]``,
    named ``f"{task.name}_reward"``. ``fields`` restricts which columns form a problem."""
    return TaskReward(task, fields)


__all__ = ["trl_reward", "TaskReward", "response_text", "TRL_KWARGS"]
