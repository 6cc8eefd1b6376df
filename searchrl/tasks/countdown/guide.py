"""The Guided-ReST splice: one guidance round on a failed Countdown trace.

Guided-ReST (Moon, Park & Song, NeurIPS 2025; seed 001, "Guided reinforced self-training",
Steps 1-3) progressively integrates the steps of the optimal solution into the model's
own search trace: find the deepest node of the optimal path the trace explored, put the
next solution step (the subgoal) into the trace there, cut the trace right after the
subgoal's state line and let the model continue the search from it.

:func:`guide` reproduces the published ``augment_search_path`` exactly:

1. Locate the optimal-path nodes the trace explored, by exact string matching: the root
   ``Current State`` line, then for each solution step its ``Exploring``/``Generated
   Node`` pair (first occurrence anywhere) and, after it, the ``Moving to Node``/
   ``Current State`` pair of that node. The deepest one found is the parent.
2. No root line: reset to the root line.
3. The next solution step ends the problem: append it and the goal line (no newline).
4. The subgoal child was generated under the parent but not visited: move to it.
5. The parent has no visited children: generate and visit the subgoal as child ``,0``.
6. Otherwise overwrite one visited child (chosen at random) with the subgoal and cut
   everything after its state line.

The returned prefix is to be continued by the model; its trailing newline (when it has
one) is part of the prefix and must not be stripped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .core import apply_operation


@dataclass
class _Node:
    name: str
    nums: list[int]
    operations: list[str]
    gen_start: int
    gen_end: int
    expl_end: int
    expl_start: int = 0


def _gen_lines(operation: str, nums: list[int], target: int, name_re: str) -> str:
    op, ns = re.escape(operation), re.escape(str(nums))
    return (rf"Exploring Operation: {op}, Resulting Numbers: {ns}\n"
            rf"Generated Node #({name_re}): {re.escape(str(target))}:{ns} Operation: {op}\n")


def _state_line(target: int, nums: list[int], operations: list[str]) -> str:
    return f"Current State: {target}:{nums}, Operations: {operations}\n"


def _subgoal_nodes(trace: str, target: int, nums: list[int], solution: Sequence[str]) -> list[_Node]:
    root = trace.find(_state_line(target, nums, []))
    if root < 0:
        return []
    root_line = _state_line(target, nums, [])
    nodes = [_Node("0", nums, [], 0, 0, root + len(root_line), root)]
    operations: list[str] = []
    for operation in solution[:-1]:
        nums = apply_operation(nums, operation)
        operations = operations + [operation]
        gen = re.search(_gen_lines(operation, nums, target, r"\d+(?:,\d+)*"), trace)
        if gen is None:
            break
        name = gen.group(1)
        visit = f"Moving to Node #{name}\n" + _state_line(target, nums, operations)
        at = trace.find(visit, gen.end())
        if at < 0:
            break
        nodes.append(_Node(name, nums, operations, gen.start(), gen.end(), at + len(visit), at))
    return nodes


_CHILD_GEN_RE = (r"Exploring Operation: \d+[-+*/]\d+=\d+, Resulting Numbers: \[.*?\]\n"
                 r"Generated Node #({parent},\d+): \d+:\[.*?\] Operation: \d+[-+*/]\d+=\d+\n")
_VISIT_RE = r"Moving to Node #{name}\nCurrent State: \d+:\[.*?\], Operations: \[.*?\]\n"


def _visited_children(trace: str, parent: _Node) -> list[_Node]:
    """Children of ``parent`` generated after its state line and later visited."""
    children = []
    pattern = re.compile(_CHILD_GEN_RE.format(parent=re.escape(parent.name)))
    for gen in pattern.finditer(trace, parent.expl_end):
        name = gen.group(1)
        visit = re.compile(_VISIT_RE.format(name=re.escape(name))).search(trace, gen.end())
        if visit is None:
            continue
        children.append(_Node(name, [], [], gen.start(), gen.end(), visit.end(), visit.start()))
    return children


def _problem_fields(problem: Mapping[str, Any]) -> tuple[int, list[int], list[str]]:
    info = problem.get("extra_info", problem) if "target" not in problem else problem
    return int(info["target"]), [int(n) for n in info["nums"]], list(info["solution"])


def guide(trace: str, problem: Mapping[str, Any], rng: random.Random | int | None = None) -> str:
    """One Guided-ReST guidance round: the prefix to continue generating from.

    ``problem`` has ``nums``, ``target`` and ``solution`` (or the published layout with
    them under ``extra_info``). ``rng`` (a ``random.Random`` or a seed) picks the child to
    overwrite in case 6; by default a ``random.Random(0)``.
    """
    target, nums, solution = _problem_fields(problem)
    if not solution:
        raise ValueError("guide() needs the problem's solution (a non-empty list of operations)")
    if not isinstance(rng, random.Random):
        rng = random.Random(0 if rng is None else rng)

    nodes = _subgoal_nodes(trace, target, nums, solution)
    if not nodes:
        return _state_line(target, nums, [])
    parent = nodes[-1]
    operation = solution[len(parent.operations)]
    child_nums = apply_operation(parent.nums, operation)
    child_ops = parent.operations + [operation]
    explore = f"Exploring Operation: {operation}, Resulting Numbers: {child_nums}\n"
    state = _state_line(target, child_nums, child_ops)

    if len(child_nums) == 1:
        return trace[: parent.expl_end] + explore + f"{child_nums[0]},{target} equal: Goal Reached"

    generated = re.compile(_gen_lines(operation, child_nums, target, re.escape(parent.name) + r",\d+"))
    gen = generated.search(trace, parent.expl_end)
    if gen is not None:
        return trace[: gen.end()] + f"Moving to Node #{gen.group(1)}\n" + state

    children = _visited_children(trace, parent)
    if not children:
        name = parent.name + ",0"
        return (trace[: parent.expl_end] + explore
                + f"Generated Node #{name}: {target}:{child_nums} Operation: {operation}\n"
                + f"Moving to Node #{name}\n" + state)

    child = rng.choice(children)
    return (trace[: child.gen_start] + explore
            + f"Generated Node #{child.name}: {target}:{child_nums} Operation: {operation}\n"
            + trace[child.gen_end: child.expl_start]
            + f"Moving to Node #{child.name}\n" + state)
