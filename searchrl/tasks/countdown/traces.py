"""Stream-of-Search traces for Countdown, byte-compatible with the published code.

A trace is the search written out as text, one operation of the search per line
(Stream of Search, Gandhi et al. 2024, Sec. 3; Guided-ReST seed 001: "a search trace
Z = (z_1, ..., z_m), where z_i is a tree search operation")::

    Current State: 42:[86, 43, 44], Operations: []
    Exploring Operation: 86-44=42, Resulting Numbers: [43, 42]
    Generated Node #0,0: 42:[43, 42] Operation: 86-44=42
    Moving to Node #0,0
    ...
    42,42 equal: Goal Reached

Three writers:

* :func:`dfs_trace`: depth-first search; the children of a node are ordered by the
  heuristic (stable sort) and children whose heuristic exceeds the threshold (the
  target) are pruned.
* :func:`bfs_trace`: breadth-first beam search of width 1..5; the kept children of each
  expanded node are shuffled with ``random.shuffle`` on a ``random.Random(seed)`` made
  for this one trace (the golden traces were made with ``random.seed(seed)`` right before
  each search, so the same seed reproduces them).
* :func:`optimal_trace`: the solution written as a trace without backtracking.

The tie-breaking of the published code matters for byte equality: nodes are kept in
``(heuristic, node)`` tuples whose node compares by heuristic only, so equal heuristics
compare as "not less" both ways. ``list.sort`` is therefore a stable sort by heuristic,
and the BFS frontier pops through ``heapq`` with exactly that comparison.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

from .core import HEURISTICS, parse_operation, successors


class _Node:
    """A search node; ordered by heuristic only (ties compare as not-less)."""

    __slots__ = ("idx", "parent", "nums", "operations", "heuristic")

    def __init__(self, idx, parent, nums, operations, heuristic):
        self.idx, self.parent, self.nums = idx, parent, nums
        self.operations, self.heuristic = operations, heuristic

    def __lt__(self, other: _Node) -> bool:
        return self.heuristic < other.heuristic


def _state(target: int, nums, operations) -> str:
    return f"Current State: {target}:{nums}, Operations: {operations}\n"


def dfs_trace(target: int, nums: Sequence[int], heuristic: str = "sum",
              threshold: float | None = None) -> str:
    """Depth-first search trace (published ``countdown_dfs.dfs``; Stream of Search uses
    ``threshold=target``)."""
    h = HEURISTICS[heuristic]
    out: list[str] = []

    def visit(idx: str | int, nums: list[int], ops: list[str]) -> bool:
        out.append(_state(target, nums, ops))
        children = [(h(new_nums, target), new_nums, ops + [op]) for new_nums, op in successors(nums)]
        children = [c for c in children if threshold is None or c[0] <= threshold]
        children.sort(key=lambda c: c[0])  # stable, as the published tuple sort
        for g, (_, cnums, cops) in enumerate(children):
            cidx = f"{idx},{g}"
            out.append(f"Exploring Operation: {cops[-1]}, Resulting Numbers: {cnums}\n")
            if len(cnums) == 1 and cnums[0] == target:
                out.append(f"{cnums[0]},{target} equal: Goal Reached\n")
                return True
            if len(cnums) == 1:
                out.append(f"{cnums[0]},{target} unequal: No Solution\n")
            else:
                out.append(f"Generated Node #{cidx}: {target}:{cnums} Operation: {cops[-1]}\n")
                out.append(f"Moving to Node #{cidx}\n")
                if visit(cidx, cnums, cops):
                    return True
            if g < len(children) - 1:
                out.append(f"Moving to Node #{idx}\n")
                out.append(_state(target, nums, ops))
        return False

    visit(0, [int(n) for n in nums], [])
    return "".join(out)


def bfs_trace(target: int, nums: Sequence[int], beam_width: int, heuristic: str = "sum",
              rng: random.Random | None = None) -> str:
    """Breadth-first beam search trace (published ``countdown_bfs.bfs``)."""
    if not 1 <= beam_width:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    h = HEURISTICS[heuristic]
    rng = rng if rng is not None else random.Random(0)
    nums = [int(n) for n in nums]
    out: list[str] = []
    open_set: list[tuple[float, _Node]] = []
    root_h = h(nums, target)
    heapq.heappush(open_set, (root_h, _Node(0, None, nums, [], root_h)))
    while open_set:
        current = [heapq.heappop(open_set) for _ in range(min(beam_width, len(open_set)))]
        for pos, (_, node) in enumerate(current):
            out.append(_state(target, node.nums, node.operations))
            generated = []
            for new_nums, op in successors(node.nums):
                nh = h(new_nums, target)
                generated.append((nh, _Node(None, node, new_nums, node.operations + [op], nh)))
            generated.sort()
            generated = generated[:beam_width]
            rng.shuffle(generated)
            child_no = 0
            for _, child in generated:
                child.idx = f"{node.idx},{child_no}"
                op = child.operations[-1]
                out.append(f"Exploring Operation: {op}, Resulting Numbers: {child.nums}\n")
                if len(child.nums) == 1 and child.nums[0] == target:
                    out.append(f"{child.nums[0]},{target} equal: Goal Reached\n")
                    return "".join(out)
                if len(child.nums) == 1:
                    out.append(f"{child.nums[0]},{target} unequal: No Solution\n")
                else:
                    out.append(f"Generated Node #{child.idx}: {target}:{child.nums} Operation: {op}\n")
                    child_no += 1
            generated.sort()
            for item in generated:
                if len(item[1].nums) > 1:
                    heapq.heappush(open_set, item)
            if pos < len(current) - 1:
                out.append(f"Moving to Node #{current[pos + 1][1].idx}\n")
        if open_set:
            out.append(f"Moving to Node #{open_set[0][1].idx}\n")
    out.append("Exited\n")
    return "".join(out)


def sos_trace(target: int, nums: Sequence[int], strategy: str = "dfs", heuristic: str = "sum",
              beam_width: int = 1, seed: int = 0) -> str:
    """A Stream-of-Search trace: ``strategy="dfs"`` (pruned at the target, no randomness) or
    ``"bfs"`` (beam ``beam_width``, shuffles with ``random.Random(seed)``)."""
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {sorted(HEURISTICS)}, got {heuristic!r}")
    if strategy == "dfs":
        return dfs_trace(target, nums, heuristic=heuristic, threshold=target)
    if strategy == "bfs":
        return bfs_trace(target, nums, beam_width, heuristic=heuristic, rng=random.Random(seed))
    raise ValueError(f"strategy must be 'dfs' or 'bfs', got {strategy!r}")


def optimal_trace(target: int, nums: Sequence[int], solution: Sequence[str]) -> str:
    """The solution as a trace without backtracking (published ``CountDown.convert_to_path``).

    The operands are removed by value (first occurrence), as the published code does.
    """
    nums = [int(n) for n in nums]
    explored: list[str] = []
    out = [_state(target, nums, explored)]
    depth = 1
    for operation in solution:
        a, op, b, _ = parse_operation(operation)
        result = {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a // b
        nums = list(nums)
        nums.remove(a)
        nums.remove(b)
        nums.append(result)
        out.append(f"Exploring Operation: {operation}, Resulting Numbers: {nums}\n")
        if len(nums) == 1:
            out.append(f"{nums[0]},{target} equal: Goal Reached\n")
        else:
            depth += 1
            name = ",".join(["0"] * depth)
            out.append(f"Generated Node #{name}: {target}:{nums} Operation: {operation}\n")
            out.append(f"Moving to Node #{name}\n")
            explored = explored + [operation]
            out.append(_state(target, nums, explored))
    return "".join(out)
