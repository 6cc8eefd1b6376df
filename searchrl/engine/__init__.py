"""Generation: many completions from a causal LM behind a vLLM-shaped interface.

``Sampler(model, tokenizer).generate(prompts, SamplingParams(...))`` returns
``RequestOutput`` objects like ``vllm.LLM.generate``. Llama-family models run on a
static-KV-cache, continuously batched decoder (:mod:`searchrl.engine.llama`) with
a prefix cache across calls (:mod:`searchrl.engine.prefix_cache`); other
architectures fall back to the HF model's own forward. See
:mod:`searchrl.engine.sampler` for why and for the output conventions, and
:mod:`searchrl.engine.generator` for the protocol callers program against.
"""

from .generator import Generator
from .sampler import CompletionOutput, ContinuationScore, RequestOutput, Sampler, SamplingParams

__all__ = ["SamplingParams", "CompletionOutput", "RequestOutput", "ContinuationScore", "Sampler", "Generator"]
