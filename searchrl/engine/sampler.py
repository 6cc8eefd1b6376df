"""Sampling many completions from a small causal LM, fast, behind a vLLM-shaped API.

Why this exists
---------------
Search and self-training (ReST, MCTS, value-guided search) sample *thousands* of
short completions per iteration, often one line at a time (stop string ``"\n"``),
and they end at very different lengths. ``model.generate()`` in transformers runs
one static batch at a time: every row keeps being computed until the longest row
of its batch is done, prompts are padded to the longest prompt, and a batch
cannot mix per-request ``max_tokens``, stop strings, seeds or ``n``.

So the :class:`Sampler` keeps a fixed set of ``max_batch_size`` *rows*, each with
its own slot in a preallocated KV cache (see :mod:`searchrl.engine.llama`):

* **Continuous batching.** The work is a queue of ``(request, sample index)``
  items. All occupied rows advance together, one token per step, each at its own
  position. The moment a row finishes (EOS, stop string, ``max_tokens``) it is
  refilled with the next waiting item, so short completions never wait for long
  ones and the batch stays full until the queue drains. When it drains, the
  remaining rows are packed to the front so a step only computes live rows.
* **Static cache.** One ``[rows, kv_heads, max_seq_len, head_dim]`` tensor per
  layer, written in place; an attention mask ``key_pos <= row_pos`` lets rows at
  different positions share a step.
* **Shared prefill.** A prompt is run once; its K/V are copied into the rows of
  all its ``n`` samples (and kept until the last of them has started).
* **Prefix cache** (:mod:`searchrl.engine.prefix_cache`, on by default). Tree
  search extends a text one line at a time and sends the whole path again each
  time: without a cache, prefill was two thirds of the work. K/V of prompts and
  of finished samples (prompt + completion) are kept across calls, keyed by
  token ids; a prompt then only computes its new suffix, its queries attending
  to the cached K/V. A prompt cached but for its last token (a repeat, or the
  previous prompt + completion) costs no prefill at all: its row gets the cached
  K/V, usually by being the very row its previous completion finished in
  (nothing copied), and the next decode step feeds the last token. Completions
  are cached for requests with stop strings (text generated piece by piece)
  unless they ended with EOS: whole solutions are rarely continued, and copying
  their K/V would only cost. The cache is dropped when the weights change.
* **Per-sample randomness.** Sample ``j`` of a request draws its uniforms from its
  own ``torch.Generator`` seeded from ``(params.seed, j)`` (CPU generator, drawn
  once when the sample starts) and turns them into tokens by inverse-CDF sampling.
  Its tokens therefore do not depend on which other samples share the batch or in
  what order work is scheduled (up to floating-point differences in the logits,
  which can only matter at near-ties).
* **Attention per row.** On CPU in float32 the decode step's attention is a
  compiled kernel (:mod:`searchrl.engine.kernels`) that walks each row over
  exactly its own length; elsewhere it is torch's SDPA over the longest row.

What it buys is measured by ``benchmarks/sampler.py``, side by side with transformers'
``generate()`` on the same model and prompts (its JSON line, and the README's benchmarks section,
hold the figures): on the eos workload continuous batching, the static cache and the attention
kernel each count; on equal-length work both are bound by the same small matmuls; on the tree
workload the prefix cache removes most of the prefill. Its other job is the interface:
per-request sampling settings, stop strings, ``n`` samples, logprobs, prompt logprobs and scoring
of given continuations (:meth:`Sampler.score_continuations`).

Models other than Llama/Qwen2/Mistral (or with sequence-length-dependent RoPE, or
sliding-window attention that would actually slide) use a slower but correct
fallback: the HF model's own ``forward`` with its own cache, static batches of
``max_batch_size`` samples, left padding. Same outputs, same API.

Where the parts live
--------------------
This module holds the :class:`Sampler` (encoding, backend choice, the static engine and its
prefix cache across calls, scoring); it delegates to

* :mod:`searchrl.engine.types`: the vLLM-shaped API types (torch-free);
* :mod:`searchrl.engine.sequence`: per-sample bookkeeping (tokens, text, stop rules, seeds)
  and the per-row sampling settings both backends share;
* :mod:`searchrl.engine.batch`: the continuous batch over the static cache, and the
  prefix-cached prefill;
* :mod:`searchrl.engine.hf_backend`: the fallback through the HF model's own forward.

Output conventions (vLLM's defaults)
------------------------------------
* ``token_ids`` are all sampled tokens, including the EOS or the token that
  completed a stop string; ``text`` is their incremental detokenisation (with the
  last few prompt tokens as context, so a continuation mid-word decodes right),
  without EOS, and cut *before* the first stop string found in the generated text
  (or after it with ``include_stop_str_in_output``).
* ``logprobs[i]`` is the **model** log-probability of ``token_ids[i]``:
  ``log_softmax`` of the raw logits at temperature 1, before temperature and
  top-p (what policy-gradient losses need). ``cumulative_logprob`` is their sum.
* ``finish_reason`` is ``"stop"`` (EOS, stop token id or stop string) or
  ``"length"`` (``max_tokens`` reached, or the cache length ``max_seq_len``).
* ``prompt_logprobs`` (with ``SamplingParams.prompt_logprobs``): ``None`` for the
  first prompt token, then each token's model logprob given the ones before, as
  for ``logprobs``. The prefix cache stores a logprob per cached token where it
  is known (generated tokens always; prompt tokens once computed for such a
  request or a scoring call) and serves them; where one is unknown the prompt is
  recomputed from the token before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .batch import ContinuousBatch, cached_prefill, first_chunk
from .hf_backend import HFBackend
from .llama import StaticLlama, check_attention_mode, unsupported_reason
from .prefix_cache import PrefixCache
from .sequence import Seq, text_decoder
from .types import ContinuationScore, RequestOutput, SamplingParams

__all__ = ["Sampler"]


class _Callback:
    """A progress callback in the shape of a tqdm bar (``update(n)``, ``close()``)."""

    def __init__(self, fn: Callable[[int], Any]):
        self.update, self.close = fn, lambda: None


class Sampler:
    """Generate completions for many prompts with continuous batching (see module docs).

    ``model``: a loaded HF causal LM (``eval()`` mode is set for the fallback path).
    ``tokenizer``: its (fast) tokenizer. ``max_batch_size``: rows decoded together.
    ``max_seq_len``: cache length per row (prompt + completion); by default it is
    sized per :meth:`generate` call from the longest prompt plus ``max_tokens``.
    ``device``/``dtype``: where and in what precision the fast path computes
    (default: the model's). ``backend``: ``"auto"`` (static cache when the
    architecture is supported), ``"static"`` (require it) or ``"hf"`` (fallback).
    ``attention`` (static path's decode step): ``"auto"`` (the compiled kernel of
    :mod:`searchrl.engine.kernels` on CPU float32 when it builds, else SDPA),
    ``"kernel"`` (require it) or ``"sdpa"``.
    ``prefix_cache`` (static path): keep the K/V of prompts and finished samples
    across calls and prefill only what is new (:mod:`searchrl.engine.prefix_cache`),
    within an LRU budget of ``prefix_cache_tokens`` tokens (default: 2**18, or
    fewer if that would take more than 1 GiB; see :meth:`prefix_cache_bytes_per_token`).

    The fast path keeps a fused copy of the weights and re-reads it at a
    :meth:`generate` call whenever a parameter changed (storage or in-place
    version counter), so a model trained in place between calls is picked up;
    the prefix cache is dropped then (and by :meth:`update_weights`). Not every
    in-place update is seen: torch's fused AdamW (which the trainer core uses
    where it exists, CPU included) writes the weights without bumping their
    version counters, so a trainer calls :meth:`update_weights` after its steps.

    ``stats`` counts, over the sampler's life, prompt tokens computed
    (``prefill_tokens``: by a prefill, once per request; a prompt cached but for
    its last token has that token fed by a decode step, once per sample) and
    prompt tokens taken from the prefix cache instead (``cached_tokens``).
    """

    DEFAULT_CACHE_TOKENS = 1 << 18
    DEFAULT_CACHE_BYTES = 1 << 30

    def __init__(self, model, tokenizer, max_batch_size: int = 64, max_seq_len: int | None = None, device=None,
                 dtype=None, backend: str = "auto", attention: str = "auto", prefix_cache: bool = True,
                 prefix_cache_tokens: int | None = None):
        if backend not in ("auto", "static", "hf"):
            raise ValueError(f"backend must be auto|static|hf, got {backend!r}")
        check_attention_mode(attention)
        if prefix_cache_tokens is not None and prefix_cache_tokens < 0:
            raise ValueError(f"prefix_cache_tokens must be >= 0, got {prefix_cache_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = int(max_batch_size)
        self.max_seq_len = max_seq_len
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype
        self.backend = backend
        self.attention = attention
        self.prefix_cache = bool(prefix_cache)
        self.prefix_cache_tokens = prefix_cache_tokens
        eos: set[int] = set()
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            eos.update(int(e) for e in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]))
        self.eos_token_ids = eos
        self._static: StaticLlama | None = None
        self._cache: PrefixCache | None = None
        self.stats = {"prefill_tokens": 0, "cached_tokens": 0}
        self.last_backend: str | None = None  # which path the last generate() used

    # ------------------------------------------------------------------ public
    def generate(self, prompts: list[str] | list[list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False, progress: Callable[[int], Any] | None = None) -> list[RequestOutput]:
        """Complete every prompt ``params.n`` times; one :class:`RequestOutput` per prompt, in order.

        ``prompts``: strings (encoded as-is, no special tokens added) or token id
        lists. ``params``: one :class:`SamplingParams` for all, or one per prompt.
        ``use_tqdm``: a progress bar of samples. ``progress``: called with 1 as each sample
        finishes (the caller's own bar, e.g. ``bar.update``; vLLM's callable ``use_tqdm`` is a
        bar factory instead, so this is a keyword of its own).
        """
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = params if params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        texts, ids = self._encode(prompts)
        for i, t in enumerate(ids):
            if not t:
                raise ValueError(f"prompt {i} is empty after tokenisation")
        decode = text_decoder(self.tokenizer)
        seqs = [[Seq(r, j, params[r], ids[r], self.eos_token_ids, decode) for j in range(params[r].n)]
                for r in range(len(ids))]
        prompt_lps: dict[int, list[float]] = {}
        if seqs:
            need = max(len(ids[r]) + params[r].max_tokens for r in range(len(ids)))
            bar = None
            if progress is not None:
                bar = _Callback(progress)
            elif use_tqdm:
                from tqdm.auto import tqdm

                bar = tqdm(total=sum(len(s) for s in seqs), desc="sampling", unit="sample")
            if self._use_static(need):
                self.last_backend = "static"
                prompt_lps = self._run_static(seqs, need, bar)
            else:
                self.last_backend = "hf"
                hf = self._hf()
                hf.run(seqs, bar)
                want = [r for r in range(len(ids)) if params[r].wants_prompt_logprobs]
                prompt_lps = dict(zip(want, hf.token_logprobs([ids[r] for r in want])))
            if bar is not None:
                bar.close()
        return [
            RequestOutput(request_id=r, prompt=texts[r], prompt_token_ids=ids[r], outputs=[s.output() for s in seqs[r]],
                          prompt_logprobs=[None, *prompt_lps[r]] if r in prompt_lps else None)
            for r in range(len(ids))
        ]

    def score_continuations(self, prompts: list[str] | list[list[int]],
                            continuations: list[str] | list[list[int]]) -> list[ContinuationScore]:
        """Model logprob of each continuation token given its prompt and the continuation tokens before it.

        Pairs ``prompts[i]`` with ``continuations[i]``; each is a string or a list of
        token ids. A string continuation is tokenised in context: the tokens of
        ``prompt + continuation`` after the prompt's own tokens when those are a
        prefix of them (so a merge across the boundary cannot happen); otherwise
        (the tokeniser merged across the boundary) the continuation is tokenised
        alone. Logprobs are ``log_softmax`` of the raw logits (temperature 1), as
        in :class:`CompletionOutput`. Shared prefixes, and anything generated or
        scored before, come from the prefix cache (static path).
        """
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):  # one pair
            prompts, continuations = [prompts], [continuations]
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
        texts, p_ids = self._encode(prompts)
        c_ids = []
        for text, pid, c in zip(texts, p_ids, continuations):
            if not isinstance(c, str):
                c_ids.append([int(t) for t in c])
                continue
            full = self._tokenize([text + c])[0]
            c_ids.append(full[len(pid):] if full[: len(pid)] == pid else self._tokenize([c])[0])
        for i, pid in enumerate(p_ids):
            if not pid:
                raise ValueError(f"prompt {i} is empty after tokenisation")
        full = [p + c for p, c in zip(p_ids, c_ids)]
        todo = [i for i in range(len(full)) if c_ids[i]]
        lps: dict[int, list[float]] = {}
        if todo:
            longest = max(len(full[i]) for i in todo)
            if self._use_static(longest):
                eng = self._engine()
                eng.ensure_rope(longest)
                self.last_backend = "static"
                while todo:  # chunks of bounded padded size, as in generate()
                    chunk = first_chunk(todo, lambda i: len(full[i]), ContinuousBatch.PREFILL_TOKENS)
                    todo = todo[len(chunk):]
                    *_, got = cached_prefill(eng, self._cache, self.stats, [full[i] for i in chunk],
                                              [len(p_ids[i]) for i in chunk], need_next=False)
                    lps.update(zip(chunk, got))
            else:
                self.last_backend = "hf"
                got = self._hf().token_logprobs([full[i] for i in todo])
                lps.update((i, g[len(p_ids[i]) - 1:]) for i, g in zip(todo, got))
        out = []
        for i in range(len(full)):
            lp = [float(x) for x in lps.get(i, [])]
            out.append(ContinuationScore(prompt_token_ids=p_ids[i], token_ids=c_ids[i], logprobs=lp,
                                         sum_logprob=float(sum(lp))))
        return out

    def update_weights(self, model=None) -> None:
        """Use ``model`` from now on (if given), else re-read the current one's weights; drops the prefix cache.

        Weight changes are also noticed on their own (see the class docs); this
        is the explicit form, for a new model object or weights swapped in a way
        that keeps storage and version counters.
        """
        if model is not None and model is not self.model:
            self.model = model
            self._static = None  # rebuilt for the new model on the next call
        elif self._static is not None:
            self._static.load_weights(force=True)
        self._cache = None

    @staticmethod
    def prefix_cache_bytes_per_token(model, dtype=None) -> int:
        """Prefix-cache memory per token for ``model`` (K and V of every layer, plus a float32 logprob)."""
        cfg = model.config
        heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        d = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return PrefixCache.bytes_per_token(cfg.num_hidden_layers, kv, d, dtype or next(model.parameters()).dtype)

    # ------------------------------------------------------------ static path
    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [list(t) for t in self.tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []

    def _encode(self, prompts) -> tuple[list[str], list[list[int]]]:
        """Texts and token ids of prompts given as strings (encoded in one batch) or token id lists."""
        strs = [p for p in prompts if isinstance(p, str)]
        enc = iter(self._tokenize(strs))
        texts, ids = [], []
        for p in prompts:
            if isinstance(p, str):
                texts.append(p)
                ids.append(next(enc))
            else:
                ids.append([int(t) for t in p])
                texts.append(self.tokenizer.decode(ids[-1]))
        return texts, ids

    def _use_static(self, need: int) -> bool:
        reason = "backend='hf'" if self.backend == "hf" else unsupported_reason(self.model, need)
        if reason is not None and self.backend == "static":
            raise ValueError(f"static-cache backend unavailable: {reason}")
        return reason is None

    def _engine(self) -> StaticLlama:
        """The static engine with current weights, and a prefix cache that matches them."""
        eng = self._static
        if eng is not None and (eng.device != self.device or (self.dtype is not None and eng.dtype != self.dtype)):
            eng = None  # device or dtype changed since it was built
        if eng is None:
            eng = self._static = StaticLlama(self.model, self.max_batch_size, self.device, self.dtype,
                                             attention=self.attention)
            self._cache = None
        if eng.load_weights():
            self._cache = None  # computed with other weights
        geometry = (eng.n_layers, eng.n_kv, eng.head_dim, eng.dtype, eng.device)
        if self._cache is not None and not self._cache.compatible(*geometry):
            self._cache = None
        if self.prefix_cache and self._cache is None:
            budget = self.prefix_cache_tokens
            if budget is None:
                per = PrefixCache.bytes_per_token(*geometry[:4])
                budget = min(self.DEFAULT_CACHE_TOKENS, self.DEFAULT_CACHE_BYTES // per)
            self._cache = PrefixCache(budget, *geometry) if budget > 0 else None
        if not self.prefix_cache:
            self._cache = None
        return eng

    def _run_static(self, seqs: list[list[Seq]], need: int, bar) -> dict[int, list[float]]:
        eng = self._engine()
        # cache length: fixed by max_seq_len, else the longest prompt + max_tokens of this call,
        # rounded up (an existing larger cache is reused, so calls rarely reallocate)
        cache_len = self.max_seq_len if self.max_seq_len is not None else -(-need // 64) * 64
        if self.max_seq_len is None and eng.seq_len < cache_len < eng.seq_len * 3 // 2:
            # growing: by half at least, so calls whose prompts keep growing (tree search) rarely reallocate
            cache_len = -(-(eng.seq_len * 3 // 2) // 64) * 64
        longest = max(len(s[0].prompt_ids) for s in seqs)
        if longest >= cache_len:
            raise ValueError(f"prompt of {longest} tokens does not fit max_seq_len={cache_len}")
        eng.ensure_cache(cache_len)
        batch = ContinuousBatch(eng, seqs, bar, self._cache, self.stats)
        batch.run()
        return batch.prompt_logprobs

    # --------------------------------------------------------------- fallback
    def _hf(self) -> HFBackend:
        """The HF fallback over the current model and settings (built per call: cheap, never stale)."""
        return HFBackend(self.model, self.tokenizer, self.eos_token_ids, self.max_batch_size, self.max_seq_len)
