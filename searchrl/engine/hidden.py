"""Final hidden states of a Llama-family backbone at the last token of many sequences, with prefix reuse.

Why: a value model scores a search's states (prompt + the response so far) at their last
token. Through the Hugging Face forward every call recomputes every state from its first
token, although a search's states grow a block or a line at a time from states it scored
before: VGS beam search spent most of its time there (``benchmarks/search.py``). This runs
the backbone on the static engine (:class:`.llama.StaticLlama` with ``hidden=True``: the
final RMSNorm's output instead of logits) and keeps the K/V of what it computed in a
:class:`.prefix_cache.PrefixCache`, so a state costs only the tokens not seen before.

The arithmetic is the backbone's own (see :mod:`.llama`); results equal its
``last_hidden_state`` up to float rounding. Weights are re-read when they change (the
cache is then dropped), as the sampler does.
"""

from __future__ import annotations

import torch

from .batch import ContinuousBatch, cached_prefill, first_chunk
from .llama import StaticLlama, unsupported_reason
from .prefix_cache import PrefixCache


class HiddenStates:
    """``last(seqs, cache)``: the final hidden state ``[len(seqs), hidden]`` at each sequence's last token.

    ``cache``: a :meth:`new_cache` (its K/V serve later calls given the same cache) or None. A
    caller that needs results independent of what else was scored keeps one cache per
    independent stream of work (a search keeps one per problem): K/V computed for another
    stream, in another batch, could differ in the last bit.
    """

    CACHE_BYTES = 1 << 28  # most memory one cache may take
    CACHE_TOKENS = 1 << 16

    def __init__(self, backbone):
        self.backbone = backbone
        self._eng: StaticLlama | None = None
        self._version = 0  # bumped when the weights change: caches made before are stale
        self.stats = {"prefill_tokens": 0, "cached_tokens": 0}

    @staticmethod
    def supported(backbone, seq_len: int | None = None) -> bool:
        return unsupported_reason(backbone, seq_len, hidden=True) is None

    def _engine(self) -> StaticLlama:
        if self._eng is None:
            self._eng = StaticLlama(self.backbone, rows=1, hidden=True)
        if self._eng.load_weights():
            self._version += 1
        return self._eng

    def new_cache(self) -> PrefixCache:
        """An empty prefix cache for :meth:`last` (memory is taken as it fills)."""
        eng = self._engine()
        per = PrefixCache.bytes_per_token(eng.n_layers, eng.n_kv, eng.head_dim, eng.dtype)
        cache = PrefixCache(min(self.CACHE_TOKENS, self.CACHE_BYTES // per), eng.n_layers, eng.n_kv, eng.head_dim,
                            eng.dtype, eng.device)
        cache.weights_version = self._version
        return cache

    @torch.inference_mode()
    def last(self, seqs: list[list[int]], cache: PrefixCache | None = None) -> torch.Tensor:
        if any(not s for s in seqs):
            raise ValueError("every sequence needs at least one token")
        eng = self._engine()
        if cache is not None and getattr(cache, "weights_version", None) != self._version:
            cache.clear()  # made with other weights
            cache.weights_version = self._version
        if not seqs:
            return torch.empty(0, eng.norm.shape[0], dtype=eng.dtype, device=eng.device)
        eng.ensure_rope(max(map(len, seqs)))
        out: list = [None] * len(seqs)
        todo = list(range(len(seqs)))
        while todo:  # chunks of bounded padded size, as the sampler prefills
            chunk = first_chunk(todo, lambda i: len(seqs[i]), ContinuousBatch.PREFILL_TOKENS)
            todo = todo[len(chunk):]
            _, _, hidden, order, _ = cached_prefill(eng, cache, self.stats, [seqs[i] for i in chunk],
                                                    [None] * len(chunk), need_next=True)
            for i, j in zip(chunk, order):
                out[i] = hidden[j]
        return torch.stack(out)
