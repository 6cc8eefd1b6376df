"""The vocabularies of tasks for models created from scratch: one phrase-tokenizer builder.

Why: a tiny model trained on this CPU learns a task's text far faster when the fixed pieces of
that text are single tokens and the vocabulary is small, so each task that serves models from
scratch brings its own tokenizer (``Task.tokenizer()``: Countdown's
:mod:`searchrl.tasks.countdown.tokenizer`, the code tasks' :mod:`searchrl.tasks.code.tokenizer`,
the math task's in :mod:`searchrl.tasks.math`). They differ only in their phrases, characters and
number tokens; :func:`build_phrase_tokenizer` makes all of them. It lives with the tasks, so a task
never imports ``searchrl.models`` (tasks and models are one layer, and neither depends on the other);
a model takes the task's tokenizer as it is.

The special tokens, the role tokens and the chat template (``<|user|>...<|assistant|>...<|eos|>``)
are those of every such tokenizer; they are saved with every checkpoint, so vLLM, TRL and
transformers read them from the model directory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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


def build_phrase_tokenizer(phrases: Sequence[str], chars: Sequence[str], extra_tokens: Sequence[str] = (),
                           extra_patterns: Sequence[str] = ()):
    """A word-level tokenizer for models trained from scratch on one task's text.

    The vocabulary is the special tokens, the two role tokens, ``phrases`` (each one token),
    ``chars`` (single characters: include every printable ASCII character so any ASCII text
    round-trips) and ``extra_tokens``. Text is cut by one regex: the longest phrase first, then
    ``extra_patterns`` (e.g. whole numbers), then any single character; decoding concatenates, so
    ``decode(encode(t)) == t`` for text made of the vocabulary's characters (others map to
    ``<|unk|>``). Returns a ``PreTrainedTokenizerFast`` with BOS/EOS/PAD/UNK, left padding and
    the chat template ``<|user|>...<|assistant|>...<|eos|>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in [SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["unk"], *ROLES, *phrases, *chars,
                *extra_tokens]:
        vocab.setdefault(tok, len(vocab))
    alternatives = [re.escape(p) for p in sorted(phrases, key=len, reverse=True)]
    alternatives += list(extra_patterns)
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


__all__ = ["build_phrase_tokenizer", "SPECIAL", "ROLES", "CHAT_TEMPLATE"]
