"""``make_generator``: the one place a generation backend is chosen (``engine.backend``).

Callers get a :class:`~searchrl.engine.generator.Generator` and never name a backend, so
adding one (vLLM) touches this file only.
"""

from __future__ import annotations

import os


def make_generator(engine_cfg, model, tokenizer, batch_size: int = 64):
    """A generator over ``model`` as ``engine_cfg.backend`` says (``engine_cfg=None``: the default,
    ``searchrl``; for code below the run config, such as a trainer used on its own).

    ``searchrl``: our continuously batched sampler (static KV cache for Llama-family
    models, the HF forward for others); ``hf``: always the HF model's own forward; ``vllm``:
    vLLM started from the model's saved HF directory, then sampling with the in-memory model's
    weights, which ``update_weights(model)`` pushes into the engine again after each update
    (:mod:`searchrl.engine.vllm_backend`).
    """
    from .sampler import Sampler

    backend = engine_cfg.backend if engine_cfg is not None else "searchrl"
    if backend == "searchrl":
        return Sampler(model, tokenizer, max_batch_size=batch_size, backend="auto")
    if backend == "hf":
        return Sampler(model, tokenizer, max_batch_size=batch_size, backend="hf")
    if backend == "vllm":
        from .vllm_backend import VLLMGenerator

        path = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", "")
        if not path or not os.path.isdir(path):
            raise ValueError("engine.backend=vllm loads the model from its saved HF directory; this model has none "
                             f"(name_or_path={path!r})")
        source = None if isinstance(model, (str, os.PathLike)) else model
        memory = getattr(engine_cfg, "gpu_memory_utilization", 0.9)  # vLLM's default
        return VLLMGenerator(path, tokenizer, source=source, max_num_seqs=batch_size, gpu_memory_utilization=memory)
    raise ValueError(f"engine.backend must be one of searchrl | hf | vllm (searchrl.config.BACKENDS), got {backend!r}")
