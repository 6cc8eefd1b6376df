"""The Countdown tokenizer, built locally with ``tokenizers`` (no download).

Why a tokenizer of our own: the tiny models trained from scratch on this machine learn
far faster when every fixed phrase of the search-trace format is one token (the format
is learned in minutes) and the vocabulary is small. Numbers are the hard part, so how
they are split is a setting:

* ``number_digits=0``: every digit is a token (40 tokens cover the trace format; the rest
  of printable ASCII adds 72 single-character tokens so that every ASCII text round-trips).
  3-number traces have a median near 270 tokens.
* ``number_digits=D``: every number with at most D digits is one token (``0..10**D-1``);
  longer numbers fall back to digits. Arithmetic becomes a lookup the embedding can
  memorise, and traces get shorter.

Pieces are cut by one regex (phrases first, then numbers, then any single character),
decoded by plain concatenation, so ``decode(encode(t)) == t`` for every ASCII text
(characters outside printable ASCII and newline map to ``<|unk|>``). The
result (built by :func:`searchrl.tasks.vocab.build_phrase_tokenizer`, which the other tasks
share) is a ``transformers.PreTrainedTokenizerFast`` with BOS/EOS/PAD/UNK and a chat
template (``<|user|>...<|assistant|>...<|eos|>``) and is saved with every checkpoint.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from ..vocab import CHAT_TEMPLATE, ROLES, SPECIAL, build_phrase_tokenizer

#: Fixed phrases of the Stream-of-Search trace format, each a single token.
PHRASES = [
    "Current State: ", ", Operations: ", "Exploring Operation: ", ", Resulting Numbers: ",
    "Generated Node #", " Operation: ", "Moving to Node #", " equal: Goal Reached",
    " unequal: No Solution", "Exited", ", ",
]
#: Single characters: those of the trace format first, then the rest of printable ASCII, so
#: that any ASCII text (a mutated or garbled trace, a model's mistakes) round-trips exactly.
CHARS = list("0123456789[],: '+-*/=#\n")
CHARS += [chr(c) for c in range(32, 127) if chr(c) not in CHARS]


def build_countdown_tokenizer(number_digits: int = 0) -> PreTrainedTokenizerFast:
    """The Countdown tokenizer; ``number_digits`` as in the module doc."""
    if not 0 <= number_digits <= 4:
        raise ValueError(f"number_digits must be in 0..4, got {number_digits}")
    numbers = [str(i) for i in range(10 ** number_digits)] if number_digits else []
    patterns = [rf"(?<![0-9])[0-9]{{1,{number_digits}}}(?![0-9])"] if number_digits else []
    return build_phrase_tokenizer(PHRASES, CHARS, extra_tokens=numbers, extra_patterns=patterns)


__all__ = ["build_countdown_tokenizer", "PHRASES", "CHARS", "CHAT_TEMPLATE", "SPECIAL", "ROLES"]
