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
result is a ``transformers.PreTrainedTokenizerFast`` with BOS/EOS/PAD/UNK and a chat
template (``<|user|>...<|assistant|>...<|eos|>``) and is saved with every checkpoint.
"""

from __future__ import annotations

import re

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

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
SPECIAL = {"pad": "<|pad|>", "bos": "<|bos|>", "eos": "<|eos|>", "unk": "<|unk|>"}
ROLES = ["<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}"
    "{% if not loop.last or not continue_final_message|default(false) %}{{ eos_token }}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_countdown_tokenizer(number_digits: int = 0) -> PreTrainedTokenizerFast:
    """The Countdown tokenizer; ``number_digits`` as in the module doc."""
    if not 0 <= number_digits <= 4:
        raise ValueError(f"number_digits must be in 0..4, got {number_digits}")
    vocab: dict[str, int] = {}
    for tok in [SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["unk"], *ROLES, *PHRASES, *CHARS]:
        vocab.setdefault(tok, len(vocab))
    if number_digits:
        for i in range(10 ** number_digits):
            vocab.setdefault(str(i), len(vocab))
    alternatives = [re.escape(p) for p in sorted(PHRASES, key=len, reverse=True)]
    if number_digits:
        alternatives.append(rf"(?<![0-9])[0-9]{{1,{number_digits}}}(?![0-9])")
    alternatives.append(r"[\s\S]")
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(alternatives)), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"], pad_token=SPECIAL["pad"], unk_token=SPECIAL["unk"],
        additional_special_tokens=ROLES, clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast
