"""Generation: many completions from a causal LM behind a vLLM-shaped interface.

``Sampler(model, tokenizer).generate(prompts, SamplingParams(...))`` returns
``RequestOutput`` objects like ``vllm.LLM.generate``. Llama-family models run on a
static-KV-cache, continuously batched decoder (:mod:`searchrl.engine.llama`);
other architectures fall back to the HF model's own forward. See
:mod:`searchrl.engine.sampler` for why and for the output conventions.
"""

from .sampler import CompletionOutput, RequestOutput, Sampler, SamplingParams

__all__ = ["SamplingParams", "CompletionOutput", "RequestOutput", "Sampler"]
