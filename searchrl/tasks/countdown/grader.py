"""The strict Countdown grader (semantics of the published Guided-ReST ``grade_search_path``).

A trace is correct when:

1. it contains a line ``N,M equal: Goal Reached`` (the first one counts);
2. before it there is an ``Exploring Operation: a?b=c, Resulting Numbers: [...]`` line
   (the last one before the goal counts: the final operation);
3. before the goal there is a ``Current State: T:[...], Operations: [...]`` line (the last
   one counts: the operations that led to the expanded state);
4. applying every operation of that list and then the final operation to the true
   starting numbers (remove one occurrence of each operand, append the result; the
   arithmetic checked exactly) leaves exactly one number, equal to the target.

The goal line's own numbers are not trusted: only the operations are replayed.

Safety: the published grader calls ``eval`` on the operations list, which runs whatever a
model writes there. Here the list is parsed as data (a Python list display of string
literals, via :func:`ast.literal_eval`, which evaluates no code); anything else, and any
error, grades ``False``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from .core import apply_operation

_GOAL_RE = re.compile(r"\d+,\d+ equal: Goal Reached")
_GEN_RE = re.compile(r"Exploring Operation: (\d+[-+*/]\d+=\d+), Resulting Numbers: \[.*?\]\n")
_STATE_RE = re.compile(r"Current State: \d+:\[.*?\], Operations: (\[.*?\])\n")

#: Longest operations list we attempt to parse (characters); real ones are < 100.
MAX_OPERATIONS_CHARS = 10_000


def parse_operations_list(text: str) -> list[str] | None:
    """Parse ``"['a+b=c', ...]"`` as data; ``None`` unless it is a list of strings."""
    if len(text) > MAX_OPERATIONS_CHARS:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def claimed_operations(trace: str) -> list[str] | None:
    """The operations a trace claims reach the goal (steps 1-3 of the module doc: the expanded
    state's operations, then the final one), not yet checked; ``None`` when it claims none."""
    goal = _GOAL_RE.search(trace)
    if goal is None:
        return None
    head = trace[: goal.end()]
    final_ops = _GEN_RE.findall(head)
    if not final_ops:
        return None
    states = _STATE_RE.findall(head)
    if not states:
        return None
    operations = parse_operations_list(states[-1])
    if operations is None:
        return None
    return operations + [final_ops[-1]]


def grade(trace: str, target: int, nums: Sequence[int]) -> bool:
    """``True`` when the trace reaches the target with valid operations (see module doc)."""
    operations = claimed_operations(trace)
    if operations is None:
        return False
    current = [int(n) for n in nums]
    try:
        for operation in operations:
            current = apply_operation(current, operation)
    except ValueError:
        return False
    return len(current) == 1 and current[0] == target


def reward(trace: str, target: int, nums: Sequence[int]) -> float:
    """1.0 for a correct trace, else 0.0 (the published ``compute_score``)."""
    return 1.0 if grade(trace, target, nums) else 0.0
