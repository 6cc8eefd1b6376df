"""Synthetic multi-step arithmetic word problems a tiny model learns on a CPU.

Why: ReST-MCTS* (seed 002) self-trains on GSM8K / MATH with 7-8B models. Its loop must also run
end to end here on models trained from scratch in minutes, so this module writes word problems
with the same shape (a question, a step-by-step gold solution, a final answer to check) whose
test split asks for something the training data did not show: **held-out compositions**.

A problem is a person's count of things changed by 3 to 6 operations, one sentence each::

    Ann has 7 coins. She gets 5 more. She doubles them. She gives away 4. How many coins does Ann have now?

and its gold solution is one line per operation, then the answer line (so a step of the tree
searches and of the value model is a line)::

    7 + 5 = 12
    12 * 2 = 24
    24 - 4 = 20
    The answer is \\boxed{20}.

Operations: ``add k`` ("gets k more"), ``sub k`` ("gives away k", never below 0), ``mul k``
("gets k times as many", k in 3..5), ``div k`` ("splits them into k equal groups and keeps
one", exact), ``double``, ``half`` (exact). Every value stays in 0..200 (the tokenizer makes each
number one token, so arithmetic is a lookup a tiny model can learn). The **composition** of a
problem is its sequence of operation kinds; a seeded fraction of the ordered pairs of kinds is
held out: ``valid_unseen`` and ``test_unseen`` problems contain at least one held-out adjacent
pair, every other split none. Problems are unique across splits.

Answers are computed by this module's own arithmetic (trusted); a response is only ever read,
never run.
"""

from __future__ import annotations

import random
from typing import Any

from ..splits import Split, draw_splits

MAX_VALUE = 200
NAMES = (("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dev", "He"), ("Eve", "She"), ("Finn", "He"))
ITEMS = ("apples", "coins", "books", "shells", "cards", "stamps")
KINDS = ("add", "sub", "mul", "div", "double", "half")


def _choices(kind: str, a: int) -> list[int | None]:
    """The constants operation ``kind`` may take at value ``a`` (empty: not applicable)."""
    if kind == "add":
        return [k for k in range(1, 21) if a + k <= MAX_VALUE]
    if kind == "sub":
        return list(range(1, min(a, 20) + 1))
    if kind == "mul":
        return [k for k in (3, 4, 5) if a * k <= MAX_VALUE and a > 0]
    if kind == "div":
        return [k for k in (3, 4, 5) if a > 0 and a % k == 0]
    if kind == "double":
        return [None] if 0 < a and 2 * a <= MAX_VALUE else []
    if kind == "half":
        return [None] if a > 0 and a % 2 == 0 else []
    raise ValueError(f"unknown operation {kind!r}")


def apply(kind: str, a: int, k: int | None) -> int:
    """The value after one operation (our trusted arithmetic)."""
    return {"add": lambda: a + k, "sub": lambda: a - k, "mul": lambda: a * k, "div": lambda: a // k,
            "double": lambda: 2 * a, "half": lambda: a // 2}[kind]()


def sentence(kind: str, k: int | None, pronoun: str) -> str:
    return {"add": f"{pronoun} gets {k} more.", "sub": f"{pronoun} gives away {k}.",
            "mul": f"{pronoun} gets {k} times as many.",
            "div": f"{pronoun} splits them into {k} equal groups and keeps one.",
            "double": f"{pronoun} doubles them.", "half": f"{pronoun} gives away half of them."}[kind]


def step_line(kind: str, a: int, k: int | None) -> str:
    """One gold step: ``"12 * 2 = 24"``."""
    op, b = {"add": ("+", k), "sub": ("-", k), "mul": ("*", k), "div": ("/", k), "double": ("*", 2),
             "half": ("/", 2)}[kind]
    return f"{a} {op} {b} = {apply(kind, a, k)}"


def answer_line(value: int) -> str:
    return f"The answer is \\boxed{{{value}}}."


def held_out_pairs(seed: int, fraction: float) -> set[tuple[str, str]]:
    """A seeded ``fraction`` of the ordered pairs of distinct kinds (at least one)."""
    rng = random.Random(f"math-held-out-pairs:{seed}")
    pairs = [(a, b) for a in KINDS for b in KINDS if a != b]
    return set(rng.sample(pairs, max(1, round(fraction * len(pairs)))))


def random_problem(rng: random.Random, min_steps: int, max_steps: int) -> dict[str, Any] | None:
    """One problem (``None`` when the draw got stuck: no operation applies)."""
    name, pronoun = rng.choice(NAMES)
    items = rng.choice(ITEMS)
    start = rng.randint(2, 20)
    n = rng.randint(min_steps, max_steps)
    value, steps, sentences, lines = start, [], [], []
    for _ in range(n):
        prev = steps[-1][0] if steps else None
        options = [(kind, ks) for kind in KINDS if kind != prev and (ks := _choices(kind, value))]
        if not options:
            return None
        kind, ks = rng.choice(options)
        k = rng.choice(ks)
        lines.append(step_line(kind, value, k))
        sentences.append(sentence(kind, k, pronoun))
        value = apply(kind, value, k)
        steps.append((kind, k))
    question = f"{name} has {start} {items}. " + " ".join(sentences) + f" How many {items} does {name} have now?"
    return {"content": question, "answer": str(value), "solution": "\n".join(lines + [answer_line(value)]),
            "steps": [[kind, k] for kind, k in steps], "composition": "; ".join(kind for kind, _ in steps),
            "start": start}


def has_held_out(steps: list, held: set) -> bool:
    kinds = [s[0] for s in steps]
    return any((a, b) in held for a, b in zip(kinds, kinds[1:]))


def generate(splits: list[Split], seed: int, held_fraction: float = 0.15, min_steps: int = 3,
             max_steps: int = 6) -> dict[str, list[dict[str, Any]]]:
    """Problems of every split, unique across splits (held-out splits first, then the others in the
    order given, so adding problems to a later split never changes an earlier one)."""
    held = held_out_pairs(seed, held_fraction)

    def draw(rng: random.Random, split: Split, used: set[str]):
        p = random_problem(rng, min_steps, max_steps)
        if p is None or has_held_out(p["steps"], held) != split.unseen or p["content"] in used:
            return None
        return p["content"], p

    return draw_splits(splits, lambda split: f"math-synthetic:{seed}:{split.name}", draw)


def corrupt_step(line: str, rng: random.Random) -> str:
    """A wrong version of a gold step line (its result off by 1..5, never negative): the corrupted
    steps of the initial value model's data."""
    left, _, result = line.rpartition(" = ")
    value = int(result)
    wrong = [v for v in range(max(0, value - 5), value + 6) if v != value]
    return f"{left} = {rng.choice(wrong)}"


#: fixed phrases of questions and solutions (one token each in the math tokenizer)
PHRASES = ([" has ", " gets ", " more.", " gives away ", " times as many.", " splits them into ",
            " equal groups and keeps one.", " doubles them.", " gives away half of them.", " How many ", " does ",
            " have now?", " + ", " - ", " * ", " / ", " = ", "The answer is \\boxed{", "}.", ". "]
           + [n for n, _ in NAMES] + sorted({p for _, p in NAMES}) + list(ITEMS))

__all__ = ["generate", "Split", "random_problem", "held_out_pairs", "has_held_out", "corrupt_step", "step_line",
           "answer_line", "apply", "KINDS", "PHRASES", "MAX_VALUE"]
