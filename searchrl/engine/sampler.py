"""Sampling many completions from a small causal LM, fast, behind a vLLM-shaped API.

(A long module: the API types, the per-sequence bookkeeping, the continuous batch and the HF
fallback share one row state; splitting it by job belongs with the work on the engine's speed.)

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

import hashlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .llama import StaticLlama, check_attention_mode, unsupported_reason
from .prefix_cache import PrefixCache

__all__ = ["SamplingParams", "CompletionOutput", "RequestOutput", "ContinuationScore", "Sampler"]


@dataclass
class SamplingParams:
    """Shaped like ``vllm.SamplingParams`` (the subset searchrl uses)."""

    n: int = 1
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] | None = None  # output text is cut before the first stop string
    seed: int | None = None  # None: a fixed default derived from the request index
    include_stop_str_in_output: bool = False
    stop_token_ids: list[int] | None = None  # extra token ids that end a sample (like EOS)
    ignore_eos: bool = False  # keep going past EOS (benchmarks)
    # also return the model logprob of every prompt token (RequestOutput.prompt_logprobs). As in vLLM, an
    # int asks for that many top alternatives on top of the prompt token itself: only the token's own
    # logprob is returned here, so any int >= 0 (0 too) or True switches it on; None/False: off
    prompt_logprobs: bool | int | None = None

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.stop and any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.prompt_logprobs is not None and not isinstance(self.prompt_logprobs, bool) and (
                not isinstance(self.prompt_logprobs, int) or self.prompt_logprobs < 0):
            raise ValueError(f"prompt_logprobs must be None, a bool or an int >= 0, got {self.prompt_logprobs!r}")

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.prompt_logprobs is not None and self.prompt_logprobs is not False


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float
    logprobs: list[float]  # model logprob (raw logits, temperature 1) of each token in token_ids
    finish_reason: str  # "stop" | "length"


@dataclass
class RequestOutput:
    request_id: int
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    # with SamplingParams.prompt_logprobs: None for the first token, then the model logprob (temperature 1)
    # of each prompt token given the tokens before it
    prompt_logprobs: list[float | None] | None = None


@dataclass
class ContinuationScore:
    """What :meth:`Sampler.score_continuations` returns for one (prompt, continuation) pair."""

    prompt_token_ids: list[int]
    token_ids: list[int]  # the continuation's tokens
    logprobs: list[float]  # model logprob of each, given the prompt and the continuation tokens before it
    sum_logprob: float


def _sample_seed(seed: int | None, request_id: int, index: int) -> int:
    key = f"req:{request_id}:{index}" if seed is None else f"seed:{seed}:{index}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def _text_decoder(tokenizer):
    """``ids -> text`` as ``tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)``.

    For a plain fast tokenizer that is exactly its Rust backend's ``decode``; calling
    that directly skips transformers' argument handling, which cost more than the
    decoding itself (the detokeniser runs twice per generated token when stop
    strings are watched).
    """
    try:
        from transformers import PreTrainedTokenizerFast as Fast
    except ImportError:  # pragma: no cover - transformers is a dependency
        Fast = None
    if Fast is not None and isinstance(tokenizer, Fast) and type(tokenizer).decode is Fast.decode \
            and type(tokenizer)._decode is Fast._decode:
        backend = tokenizer.backend_tokenizer
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class _Detokenizer:
    """Incremental detokenisation: emit text only once it is stable.

    Decodes a short window ``ids[prefix:]`` and emits what it adds over
    ``ids[prefix:read]``; waits while the tail is an incomplete UTF-8 sequence
    (``\\ufffd``). Starting with a few prompt tokens as context makes the first
    generated token decode as it would inside the full text (leading spaces of
    SentencePiece tokens, byte-level merges).
    """

    def __init__(self, decode, context: list[int]):
        self.decode = decode  # ids -> text (_text_decoder)
        self.ids = list(context)
        self.prefix = 0
        self.read = len(self.ids)

    def _decode(self, ids):
        return self.decode(ids)

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self.read == len(self.ids):
            return ""
        before = self._decode(self.ids[self.prefix : self.read])
        now = self._decode(self.ids[self.prefix :])
        if len(now) > len(before) and (final or not now.endswith("\ufffd")):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before) :]
        return ""


class _Seq:
    """One sample being generated: its tokens, text, and the rules that end it."""

    __slots__ = (
        "req", "index", "params", "prompt_ids", "token_ids", "logprobs", "text", "detok",
        "finish_reason", "pos", "eos", "max_stop", "gen_seed",
    )

    def __init__(self, req: int, index: int, params: SamplingParams, prompt_ids: list[int], eos: set[int],
                 decode):
        self.req, self.index, self.params, self.prompt_ids = req, index, params, prompt_ids
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.text = ""
        self.finish_reason: str | None = None
        self.pos = len(prompt_ids)  # cache position the next fed token goes to
        self.eos = set() if params.ignore_eos else set(eos)
        self.eos.update(params.stop_token_ids or ())
        self.max_stop = max((len(s) for s in params.stop), default=0) if params.stop else 0
        self.detok = _Detokenizer(decode, prompt_ids[-6:])
        self.gen_seed = _sample_seed(params.seed, req, index)

    def uniforms(self) -> torch.Tensor | None:
        """This sample's random numbers, one per token (None when greedy)."""
        if self.params.temperature == 0:
            return None
        g = torch.Generator().manual_seed(self.gen_seed)
        return torch.rand(self.params.max_tokens, generator=g)

    def push(self, token: int, logprob: float, room: bool = True) -> bool:
        """Append a sampled token; returns True when the sample is finished.

        ``room`` is False when the cache has no slot left to feed this token back.
        """
        self.token_ids.append(token)
        self.logprobs.append(logprob)
        p = self.params
        if token in self.eos:
            self.finish_reason = "stop"
            return True
        if p.stop:
            old = len(self.text)
            self.text += self.detok.push(token)
            if len(self.text) > old and self._cut_at_stop(max(0, old - self.max_stop + 1)):
                return True
        if len(self.token_ids) >= p.max_tokens or not room:
            self.finish_reason = "length"
            if p.stop:
                old = len(self.text)
                self.text += self.detok.flush()
                if len(self.text) > old:
                    self._cut_at_stop(max(0, old - self.max_stop + 1))
            return True
        return False

    def _cut_at_stop(self, start: int) -> bool:
        hits = [(i, s) for s in self.params.stop if (i := self.text.find(s, start)) >= 0]
        if not hits:
            return False
        i, s = min(hits, key=lambda h: h[0])
        self.text = self.text[: i + len(s)] if self.params.include_stop_str_in_output else self.text[:i]
        self.finish_reason = "stop"
        return True

    def output(self) -> CompletionOutput:
        if not self.params.stop:  # text not built incrementally: decode once
            for t in self.token_ids:
                if t in self.eos:
                    break
                self.detok.ids.append(t)
            self.text = self.detok.flush()
        return CompletionOutput(
            index=self.index,
            text=self.text,
            token_ids=list(self.token_ids),
            cumulative_logprob=float(sum(self.logprobs)),
            logprobs=list(self.logprobs),
            finish_reason=self.finish_reason,
        )


class _RowState:
    """Per-row sampling settings as tensors, so token choice is one vectorised op."""

    def __init__(self, rows: int, width: int, device):
        self.temp = torch.zeros(rows, device=device)
        self.top_p = torch.ones(rows, device=device)
        self.u = torch.zeros(rows, max(width, 1), device=device)
        self.step = torch.zeros(rows, dtype=torch.long, device=device)  # tokens sampled so far
        self.greedy = [True] * rows
        self.nucleus = [False] * rows

    def set(self, row: int, seq: _Seq, u: torch.Tensor | None) -> None:
        p = seq.params
        self.temp[row] = p.temperature
        self.top_p[row] = p.top_p
        self.step[row] = 0
        self.greedy[row] = u is None
        self.nucleus[row] = u is not None and p.top_p < 1
        if u is not None:
            self.u[row, : u.numel()] = u.to(self.u.device)

    def permute(self, src: list[int]) -> None:
        """Row r takes the settings of row src[r] (r < len(src))."""
        n = len(src)
        idx = torch.tensor(src, device=self.temp.device)
        for name in ("temp", "top_p", "u", "step"):
            t = getattr(self, name)
            t[:n] = t[idx]
        self.greedy[:n] = [self.greedy[i] for i in src]
        self.nucleus[:n] = [self.nucleus[i] for i in src]

    @torch.inference_mode()
    def choose(self, logits: torch.Tensor, rows: torch.Tensor | slice) -> tuple[list[int], list[float]]:
        """Pick the next token of each row from ``logits [k, vocab]`` (rows = which rows)."""
        logits = logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        greedy = self.greedy[rows] if isinstance(rows, slice) else [self.greedy[i] for i in rows.tolist()]
        tokens = logits.argmax(dim=-1)
        if not all(greedy):
            nucleus = self.nucleus[rows] if isinstance(rows, slice) else [self.nucleus[i] for i in rows.tolist()]
            temp = self.temp[rows].clamp_min(1e-6)[:, None]
            step = self.step[rows].clamp(max=self.u.shape[1] - 1)  # greedy rows may run past the width
            u = self.u[rows].gather(1, step[:, None])  # this step's uniform, per row
            probs = torch.softmax(logits / temp, dim=-1)
            if any(nucleus):
                probs, order = probs.sort(dim=-1, descending=True)
                # keep the smallest prefix whose mass reaches top_p (always keeps the top token)
                drop = (probs.cumsum(-1) - probs) >= self.top_p[rows][:, None]
                probs = probs.masked_fill(drop, 0.0)
            cdf = probs.cumsum(dim=-1)
            total = cdf[:, -1:]
            # first token whose cdf exceeds u * total; capping the target just below total
            # guarantees one exists, and a zero-probability token can never be that first one
            target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
            pick = torch.searchsorted(cdf, target, right=True)
            if any(nucleus):
                pick = order.gather(1, pick)
            sampled = pick.squeeze(1)
            mask = torch.tensor(greedy, device=logits.device)
            tokens = torch.where(mask, tokens, sampled)
        self.step[rows] += 1
        lp = logp.gather(1, tokens[:, None]).squeeze(1)
        return tokens.tolist(), lp.tolist()


_NAN = float("nan")


def _plan(cache: PrefixCache | None, prompts: list[list[int]], lp_from: list[int | None], need_next: bool = True,
          resident: list | None = None):
    """How much of each prompt the prefix cache serves: ``[(start, slots, known logprobs)]``.

    ``start``: tokens ``[0, start)`` come from the cache (``slots`` holds them),
    the rest must be computed. ``lp_from[i]`` (or None): logprobs of tokens
    ``lp_from[i]:`` (``>= 1``) are wanted too. The cache serves them only where its
    stored logprobs are known: reuse stops at the first unknown one, and the token
    before it is recomputed (its output gives the next token's logprob); ``known``
    holds the stored ones that are used, for tokens ``lp_from[i] .. start``.
    ``need_next``: the last token's logits are needed (to sample from), so at
    least that token is computed; otherwise a fully cached sequence costs nothing.
    ``resident``: collects the rows holding prefixes (see :meth:`PrefixCache.match`).
    """
    plans = []
    for p, a in zip(prompts, lp_from):
        n = len(p)
        m, slots = cache.match(p, resident) if cache is not None else (0, [])
        stored = None
        if a is None:
            c = m
        else:
            if m > a:
                stored = cache.logprobs(slots[a:m])
                unknown = torch.isnan(stored).nonzero()
                if len(unknown):
                    m = a + int(unknown[0, 0])
            c = n if m == n else max(m - 1, 0)
            stored = stored[: max(c + 1 - a, 0)] if stored is not None else torch.empty(0)
        if need_next:
            c = min(c, n - 1)
        plans.append((c, slots[:c], stored))
    return plans


def _cached_prefill(eng: StaticLlama, cache: PrefixCache | None, stats: dict, prompts: list[list[int]],
                    lp_from: list[int | None], need_next: bool = True):
    """Prefill ``prompts``, computing only what the prefix cache does not hold, and cache the result.

    ``lp_from``/``need_next``: as for :func:`_plan`. Returns ``(keys, values, logits, order, lps)``: the prefill
    batch of the prompts that needed computing (all of them when ``need_next``),
    ``order[i]`` = prompt ``i``'s index in it (None if not computed), and
    ``lps[i]`` the requested logprobs as a list of floats (or None).
    """
    P = len(prompts)
    plans = _plan(cache, prompts, lp_from, need_next)
    starts = [c for c, _, _ in plans]
    compute = [i for i in range(P) if starts[i] < len(prompts[i])]
    stats["cached_tokens"] = stats.get("cached_tokens", 0) + sum(starts)
    stats["prefill_tokens"] = stats.get("prefill_tokens", 0) + sum(len(prompts[i]) - starts[i] for i in compute)
    keys = values = logits = None
    computed: list = [None] * len(compute)
    if compute:
        C = max(starts[i] for i in compute)
        pk = pv = None
        if C:
            idx = torch.tensor([plans[i][1] + [0] * (C - starts[i]) for i in compute], device=cache.device)
            pk, pv = cache.k[idx], cache.v[idx]  # [P, C, layers, kv_heads, head_dim]
        keys, values, logits, computed = eng.prefill(
            [prompts[i] for i in compute], [starts[i] for i in compute], pk, pv,
            [lp_from[i] is not None for i in compute])
        if cache is not None:
            _cache_prefill(cache, keys, values, [prompts[i] for i in compute], [starts[i] for i in compute],
                           computed)
    order: list[int | None] = [None] * P
    for j, i in enumerate(compute):
        order[i] = j
    lps: list[list[float] | None] = [None] * P
    for i, a in enumerate(lp_from):
        if a is None:
            continue
        vals = plans[i][2].tolist()
        new = computed[order[i]] if order[i] is not None else None
        if new is not None:  # logprobs of tokens starts[i] + 1 ..
            vals += new[max(0, a - starts[i] - 1):].tolist()
        lps[i] = vals
    return keys, values, logits, order, lps


def _cache_prefill(cache: PrefixCache, keys, values, prompts, starts, lps) -> None:
    """Insert the prompts of a prefill batch into the cache: K/V of new tokens, and any logprobs computed."""
    src, lp_new = {}, {}  # slot -> (prompt, position) / logprob; a later entry for a slot wins
    for j, p in enumerate(prompts):
        slots, m0 = cache.insert(p)
        for q in range(m0, len(slots)):
            src[slots[q]] = (j, q)
            lp_new[slots[q]] = _NAN
        if lps[j] is not None:
            c = starts[j]
            for q, lp in zip(range(c + 1, len(slots)), lps[j].tolist()):
                lp_new[slots[q]] = lp
    if src:
        dev = keys[0].device
        jj = torch.tensor([j for j, _ in src.values()], device=dev)
        qq = torch.tensor([q for _, q in src.values()], device=dev)
        k = torch.stack([kl.permute(0, 2, 1, 3)[jj, qq] for kl in keys], 1)  # [N, layers, kv_heads, head_dim]
        v = torch.stack([vl.permute(0, 2, 1, 3)[jj, qq] for vl in values], 1)
        cache.write(list(src), k, v)
    cache.set_logprobs(list(lp_new), list(lp_new.values()))


class _ContinuousBatch:
    """The scheduler of the static-cache path: a queue of samples streamed through cache rows.

    Invariant: ``slots[i]`` is the sample in cache row ``i`` (``None``: free), and
    ``len(slots)`` rows are in use. ``tokens[i]`` is the token row ``i`` feeds next,
    at cache position ``pos[i]`` (== ``slots[i].pos``).
    """

    PREFILL_TOKENS = 16384  # padded prompt tokens per prefill batch (bounds its memory)

    def __init__(self, eng: StaticLlama, seqs: list[list[_Seq]], bar, cache: PrefixCache | None = None,
                 stats: dict | None = None):
        self.eng, self.bar, self.dev, B = eng, bar, eng.device, eng.rows
        self.cache = cache
        self.stats = stats if stats is not None else {"prefill_tokens": 0, "cached_tokens": 0}
        self.finished: list[tuple[int, _Seq]] = []  # (row, sample): done, K/V still in the row, to be cached
        self.prompt_logprobs: dict[int, list[float]] = {}  # request -> logprobs of prompt tokens 1..
        sampled = [g[0].params.max_tokens for g in seqs if g[0].params.temperature > 0]
        self.state = _RowState(B, max(sampled, default=1), self.dev)
        self.queue = deque(s for group in seqs for s in group)
        self.slots: list[_Seq | None] = []
        self.stash: dict[int, tuple] = {}  # request -> (keys, values, logits, index) of its prefill
        self.remaining = {r: len(g) for r, g in enumerate(seqs)}  # samples not yet started
        self.tokens = torch.zeros(B, dtype=torch.long, device=self.dev)
        self.pos = torch.zeros(B, dtype=torch.long, device=self.dev)

    def run(self) -> None:
        while True:
            self.refill()
            if not any(s is not None for s in self.slots):
                return
            self.pack()
            self.step()

    def _done(self, row: int) -> None:
        seq = self.slots[row]
        # Cache the completion only where it is likely to be sent back to be continued: text
        # generated piece by piece (stop strings, e.g. one line at a time) that did not end with
        # EOS. Whole solutions (no stop string, or ended by EOS) are rarely extended, and copying
        # their K/V (hundreds of tokens each) would be pure cost, a few % of a sampling run.
        if self.cache is not None and seq.params.stop and seq.token_ids[-1] not in seq.eos:
            self.finished.append((row, seq))
        self.slots[row] = None
        if self.bar is not None:
            self.bar.update(1)

    def refill(self) -> None:
        """Start waiting samples in free rows (those that finish at once free their row again)."""
        self.harvest()
        while self.queue:
            free = [i for i, s in enumerate(self.slots) if s is None] + list(range(len(self.slots), self.eng.rows))
            if not free:
                return
            batch = [self.queue.popleft() for _ in range(min(len(free), len(self.queue)))]
            self.start(batch, free)
            self.harvest()

    def harvest(self) -> None:
        """Cache the K/V of finished samples (prompt + completion, all but the last token) before
        their rows are reused: a next call that sends prompt + completion then prefills nothing.

        Only samples of requests with stop strings that did not end with EOS (see :meth:`_done`)."""
        if not self.finished:
            return
        cache, src, lp_new = self.cache, {}, {}
        for row, seq in self.finished:
            n, P = seq.pos, len(seq.prompt_ids)  # the row holds K/V of positions 0..pos-1
            slots, m0 = cache.insert((seq.prompt_ids + seq.token_ids)[:n], row=row)
            for q in range(m0, len(slots)):
                src[slots[q]] = (row, q)
                lp_new[slots[q]] = _NAN
            for q in range(P, len(slots)):  # generated tokens: their logprobs are known
                lp_new[slots[q]] = seq.logprobs[q - P]
        self.finished.clear()
        if src:
            k, v = self.eng.read_tokens(torch.tensor([r for r, _ in src.values()], device=self.dev),
                                        torch.tensor([q for _, q in src.values()], device=self.dev))
            cache.write(list(src), k, v)
        cache.set_logprobs(list(lp_new), list(lp_new.values()))

    def start(self, batch: list[_Seq], free: list[int]) -> None:
        """Put samples into free rows: prefill (once per request, shared by its samples), copy K/V, sample token 1.

        With a prefix cache, a request whose prompt is cached but for its last
        token (a repeat, or the previous prompt + completion) skips the prefill:
        its rows get the cached K/V, and the next decode step feeds the last token.
        Its first sample goes, when there is one, to a free row that still holds
        a cached prefix of the prompt (the row its previous completion finished
        in), so that part is not even copied.
        """
        eng, dev, cache = self.eng, self.dev, self.cache
        todo = list(dict.fromkeys(s.req for s in batch if s.req not in self.stash))
        prompts = {s.req: s.prompt_ids for s in batch}
        lp_from = {s.req: 1 if s.params.wants_prompt_logprobs else None for s in batch}
        fed: dict[int, list[int]] = {}  # request -> cached slots of all its prompt tokens but the last
        resident: dict[int, list] = {}  # request -> [(length, node)]: prefixes of its prompt that rows hold
        if cache is not None and todo:
            per_req = Counter(s.req for s in batch)
            for r in todo:
                resident[r] = []
                c, slots, known = _plan(cache, [prompts[r]], [lp_from[r]], resident=resident[r])[0]
                if c == len(prompts[r]) - 1:
                    fed[r] = slots
                    self.stats["cached_tokens"] += c * per_req[r]
                    self.stats["prefill_tokens"] += per_req[r]  # each row feeds the last token itself
                    if lp_from[r] is not None:
                        self.prompt_logprobs[r] = known.tolist()
            todo = [r for r in todo if r not in fed]
        # rows: a fed request's first sample takes a free row holding the longest prefix of its prompt
        rows: list[int | None] = [None] * len(batch)
        held = {}  # index in batch -> leading positions its row already holds
        free_set, taken, placed = set(free), set(), set()
        for i, seq in enumerate(batch):
            if seq.req in fed and seq.req not in placed:
                placed.add(seq.req)
                for length, node in reversed(resident[seq.req]):
                    row = next((x for x in node.rows if x in free_set and x not in taken), None)
                    if row is not None:
                        rows[i], held[i] = row, length
                        taken.add(row)
                        break
        if len(taken) < len(batch):  # the rest: rows that hold nothing first
            others = [x for x in free if x not in taken]
            if cache is not None:
                others.sort(key=lambda x: x in cache.row_node)
            it = iter(others)
            rows = [x if x is not None else next(it) for x in rows]
        if cache is not None:
            for row in rows:
                cache.release(row)  # about to be overwritten
        if fed:  # first: the slots planned above stay valid only until something is inserted
            self._start_fed([(s, row, held.get(i, 0)) for i, (s, row) in enumerate(zip(batch, rows)) if s.req in fed],
                            fed)
            keep = [i for i, s in enumerate(batch) if s.req not in fed]
            batch, rows = [batch[i] for i in keep], [rows[i] for i in keep]
            if not batch:
                return
        while todo:  # prefill in chunks of bounded padded size (each planned anew: the last one inserted)
            chunk = _first_chunk(todo, lambda r: len(prompts[r]), self.PREFILL_TOKENS)
            todo = todo[len(chunk):]
            keys, values, logits, order, lps = _cached_prefill(
                eng, self.cache, self.stats, [prompts[r] for r in chunk], [lp_from[r] for r in chunk])
            for k, r in enumerate(chunk):
                self.stash[r] = (keys, values, logits, order[k])
                if lps[k] is not None:
                    self.prompt_logprobs[r] = lps[k]
        groups: dict[int, tuple] = {}  # prefill batch -> (keys, values, rows, indices): one copy per layer each
        for seq, row in zip(batch, rows):
            keys, values, _, k = self.stash[seq.req]
            g = groups.setdefault(id(keys), (keys, values, [], []))
            g[2].append(row)
            g[3].append(k)
        for keys, values, rws, src in groups.values():
            eng.write_prefill(torch.tensor(rws, device=dev), torch.tensor(src, device=dev), keys, values)
        first_logits = torch.stack([self.stash[s.req][2][self.stash[s.req][3]] for s in batch])
        for seq, row in zip(batch, rows):
            self._occupy(row, seq)
            if self.remaining[seq.req] == 0:
                del self.stash[seq.req]
        rows_t = torch.tensor(rows, device=dev)
        new, lps = self.state.choose(first_logits, rows_t)
        self.tokens[rows_t] = torch.tensor(new, device=dev)
        self.pos[rows_t] = torch.tensor([s.pos for s in batch], device=dev)
        for seq, row, t, lp in zip(batch, rows, new, lps):
            if seq.push(t, lp, room=seq.pos < eng.seq_len):
                self._done(row)

    def _occupy(self, row: int, seq: _Seq) -> None:
        if row >= len(self.slots):
            self.slots += [None] * (row + 1 - len(self.slots))
        self.slots[row] = seq
        self.state.set(row, seq, seq.uniforms())
        self.remaining[seq.req] -= 1

    def _start_fed(self, items: list[tuple[_Seq, int, int]], fed: dict[int, list[int]]) -> None:
        """Rows whose prompt is cached but for the last token: cached K/V in, last token fed next step.

        ``items``: (sample, row, positions the row already holds).
        """
        dev = self.dev
        rws, pos, slots = [], [], []
        for seq, row, h in items:
            todo = fed[seq.req][h:]
            rws += [row] * len(todo)
            pos += range(h, h + len(todo))
            slots += todo
        if slots:
            idx = torch.tensor(slots, device=self.cache.device)
            self.eng.write_tokens(torch.tensor(rws, device=dev), torch.tensor(pos, device=dev),
                                  self.cache.k.index_select(0, idx), self.cache.v.index_select(0, idx))
        for seq, row, _ in items:
            self._occupy(row, seq)
            seq.pos = len(seq.prompt_ids) - 1  # the next step feeds the last prompt token and samples token 1
        rows_t = torch.tensor([row for _, row, _ in items], device=dev)
        self.tokens[rows_t] = torch.tensor([s.prompt_ids[-1] for s, _, _ in items], device=dev)
        self.pos[rows_t] = torch.tensor([s.pos for s, _, _ in items], device=dev)

    def pack(self) -> None:
        """Move live rows into the holes so rows ``0..n-1`` are exactly the live ones."""
        live = [i for i, s in enumerate(self.slots) if s is not None]
        n = len(live)
        if n == len(self.slots):
            return
        holes = [i for i in range(n) if self.slots[i] is None]
        movers = [i for i in live if i >= n]  # as many as holes
        if movers:
            src = list(range(n))
            for dst, s in zip(holes, movers):
                src[dst] = s
            span = max(self.slots[i].pos for i in movers)
            held = [self.cache.held(h) for h in holes] if self.cache is not None else [0]
            if max(held) > 0:  # holes still hold cached prefixes: swap, so those survive in the movers' rows
                self.eng.swap_rows(torch.tensor(holes, device=self.dev), torch.tensor(movers, device=self.dev),
                                   max(span, *held))
                for h, m in zip(holes, movers):
                    self.cache.move(h, m)
            else:
                self.eng.copy_rows(torch.tensor(holes, device=self.dev), torch.tensor(movers, device=self.dev), span)
            self.state.permute(src)
            idx = torch.tensor(src, device=self.dev)
            self.tokens[:n] = self.tokens[idx]
            self.pos[:n] = self.pos[idx]
            for dst, s in zip(holes, movers):
                self.slots[dst] = self.slots[s]
        del self.slots[n:]

    def step(self) -> None:
        """One decode step for all (packed) live rows."""
        n, S = len(self.slots), self.eng.seq_len
        span = max(s.pos for s in self.slots) + 1
        logits = self.eng.decode(self.tokens[:n], self.pos[:n], n, span)
        new, lps = self.state.choose(logits, slice(0, n))
        self.tokens[:n] = torch.tensor(new, device=self.dev)
        self.pos[:n] += 1
        for i, (seq, t, lp) in enumerate(zip(self.slots, new, lps)):
            seq.pos += 1
            if seq.push(t, lp, room=seq.pos < S):
                self._done(i)


def _first_chunk(items: list, length: Callable[[Any], int], budget: int) -> list:
    """The longest head of ``items`` whose padded size (rows x longest row) fits ``budget`` (at least one)."""
    chunk, longest = [], 0
    for x in items:
        longest2 = max(longest, length(x))
        if chunk and longest2 * (len(chunk) + 1) > budget:
            break
        chunk.append(x)
        longest = longest2
    return chunk


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
        decode = _text_decoder(self.tokenizer)
        seqs = [[_Seq(r, j, params[r], ids[r], self.eos_token_ids, decode) for j in range(params[r].n)]
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
                self._run_hf(seqs, bar)
                want = [r for r in range(len(ids)) if params[r].wants_prompt_logprobs]
                prompt_lps = dict(zip(want, self._hf_token_logprobs([ids[r] for r in want])))
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
                    chunk = _first_chunk(todo, lambda i: len(full[i]), _ContinuousBatch.PREFILL_TOKENS)
                    todo = todo[len(chunk):]
                    *_, got = _cached_prefill(eng, self._cache, self.stats, [full[i] for i in chunk],
                                              [len(p_ids[i]) for i in chunk], need_next=False)
                    lps.update(zip(chunk, got))
            else:
                self.last_backend = "hf"
                got = self._hf_token_logprobs([full[i] for i in todo])
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

    def _run_static(self, seqs: list[list[_Seq]], need: int, bar) -> dict[int, list[float]]:
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
        batch = _ContinuousBatch(eng, seqs, bar, self._cache, self.stats)
        batch.run()
        return batch.prompt_logprobs

    # --------------------------------------------------------------- fallback
    @torch.inference_mode()
    def _run_hf(self, seqs: list[list[_Seq]], bar) -> None:
        """Static batches through the HF model's own forward and cache (any architecture)."""
        model = self.model
        model.eval()
        dev = next(model.parameters()).device
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (min(self.eos_token_ids) if self.eos_token_ids else 0)
        flat = [s for group in seqs for s in group]
        B = self.max_batch_size
        limit = self.max_seq_len
        for start in range(0, len(flat), B):
            batch = flat[start : start + B]
            n = len(batch)
            T = max(len(s.prompt_ids) for s in batch)
            width = max([s.params.max_tokens for s in batch if s.params.temperature > 0] or [1])
            state = _RowState(n, width, dev)
            for i, s in enumerate(batch):
                state.set(i, s, s.uniforms())
            ids = torch.full((n, T), pad, dtype=torch.long)
            am = torch.zeros(n, T, dtype=torch.long)
            for i, s in enumerate(batch):
                ids[i, T - len(s.prompt_ids) :] = torch.tensor(s.prompt_ids)
                am[i, T - len(s.prompt_ids) :] = 1
            ids, am = ids.to(dev), am.to(dev)
            position_ids = (am.cumsum(-1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=am, position_ids=position_ids, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1]
            done = [False] * n
            while True:
                new, lps = state.choose(logits, slice(0, n))
                for i, s in enumerate(batch):
                    if not done[i]:
                        s.pos += 1
                        room = limit is None or s.pos < limit
                        if s.push(new[i], lps[i], room=room):
                            done[i] = True
                            if bar is not None:
                                bar.update(1)
                if all(done):
                    break
                am = torch.cat([am, am.new_ones(n, 1)], dim=1)
                position_ids = position_ids[:, -1:] + 1
                inp = torch.tensor(new, device=dev)[:, None]
                out = model(input_ids=inp, attention_mask=am, position_ids=position_ids, past_key_values=past,
                            use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1]

    @torch.inference_mode()
    def _hf_token_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
        """Logprob of tokens ``1..`` of each sequence given the ones before, by the HF model's forward."""
        model = self.model
        model.eval()
        dev = next(model.parameters()).device
        out = []
        for start in range(0, len(seqs), self.max_batch_size):
            batch = seqs[start : start + self.max_batch_size]
            T = max(len(s) for s in batch)
            ids = torch.zeros(len(batch), T, dtype=torch.long)
            am = torch.zeros(len(batch), T, dtype=torch.long)
            for i, s in enumerate(batch):  # right padding: positions are 0.. without position_ids
                ids[i, : len(s)] = torch.tensor(s)
                am[i, : len(s)] = 1
            logp = torch.log_softmax(model(input_ids=ids.to(dev), attention_mask=am.to(dev)).logits.float(), -1)
            nxt = logp[:, :-1].gather(2, ids[:, 1:, None].to(dev)).squeeze(2).cpu()
            out += [nxt[i, : len(s) - 1].tolist() for i, s in enumerate(batch)]
        return out
