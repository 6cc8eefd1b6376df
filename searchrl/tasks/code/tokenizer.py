"""The code tasks' tokenizer for models created from scratch (no download).

Why: as for Countdown, a tiny model trained on this CPU learns far faster when the fixed pieces
of its text are single tokens. The phrases below are the Python the synthetic task's solutions
are made of (:mod:`searchrl.tasks.code.synthetic`) and the words of its statements; every other
printable ASCII character (and tab) is a token of its own, so any ASCII program round-trips
exactly (a HumanEval prompt too, one character a token). No phrase holds a newline except at its
end, so a line of code is one action for the line-level MDP and the tree searches (a token that
contains ``"\\n"`` ends an action, :func:`searchrl.train.advantages.action_starts`).
"""

from __future__ import annotations

from ..vocab import build_phrase_tokenizer

PHRASES = [
    "```python\n", "```", "def f(", "):\n", "    ", "return ", " for x in xs", "[x", " if x ", " % 2 == ",
    "sorted(", ", reverse=True)", "[::-1]", ".replace(", ".upper()", ".lower()", ".count(", " = ", "abs(",
    "max(", "min(", "sum(", "len(", ", default=0)", "xs", " else ", "keep ", "sort desc", "half if even",
    "f(xs): ", "f(s): ", "f(n): ", "; ", "even", "odd", "square", "reverse", "double", "swap ", "drop ",
    "take ", "skip ", "add ", "sub ", "mul ", "mod ", "div ", "dist ",
]
CHARS = ["\n", "\t"] + [chr(c) for c in range(32, 127)]


def build_code_tokenizer(repair: bool = False):
    """The code tokenizer (see the module doc); ``repair=True`` adds the fixed phrases of the
    self-repair feedback (:data:`searchrl.tasks.code.repair.PHRASES`) after the others, so models made
    without them keep their vocabulary."""
    if repair:
        from .repair import PHRASES as FEEDBACK

        return build_phrase_tokenizer(PHRASES + [p for p in FEEDBACK if p not in PHRASES], CHARS)
    return build_phrase_tokenizer(PHRASES, CHARS)


__all__ = ["build_code_tokenizer", "PHRASES", "CHARS"]
