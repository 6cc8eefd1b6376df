"""Countdown arithmetic: successor generation, exhaustive solver, heuristics, operations.

Countdown (Stream of Search, Gandhi et al. 2024; Guided-ReST, Moon et al. 2025): combine
the starting numbers with + - * / (each number used once, only non-negative integer
intermediate results) to reach the target.

The enumeration order here is the published one and everything downstream depends on
it (the solution stored with a problem, the node numbering in the search traces):

* pairs ``(i, j)`` of positions in ``itertools.combinations`` order;
* for a pair ``(a, b)``: ``a+b``, ``a*b``, then larger-minus-smaller, then
  larger/smaller only when it divides exactly; ``+`` and ``*`` keep the pair's order,
  ``-`` and ``/`` write the larger operand first;
* the numbers not used keep their order and the result goes last.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

OP_RE = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


def combine_nums(a: int, b: int) -> list[tuple[int, str]]:
    """The children of combining ``a`` (earlier position) and ``b``, in published order."""
    out = [(a + b, f"{a}+{b}={a + b}"), (a * b, f"{a}*{b}={a * b}")]
    hi, lo = (b, a) if a <= b else (a, b)
    out.append((hi - lo, f"{hi}-{lo}={hi - lo}"))
    if lo != 0 and hi % lo == 0:
        out.append((hi // lo, f"{hi}/{lo}={hi // lo}"))
    return out


def successors(nums: Sequence[int]) -> list[tuple[list[int], str]]:
    """All ``(new_nums, operation)`` children of a state, in enumeration order."""
    out = []
    for i, j in itertools.combinations(range(len(nums)), 2):
        rest = [nums[k] for k in range(len(nums)) if k != i and k != j]
        for result, op in combine_nums(nums[i], nums[j]):
            out.append((rest + [result], op))
    return out


def solve(target: int, nums: Sequence[int]) -> list[str] | None:
    """The first solution of the exhaustive depth-first search, or ``None``.

    Same result as the published ``CountDown.search``: the first leaf (one number left)
    equal to the target in the enumeration order of :func:`successors`.
    """
    nums = [int(n) for n in nums]
    if len(nums) == 1:
        return [] if nums[0] == target else None
    for new_nums, op in successors(nums):
        rest = solve(target, new_nums)
        if rest is not None:
            return [op] + rest
    return None


def sum_heuristic(nums: Sequence[int], target: int) -> float:
    """Mean distance of the numbers to the target (a single number: its distance)."""
    if len(nums) == 1:
        return abs(nums[0] - target)
    return sum(abs(num - target) for num in nums) / len(nums)


def mult_heuristic(nums: Sequence[int], target: int) -> int:
    """Summed distance of each number to the nearest factor (>= 2) of the target."""
    factors = [i for i in range(2, target + 1) if target % i == 0]
    return sum([min(abs(num - factor) for factor in factors) for num in nums])


HEURISTICS = {"sum": sum_heuristic, "mult": mult_heuristic}


def parse_operation(operation: str) -> tuple[int, str, int, int]:
    """``"a?b=c"`` -> ``(a, op, b, c)``; raises ``ValueError`` when it does not parse.

    Like the published grader this matches at the start of the string (``re.match``).
    """
    if not isinstance(operation, str):
        raise ValueError(f"operation must be a string, got {type(operation).__name__}")
    m = OP_RE.match(operation)
    if not m:
        raise ValueError(f"invalid operation: {operation!r}")
    return int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))


def arithmetic_ok(a: int, op: str, b: int, c: int) -> bool:
    """Exact check of ``a op b == c`` with integers only (no floats, no eval)."""
    if op == "+":
        return a + b == c
    if op == "-":
        return a - b == c
    if op == "*":
        return a * b == c
    return b != 0 and a == b * c  # op == "/": true division must give exactly c


def apply_operation(nums: Sequence[int], operation: str) -> list[int]:
    """Apply ``"a?b=c"`` to ``nums``: remove one occurrence of ``a`` and of ``b``, append ``c``.

    Raises ``ValueError`` for unparsable operations, wrong arithmetic (checked exactly) or
    operands not available. These are the semantics of the published Guided-ReST
    ``apply_operation`` with the ``eval`` replaced by integer arithmetic.
    """
    a, op, b, c = parse_operation(operation)
    if not arithmetic_ok(a, op, b, c):
        raise ValueError(f"wrong arithmetic: {operation!r}")
    new_nums = list(nums)
    new_nums.remove(a)
    new_nums.remove(b)
    new_nums.append(c)
    return new_nums
