"""vLLM behind the :class:`~searchrl.engine.generator.Generator` interface (``engine.backend=vllm``).

Why: on GPUs, generation for self-training, evaluation and the searches should run on an engine
researchers already trust. ``pip install 'searchrl[vllm]'``; every caller keeps speaking our
:class:`~searchrl.engine.types.SamplingParams` and ``RequestOutput`` (vLLM-shaped by design), and
this module translates:

* :func:`vllm_sampling_kwargs`: ``n``, ``temperature`` (0 = greedy), ``top_p``, ``max_tokens``,
  ``stop`` (line-level actions: ``"\\n"``), ``include_stop_str_in_output``, ``stop_token_ids``,
  ``ignore_eos`` and ``seed`` as they are (vLLM's per-request seed: reproducible, though its draws
  are not our sampler's), ``logprobs=0`` (the sampled token's own logprob, which every RL loss
  reads) and ``prompt_logprobs=0`` when asked for. vLLM reports raw model logprobs by default
  (``logprobs_mode="raw_logprobs"``), the quantity our sampler reports (temperature 1, raw logits).
* :func:`from_vllm_output`: vLLM's ``RequestOutput`` into ours (the sampled token's logprob taken
  out of each position's dict; ``finish_reason`` ``"stop"`` or ``"length"``).
* :class:`VLLMGenerator`: ``generate`` (prompts as text or token ids), ``score_continuations``
  (prompt logprobs of prompt + continuation), ``update_weights(path)`` (reload from a saved HF
  checkpoint: the on-policy weight sync of the first version), prefix caching on (tree searches
  share long prefixes).

This machine has no GPU and no vLLM: the translations are unit-tested everywhere with stand-in
output objects, and ``tests/test_vllm_backend.py`` runs the same prompts through our sampler and
vLLM wherever vLLM imports (skipped, with the reason printed, elsewhere).
"""

from __future__ import annotations

import os
from typing import Any

from .types import CompletionOutput, ContinuationScore, RequestOutput, SamplingParams


def vllm_sampling_kwargs(p: SamplingParams) -> dict[str, Any]:
    """The keyword arguments of ``vllm.SamplingParams`` equivalent to ours (see the module doc)."""
    kw: dict[str, Any] = {"n": p.n, "temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens,
                          "seed": p.seed, "include_stop_str_in_output": p.include_stop_str_in_output,
                          "ignore_eos": p.ignore_eos, "logprobs": 0}
    if p.stop:
        kw["stop"] = list(p.stop)
    if p.stop_token_ids:
        kw["stop_token_ids"] = list(p.stop_token_ids)
    if p.wants_prompt_logprobs:
        kw["prompt_logprobs"] = 0
    return kw


def _own_logprob(position: Any, token: int) -> float:
    """The logprob of ``token`` in one position of vLLM's logprobs (a dict id -> Logprob, or a float)."""
    if isinstance(position, dict):
        lp = position[token]
        return float(getattr(lp, "logprob", lp))
    return float(position)


def from_vllm_output(out: Any, request_id: int) -> RequestOutput:
    """A vLLM ``RequestOutput`` as ours."""
    completions = []
    for c in out.outputs:
        ids = list(c.token_ids)
        lps = [_own_logprob(pos, t) for pos, t in zip(c.logprobs or [], ids)] if c.logprobs is not None else []
        reason = "length" if c.finish_reason == "length" else "stop"
        completions.append(CompletionOutput(index=c.index, text=c.text, token_ids=ids,
                                            cumulative_logprob=float(c.cumulative_logprob or sum(lps)),
                                            logprobs=lps, finish_reason=reason))
    prompt_ids = list(out.prompt_token_ids)
    prompt_lps = None
    if getattr(out, "prompt_logprobs", None) is not None:
        prompt_lps = [None if pos is None else _own_logprob(pos, t) for pos, t in zip(out.prompt_logprobs, prompt_ids)]
    return RequestOutput(request_id=request_id, prompt=out.prompt or "", prompt_token_ids=prompt_ids,
                         outputs=completions, prompt_logprobs=prompt_lps)


class VLLMGenerator:
    """A :class:`~searchrl.engine.generator.Generator` over ``vllm.LLM`` (see the module doc)."""

    def __init__(self, model_path: str | os.PathLike, tokenizer=None, **llm_kwargs):
        from vllm import LLM

        self.llm_kwargs = {"enable_prefix_caching": True, **llm_kwargs}
        self.path = str(model_path)
        self.llm = LLM(model=self.path, **self.llm_kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()

    @staticmethod
    def _inputs(prompts):
        return [{"prompt_token_ids": list(p)} if not isinstance(p, str) else p for p in prompts]

    def generate(self, prompts, params=None, use_tqdm: bool = False, progress=None) -> list[RequestOutput]:
        from vllm import SamplingParams as VParams

        params = params if params is not None else SamplingParams()
        plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} SamplingParams for {len(prompts)} prompts")
        outs = self.llm.generate(self._inputs(prompts), [VParams(**vllm_sampling_kwargs(p)) for p in plist],
                                 use_tqdm=use_tqdm)
        result = [from_vllm_output(o, i) for i, o in enumerate(outs)]
        if progress is not None:
            progress(sum(len(r.outputs) for r in result))
        return result

    def score_continuations(self, prompts, continuations) -> list[ContinuationScore]:
        def ids(x):
            return list(x) if not isinstance(x, str) else list(self.tokenizer(x, add_special_tokens=False)["input_ids"])

        full, cut = [], []
        for p, c in zip(prompts, continuations):
            pi, ci = ids(p), ids(c)
            full.append(pi + ci)
            cut.append((pi, ci))
        outs = self.generate(full, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=True))
        res = []
        for (pi, ci), o in zip(cut, outs):
            lps = [float(x) for x in (o.prompt_logprobs or [])[len(pi):len(pi) + len(ci)]]
            res.append(ContinuationScore(prompt_token_ids=pi, token_ids=ci, logprobs=lps, sum_logprob=sum(lps)))
        return res

    def update_weights(self, model=None) -> None:
        """Reload from a saved HF checkpoint: ``model`` is its directory (default: the current one)."""
        path = str(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", None)
        from vllm import LLM

        del self.llm
        self.path = path or self.path
        self.llm = LLM(model=self.path, **self.llm_kwargs)


__all__ = ["VLLMGenerator", "vllm_sampling_kwargs", "from_vllm_output"]
