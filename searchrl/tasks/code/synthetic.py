"""A synthetic code task a tiny model learns on a CPU: small Python functions from a grammar.

Why: ReST-RL's and Guided-ReST's code experiments use 7-8B models on APPS / CodeContests /
LiveCodeBench. Every code method of searchrl must also run end to end here, on models trained
from scratch in minutes, so this module writes a family of problems with the same shape (a
statement, a reference solution, hidden unit tests, reward = fraction of tests passed) that a
1M-parameter model can learn, and whose test split asks for something the training data did not
show: **held-out compositions**.

A problem is a function ``f`` of one argument built from 2 to 4 steps, one line each (so the
line-level actions of the tree searches and of operation-level PPO are the steps):

* ``list`` family, ``f(xs)`` on a list of ints: maps (``add k``, ``sub k``, ``mul k``, ``mod k``,
  ``neg``, ``square``, ``abs``), filters (``keep > k``, ``keep < k``, ``keep even``,
  ``keep odd``, ``drop k``), reorderings (``sort``, ``sort desc``, ``reverse``, ``take k``,
  ``skip k``), and optionally a final reduction (``sum``, ``len``, ``max``, ``min``);
* ``str`` family, ``f(s)`` on a string: ``upper``, ``lower``, ``reverse``, ``double``, ``take k``,
  ``skip k``, ``drop c`` (remove a character), ``swap a b`` (replace), ``add c`` (append), and
  optionally ``len`` or ``count c``;
* ``int`` family, ``f(n)`` on an int: ``add k``, ``sub k``, ``mul k``, ``div k`` (floor),
  ``mod k``, ``neg``, ``square``, ``abs``, ``dist k`` (``abs(n - k)``), ``half if even``.

The statement names the steps (``"f(xs): add 3; keep even; sort desc; sum"``); the reference
solution writes one line per step inside a fenced block. The **composition** of a problem is its
sequence of step kinds without constants (``add; keep-even; sort-desc; sum``). A seeded fraction
of the ordered pairs of kinds is held out: ``valid_unseen`` and ``test_unseen`` problems contain
at least one held-out adjacent pair, every other split none. Problems are unique across splits,
and a problem whose tests all expect the same output (``upper; count d``) is redrawn.

Expected outputs are computed here by a direct Python implementation of each step (trusted code
of ours, never by running the reference solution's text); a response's code runs only in the
sandbox (:mod:`searchrl.tasks.code.sandbox`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..splits import Split, draw_splits

FAMILIES = ("list", "str", "int")
ARG = {"list": "xs", "str": "s", "int": "n"}
LETTERS = "abcde"


@dataclass(frozen=True)
class Op:
    """One step kind: how the statement says it, the line of code, and what it computes.

    ``const`` draws the step's constant (``None``: the step has none); ``say`` and ``code`` are
    format strings over ``k``; ``apply(value, k)`` is the step's effect; ``final`` steps return.
    """

    kind: str
    say: str
    code: str
    apply: Callable[[Any, Any], Any]
    const: Callable[[random.Random], Any] | None = None
    final: bool = False


def _k(lo: int, hi: int) -> Callable[[random.Random], int]:
    return lambda rng: rng.randint(lo, hi)


def _letter(rng: random.Random) -> str:
    return rng.choice(LETTERS)


def _pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(LETTERS, 2)
    return (a, b)


L = "    xs = "
OPS: dict[str, list[Op]] = {
    "list": [
        Op("add", "add {k}", L + "[x + {k} for x in xs]", lambda v, k: [x + k for x in v], _k(1, 9)),
        Op("sub", "sub {k}", L + "[x - {k} for x in xs]", lambda v, k: [x - k for x in v], _k(1, 9)),
        Op("mul", "mul {k}", L + "[x * {k} for x in xs]", lambda v, k: [x * k for x in v], _k(2, 5)),
        Op("mod", "mod {k}", L + "[x % {k} for x in xs]", lambda v, k: [x % k for x in v], _k(2, 5)),
        Op("neg", "neg", L + "[-x for x in xs]", lambda v, k: [-x for x in v]),
        Op("square", "square", L + "[x * x for x in xs]", lambda v, k: [x * x for x in v]),
        Op("abs", "abs", L + "[abs(x) for x in xs]", lambda v, k: [abs(x) for x in v]),
        Op("keep-gt", "keep > {k}", L + "[x for x in xs if x > {k}]", lambda v, k: [x for x in v if x > k], _k(0, 5)),
        Op("keep-lt", "keep < {k}", L + "[x for x in xs if x < {k}]", lambda v, k: [x for x in v if x < k], _k(0, 5)),
        Op("keep-even", "keep even", L + "[x for x in xs if x % 2 == 0]", lambda v, k: [x for x in v if x % 2 == 0]),
        Op("keep-odd", "keep odd", L + "[x for x in xs if x % 2 == 1]", lambda v, k: [x for x in v if x % 2 == 1]),
        Op("drop", "drop {k}", L + "[x for x in xs if x != {k}]", lambda v, k: [x for x in v if x != k], _k(0, 9)),
        Op("sort", "sort", L + "sorted(xs)", lambda v, k: sorted(v)),
        Op("sort-desc", "sort desc", L + "sorted(xs, reverse=True)", lambda v, k: sorted(v, reverse=True)),
        Op("reverse", "reverse", L + "xs[::-1]", lambda v, k: v[::-1]),
        Op("take", "take {k}", L + "xs[:{k}]", lambda v, k: v[:k], _k(1, 4)),
        Op("skip", "skip {k}", L + "xs[{k}:]", lambda v, k: v[k:], _k(1, 3)),
        Op("sum", "sum", "    return sum(xs)", lambda v, k: sum(v), final=True),
        Op("len", "len", "    return len(xs)", lambda v, k: len(v), final=True),
        Op("max", "max", "    return max(xs, default=0)", lambda v, k: max(v, default=0), final=True),
        Op("min", "min", "    return min(xs, default=0)", lambda v, k: min(v, default=0), final=True),
    ],
    "str": [
        Op("upper", "upper", "    s = s.upper()", lambda v, k: v.upper()),
        Op("lower", "lower", "    s = s.lower()", lambda v, k: v.lower()),
        Op("reverse", "reverse", "    s = s[::-1]", lambda v, k: v[::-1]),
        Op("double", "double", "    s = s + s", lambda v, k: v + v),
        Op("take", "take {k}", "    s = s[:{k}]", lambda v, k: v[:k], _k(1, 4)),
        Op("skip", "skip {k}", "    s = s[{k}:]", lambda v, k: v[k:], _k(1, 3)),
        Op("drop", "drop {k}", "    s = s.replace('{k}', '')", lambda v, k: v.replace(k, ""), _letter),
        Op("swap", "swap {k[0]} {k[1]}", "    s = s.replace('{k[0]}', '{k[1]}')", lambda v, k: v.replace(k[0], k[1]),
           _pair),
        Op("add", "add {k}", "    s = s + '{k}'", lambda v, k: v + k, _letter),
        Op("len", "len", "    return len(s)", lambda v, k: len(v), final=True),
        Op("count", "count {k}", "    return s.count('{k}')", lambda v, k: v.count(k), _letter, final=True),
    ],
    "int": [
        Op("add", "add {k}", "    n = n + {k}", lambda v, k: v + k, _k(1, 9)),
        Op("sub", "sub {k}", "    n = n - {k}", lambda v, k: v - k, _k(1, 9)),
        Op("mul", "mul {k}", "    n = n * {k}", lambda v, k: v * k, _k(2, 5)),
        Op("div", "div {k}", "    n = n // {k}", lambda v, k: v // k, _k(2, 5)),
        Op("mod", "mod {k}", "    n = n % {k}", lambda v, k: v % k, _k(2, 9)),
        Op("neg", "neg", "    n = -n", lambda v, k: -v),
        Op("square", "square", "    n = n * n", lambda v, k: v * v),
        Op("abs", "abs", "    n = abs(n)", lambda v, k: abs(v)),
        Op("dist", "dist {k}", "    n = abs(n - {k})", lambda v, k: abs(v - k), _k(1, 9)),
        Op("half-even", "half if even", "    n = n // 2 if n % 2 == 0 else n", lambda v, k: v // 2 if v % 2 == 0 else v),
    ],
}
BY_KIND = {fam: {op.kind: op for op in ops} for fam, ops in OPS.items()}


def random_input(family: str, rng: random.Random) -> Any:
    """One test input of ``family``: a list of 0..6 ints in -9..9, a string of 0..8 letters of
    ``"abcdeABC"``, or an int in -30..30."""
    if family == "list":
        return [rng.randint(-9, 9) for _ in range(rng.randint(0, 6))]
    if family == "str":
        return "".join(rng.choice(LETTERS + "ABC") for _ in range(rng.randint(0, 8)))
    return rng.randint(-30, 30)


def run_steps(family: str, steps: list[tuple[str, Any]], value: Any) -> Any:
    """What ``f`` computes: the steps applied in order (our trusted implementation)."""
    for kind, k in steps:
        value = BY_KIND[family][kind].apply(value, k)
    return value


def statement(family: str, steps: list[tuple[str, Any]]) -> str:
    """The prompt: ``"f(xs): add 3; keep even; sum"``."""
    ops = BY_KIND[family]
    return f"f({ARG[family]}): " + "; ".join(ops[kind].say.format(k=k) for kind, k in steps)


def solution(family: str, steps: list[tuple[str, Any]]) -> str:
    """The reference response: one line per step in a fenced block (``return`` the value when the
    last step is not a final one)."""
    ops = BY_KIND[family]
    lines = [f"def f({ARG[family]}):"] + [ops[kind].code.format(k=k) for kind, k in steps]
    if not ops[steps[-1][0]].final:
        lines.append(f"    return {ARG[family]}")
    return "```python\n" + "\n".join(lines) + "\n```"


def composition(steps: list[tuple[str, Any]]) -> tuple[str, ...]:
    return tuple(kind for kind, _ in steps)


def held_out_pairs(seed: int, fraction: float) -> set[tuple[str, str, str]]:
    """The held-out ``(family, kind_a, kind_b)`` adjacent pairs: a seeded ``fraction`` of each family's
    ordered pairs of non-final kinds (a then b), at least one per family."""
    rng = random.Random(f"held-out-pairs:{seed}")
    out: set[tuple[str, str, str]] = set()
    for fam in FAMILIES:
        kinds = [op.kind for op in OPS[fam] if not op.final]
        pairs = [(fam, a, b) for a in kinds for b in kinds if a != b]
        out.update(rng.sample(pairs, max(1, round(fraction * len(pairs)))))
    return out


def has_held_out(family: str, steps: list[tuple[str, Any]], held: set) -> bool:
    kinds = composition(steps)
    return any((family, a, b) in held for a, b in zip(kinds, kinds[1:]))


def random_steps(family: str, rng: random.Random, min_steps: int, max_steps: int) -> list[tuple[str, Any]]:
    """2..4 steps: non-final kinds, no kind twice in a row, the last one final with probability 1/2
    (in families that have final kinds)."""
    ops = OPS[family]
    body = [op for op in ops if not op.final]
    finals = [op for op in ops if op.final]
    n = rng.randint(min_steps, max_steps)
    steps: list[tuple[str, Any]] = []
    end_final = bool(finals) and rng.random() < 0.5
    for i in range(n):
        pool = finals if (end_final and i == n - 1) else body
        prev = steps[-1][0] if steps else None
        op = rng.choice([o for o in pool if o.kind != prev])
        steps.append((op.kind, op.const(rng) if op.const else None))
    return steps


def make_problem(family: str, steps: list[tuple[str, Any]], rng: random.Random, n_tests: int,
                 n_public: int) -> dict[str, Any]:
    """A problem record: statement, reference solution, ``n_tests`` hidden tests (inputs with distinct
    outputs preferred), of which the first ``n_public`` are public (self-repair feedback)."""
    tests: list[dict[str, Any]] = []
    seen_inputs: set[str] = set()
    for _ in range(50 * n_tests):
        if len(tests) == n_tests:
            break
        x = random_input(family, rng)
        if repr(x) in seen_inputs:
            continue
        seen_inputs.add(repr(x))
        tests.append({"input": x, "output": run_steps(family, steps, x)})
    return {"id": f"{family}:{statement(family, steps)}", "family": family, "statement": statement(family, steps),
            "steps": [[kind, k] for kind, k in steps], "composition": "; ".join(composition(steps)),
            "entry_point": "f", "tests": tests, "public_tests": tests[:n_public], "solution": solution(family, steps)}


def generate(splits: list[Split], seed: int, held_fraction: float = 0.15, min_steps: int = 2, max_steps: int = 4,
             n_tests: int = 8, n_public: int = 2) -> dict[str, list[dict[str, Any]]]:
    """Problems of every split, unique across splits (held-out splits first, then the others in the
    order given, so adding problems to a later split never changes an earlier one)."""
    held = held_out_pairs(seed, held_fraction)

    def draw(rng: random.Random, split: Split, used: set[str]):
        family = rng.choice(FAMILIES)
        steps = random_steps(family, rng, min_steps, max_steps)
        if has_held_out(family, steps, held) != split.unseen:
            return None
        key = statement(family, steps)
        if key in used:
            return None
        problem = make_problem(family, steps, rng, n_tests, n_public)
        if len({repr(t["output"]) for t in problem["tests"]}) < 2:
            return None  # a constant answer would pass every test: not a problem worth its name
        return key, problem

    return draw_splits(splits, lambda split: f"code-synthetic:{seed}:{split.name}", draw)


__all__ = ["FAMILIES", "OPS", "Op", "Split", "generate", "statement", "solution", "run_steps", "held_out_pairs",
           "has_held_out", "random_steps", "make_problem", "composition", "random_input"]
