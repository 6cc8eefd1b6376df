"""Where actions end in a token sequence: the one rule every search, value model and verifier uses.

An action ends with the first token whose text contains the task's stop string (a line for every
task so far), so a BPE token holding ``"\\n"`` in its middle still ends it (the Guided-ReST code's
rule); EOS ends one too. A state is **finished** when its last token is EOS or it reached the
length limit. The searches (:mod:`searchrl.search.common` re-exports this), the value-data
pipeline and the off-the-shelf verifiers (:mod:`searchrl.models.verifiers`) all split with
:class:`ActionSplitter`, so a step is the same span everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence


def eos_ids(tokenizer) -> set[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple, set)) else {int(eos)}


class ActionSplitter:
    """Where actions end in a token sequence (see the module docs)."""

    def __init__(self, tokenizer, stop: str = "\n", max_tokens: int | None = None):
        self.tokenizer, self.stop, self.max_tokens = tokenizer, stop, max_tokens
        self.eos = eos_ids(tokenizer)
        self._ends: dict[int, bool] = {}

    def ends_action(self, token: int) -> bool:
        """True when ``token`` ends an action: EOS, or its text contains the stop string."""
        hit = self._ends.get(token)
        if hit is None:
            hit = token in self.eos or self.stop in self.tokenizer.decode([token], skip_special_tokens=False)
            self._ends[token] = hit
        return hit

    def first_action(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` form the first action (all of them when none ends one)."""
        for i, t in enumerate(ids):
            if self.ends_action(int(t)):
                return i + 1
        return len(ids)

    def actions(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """``[(start, end)]`` of every action of ``ids`` (the last may be unfinished)."""
        out, start = [], 0
        while start < len(ids):
            end = start + self.first_action(ids[start:])
            out.append((start, end))
            start = end
        return out

    def finished(self, ids: Sequence[int]) -> bool:
        """True when a state is a complete response: it ends with EOS, or reached ``max_tokens``."""
        return bool(ids) and (int(ids[-1]) in self.eos or (self.max_tokens is not None and len(ids) >= self.max_tokens))
