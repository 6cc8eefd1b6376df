"""Tokenizer helpers every task and model share: the chat-template prompt, and the trim fix.

Task vocabularies live with their tasks (the Countdown tokenizer is
:mod:`searchrl.tasks.countdown.tokenizer`), offered to models created from scratch through
``Task.tokenizer()``.
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
