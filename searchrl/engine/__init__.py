"""Generation: many completions from a causal LM behind a vLLM-shaped interface.

``Sampler(model, tokenizer).generate(prompts, SamplingParams(...))`` returns
``RequestOutput`` objects like ``vllm.LLM.generate``. Llama-family models run on a
static-KV-cache, continuously batched decoder (:mod:`searchrl.engine.llama`) with
a prefix cache across calls (:mod:`searchrl.engine.prefix_cache`); other
architectures fall back to the HF model's own forward. See
:mod:`searchrl.engine.sampler` for why and for the output conventions, and
:mod:`searchrl.engine.generator` for the protocol callers program against.

The API types (:mod:`searchrl.engine.types`) and the protocol import no torch; ``Sampler``
is imported on first use, so importing this package stays light.
"""

from __future__ import annotations

import importlib

from .generator import Generator
from .types import CompletionOutput, ContinuationScore, RequestOutput, SamplingParams

_LAZY = {"Sampler": "sampler"}  # name -> module: these import torch


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"searchrl.engine.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'searchrl.engine' has no attribute {name!r}")


__all__ = ["SamplingParams", "CompletionOutput", "RequestOutput", "ContinuationScore", "Sampler", "Generator"]
