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
  (prompt logprobs of prompt + continuation), ``update_weights``, prefix caching on (tree searches
  share long prefixes).

**Weights in place (the RL loop).** After each update the RL trainer hands the live policy to
``update_weights(policy)``; its weights go into the running engine's model, never through a reload
of a checkpoint: :func:`hf_weights` streams ``(name, tensor)`` pairs under the names of the policy's
HF checkpoint (LoRA adapters merged in, wrappers taken off) into the engine model's ``load_weights``
(vLLM's own checkpoint loader, which maps them onto its fused layers), then ``reset_prefix_cache()``
drops the KV blocks computed with the old weights. This is TRL's colocate weight sync
(``llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights``, then
``llm.reset_prefix_cache()``; verl's hybrid engine does the same through its rollout worker), and
it needs vLLM's engine in this process: the generator sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
unless it is set. Written against vLLM 0.22 to 0.31 (the ``vllm`` extra's pin; the range TRL 1.16
supports with this call). A generator made over a module (:func:`~searchrl.engine.factory.make_generator`
does that) starts from that module's weights, so a resumed RL run samples from the weights it
resumed. ``update_weights(path)`` still reloads an engine from a saved checkpoint.

This machine has no GPU and no vLLM: the translations are unit-tested everywhere with stand-in
output objects; ``tests/test_vllm_backend.py`` runs GRPO and PPO steps on a stand-in with vLLM's
call surface and checks that the engine holds the policy's weights after every update, and runs the
same prompts through our sampler and vLLM wherever vLLM imports (skipped, with the reason printed,
elsewhere); ``benchmarks/vllm_check.py`` (in ``benchmarks/gpu_check.sh``) checks a real engine's
weight sync against a fresh engine on the changed checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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


def _unwrapped(model):
    """``model`` without the wrappers that prefix its parameter names (DDP's ``module``, ``torch.compile``'s
    ``_orig_mod``: a module whose one child has that name)."""
    while len(model._modules) == 1 and next(iter(model._modules)) in ("module", "_orig_mod"):
        model = next(iter(model._modules.values()))
    return model


def hf_weights(model) -> Iterator[tuple[str, Any]]:
    """The weights of an in-memory policy, one ``(name, tensor)`` pair at a time, under the names its saved HF
    checkpoint has: what vLLM's ``model.load_weights`` reads.

    * wrappers that prefix names (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``) are taken off;
    * LoRA layers (peft, as :func:`searchrl.train.adapters.add_lora` injects them: ``x.base_layer.weight``
      and ``x.lora_A/lora_B``) are sent merged, ``W + delta`` of the active adapters under ``x.weight``
      (the layer itself is left as it is); the adapters' own tensors are not sent;
    * tied weights go once (``named_parameters``), then the persistent buffers;
    * sharded parameters (FSDP2's DTensors) are refused: hand over a whole copy, as the RL trainer does
      (:func:`searchrl.train.fsdp.copy_weights`).
    """
    import torch

    model = _unwrapped(model)
    lora = {name: m for name, m in model.named_modules()
            if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer") and hasattr(m, "lora_A")}

    def owner(name: str) -> tuple[str, Any] | None:
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in lora:
                return prefix, lora[prefix]
        return None

    with torch.no_grad():
        for name, p in model.named_parameters():
            if hasattr(p, "full_tensor"):
                raise ValueError(f"{name} is sharded (FSDP): hand update_weights a whole copy of the policy")
            found = owner(name) if lora else None
            if found is None:
                yield name, p.detach()
                continue
            prefix, layer = found
            rest = name[len(prefix) + 1:]
            if not rest.startswith("base_layer."):
                continue  # the adapters themselves (lora_A, lora_B, ...): merged into the weight below
            if rest == "base_layer.weight" and not getattr(layer, "merged", False) \
                    and not getattr(layer, "disable_adapters", False):
                w = p.detach()
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        w = w + layer.get_delta_weight(adapter).to(w.dtype)
                yield f"{prefix}.weight", w
            else:
                yield f"{prefix}.{rest[len('base_layer.'):]}", p.detach()
        for mod_name, mod in model.named_modules():
            for b_name, buf in mod._buffers.items():
                if buf is not None and b_name not in mod._non_persistent_buffers_set:
                    yield (f"{mod_name}.{b_name}" if mod_name else b_name), buf.detach()


class VLLMGenerator:
    """A :class:`~searchrl.engine.generator.Generator` over ``vllm.LLM`` (see the module doc).

    ``model_path``: the saved HF checkpoint the engine starts from; ``source``: the in-memory module it
    samples from instead (its weights are pushed at once, and again by :meth:`update_weights`);
    ``llm_kwargs``: ``vllm.LLM``'s (``max_num_seqs``, ``gpu_memory_utilization``, ``dtype``, ...).
    """

    def __init__(self, model_path: str | os.PathLike, tokenizer=None, *, source=None, **llm_kwargs):
        # the engine in this process, where update_weights reaches its model (vLLM reads this when the engine starts)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.llm_kwargs = {"enable_prefix_caching": True, **llm_kwargs}
        self.path = str(model_path)
        self.llm = LLM(model=self.path, **self.llm_kwargs)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.source = None
        if source is not None:
            self.update_weights(source)

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

    def engine_model(self):
        """The model inside the running engine (vLLM's ``nn.Module``, whose ``load_weights`` reads HF names)."""
        try:
            return self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError:
            raise RuntimeError(
                "vLLM's engine runs in another process, where update_weights cannot reach its model: start it "
                "with VLLM_ENABLE_V1_MULTIPROCESSING=0 (VLLMGenerator sets it unless it is set), on vllm>=0.22,<0.32 "
                "(pip install 'searchrl[vllm]')") from None

    def update_weights(self, model=None) -> None:
        """Sample with ``model``'s weights from now on, pushed into the running engine (see the module doc).

        ``model``: an in-memory policy (an ``nn.Module``: its weights, :func:`hf_weights`, go into the engine's
        model in place, then the prefix cache is reset); ``None``: the module this generator samples from
        again (its new weights), or, for a generator made from a checkpoint alone, that checkpoint reloaded;
        a path: a new engine on that saved checkpoint.
        """
        if model is None:
            model = self.source
        if model is None or isinstance(model, (str, os.PathLike)):
            from vllm import LLM

            del self.llm
            self.path = str(model) if model is not None else self.path
            self.llm = LLM(model=self.path, **self.llm_kwargs)
            self.source = None  # from now on the engine samples that checkpoint
            return
        self.engine_model().load_weights(hf_weights(model))
        self.llm.reset_prefix_cache()  # KV blocks computed with the old weights must not be reused
        self.source = model


__all__ = ["VLLMGenerator", "vllm_sampling_kwargs", "from_vllm_output", "hf_weights"]
