"""Tokenizer helpers every task and model share: the chat-template prompt, and the trim fix.

Task vocabularies live with their tasks (the Countdown tokenizer is
:mod:`searchrl.tasks.countdown.tokenizer`, the code tasks' :mod:`searchrl.tasks.code.tokenizer`),
offered to models created from scratch through ``Task.tokenizer()``; both are built by
:func:`build_phrase_tokenizer`.
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


def prompt_for(tokenizer, user: str) -> str:
    """The text a policy sees for a user message: the chat template with the assistant turn opened."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def fix_chat_template_trim(tokenizer) -> bool:
    """Remove ``| trim`` from a chat template (Llama-3.x does ``message['content'] | trim``).

    The published Guided-ReST recipe does this so that a prefix that ends in a newline is
    encoded the same way whether it is the end of the prompt or part of a longer response
    (continuation re-tokenizes consistently). Returns whether anything changed.
    """
    template = tokenizer.chat_template
    if not isinstance(template, str) or "trim" not in template:
        return False
    fixed = re.sub(r"\s*\|\s*trim\b", "", template)
    tokenizer.chat_template = fixed
    return fixed != template
