"""Tokenizer helpers every model shares: the chat-template prompt, and the trim fix.

Task vocabularies for models created from scratch live with their tasks (``Task.tokenizer()``,
all built by :func:`searchrl.tasks.vocab.build_phrase_tokenizer`, with its special tokens and chat
template); a model takes such a tokenizer, or its directory's own, as it is.
"""

from __future__ import annotations

import re


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
