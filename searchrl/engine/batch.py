"""The static-cache path's scheduler: samples streamed through the rows of a continuously batched KV cache.

:class:`ContinuousBatch` runs one :meth:`~searchrl.engine.sampler.Sampler.generate` call on a
:class:`~searchrl.engine.llama.StaticLlama`: prefill (once per request, shared by its samples),
refill of finished rows, packing, decode steps. :func:`cached_prefill` prefills only what the
:class:`~searchrl.engine.prefix_cache.PrefixCache` does not hold and caches the rest (also used by
scoring). Why it is built this way: :mod:`searchrl.engine.sampler`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import torch

from .llama import StaticLlama
from .prefix_cache import PrefixCache
from .sequence import RowState, Seq

__all__ = ["ContinuousBatch", "cached_prefill", "first_chunk"]


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


def cached_prefill(eng: StaticLlama, cache: PrefixCache | None, stats: dict, prompts: list[list[int]],
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


class ContinuousBatch:
    """The scheduler of the static-cache path: a queue of samples streamed through cache rows.

    Invariant: ``slots[i]`` is the sample in cache row ``i`` (``None``: free), and
    ``len(slots)`` rows are in use. ``tokens[i]`` is the token row ``i`` feeds next,
    at cache position ``pos[i]`` (== ``slots[i].pos``).
    """

    PREFILL_TOKENS = 16384  # padded prompt tokens per prefill batch (bounds its memory)

    def __init__(self, eng: StaticLlama, seqs: list[list[Seq]], bar, cache: PrefixCache | None = None,
                 stats: dict | None = None):
        self.eng, self.bar, self.dev, B = eng, bar, eng.device, eng.rows
        self.cache = cache
        self.stats = stats if stats is not None else {"prefill_tokens": 0, "cached_tokens": 0}
        self.finished: list[tuple[int, Seq]] = []  # (row, sample): done, K/V still in the row, to be cached
        self.prompt_logprobs: dict[int, list[float]] = {}  # request -> logprobs of prompt tokens 1..
        sampled = [g[0].params.max_tokens for g in seqs if g[0].params.temperature > 0]
        self.state = RowState(B, max(sampled, default=1), self.dev)
        self.queue = deque(s for group in seqs for s in group)
        self.slots: list[Seq | None] = []
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

    def start(self, batch: list[Seq], free: list[int]) -> None:
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
            chunk = first_chunk(todo, lambda r: len(prompts[r]), self.PREFILL_TOKENS)
            todo = todo[len(chunk):]
            keys, values, logits, order, lps = cached_prefill(
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

    def _occupy(self, row: int, seq: Seq) -> None:
        if row >= len(self.slots):
            self.slots += [None] * (row + 1 - len(self.slots))
        self.slots[row] = seq
        self.state.set(row, seq, seq.uniforms())
        self.remaining[seq.req] -= 1

    def _start_fed(self, items: list[tuple[Seq, int, int]], fed: dict[int, list[int]]) -> None:
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


def first_chunk(items: list, length: Callable[[Any], int], budget: int) -> list:
    """The longest head of ``items`` whose padded size (rows x longest row) fits ``budget`` (at least one)."""
    chunk, longest = [], 0
    for x in items:
        longest2 = max(longest, length(x))
        if chunk and longest2 * (len(chunk) + 1) > budget:
            break
        chunk.append(x)
        longest = longest2
    return chunk
