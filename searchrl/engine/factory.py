"""``make_generator``: the one place a generation backend is chosen (``engine.backend``).

Callers get a :class:`~searchrl.engine.generator.Generator` and never name a backend, so
adding one (vLLM) touches this file only.
"""

from __future__ import annotations

def make_generator(engine_cfg, model, tokenizer, batch_size: int = 64):
    """A generator over ``model`` as ``engine_cfg.backend`` says.

    ``searchrl``: our continuously batched sampler (static KV cache for Llama-family
    models, the HF forward for others); ``hf``: always the HF model's own forward.
    """
    from .sampler import Sampler

    backend = engine_cfg.backend
    if backend == "searchrl":
        return Sampler(model, tokenizer, max_batch_size=batch_size, backend="auto")
    if backend == "hf":
        return Sampler(model, tokenizer, max_batch_size=batch_size, backend="hf")
    raise ValueError(f"engine.backend must be one of searchrl | hf (searchrl.config.BACKENDS), got {backend!r}")
