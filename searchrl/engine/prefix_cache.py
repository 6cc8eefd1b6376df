"""Reuse the K/V of token prefixes across ``Sampler`` calls (automatic prefix caching).

Why: tree search grows a text one line at a time and sends the whole path as a
new prompt at every step (``stop="\\n"``). Without a cache every call prefills the
whole path again, so the work per line grows with the depth of the tree; on the
shipped Countdown policy two thirds of a 10-line search was prefill. The K/V of
a token depends only on the tokens before it (and the weights), so once a prefix
has been computed, by a prefill or by decoding, it never needs computing again.

Design:

* A **token-level radix tree**: each node holds a run of token ids and, for each,
  the pool slot that holds its K/V (all layers). A lookup walks the tree and returns
  the longest cached prefix, down to the token (a block-hashed cache would only
  reuse whole blocks, and line-by-line extension would recompute up to a block
  per line). Inserting a sequence that leaves a node mid-run splits the node.
* A **slot pool**: ``k``/``v`` of shape ``[slots, layers, kv_heads, head_dim]``
  for up to ``max_tokens`` tokens, recycled when full. Gathering a prefix of any
  length is one ``index_select``, and freeing memory is returning slots to a
  free list, with no fragmentation. Slot 0 is all zeros, to pad gathers (garbage
  there could be NaN, and masked attention still multiplies it by 0).
* **LRU eviction of leaves** (an inner node is a prefix of its children, so it
  goes only after them). When the pool is full, eviction frees the needed slots
  plus 1/16 of the pool at once, so its cost (a sort of the leaves) is paid
  rarely; nodes touched by the current operation are never evicted.
* **Resident rows.** The sampler's own KV-cache rows still hold the K/V of the
  samples that finished in them, until the row is reused (the scheduler swaps
  rather than overwrites them when it packs rows). A node records which rows
  hold exactly its path, so a prompt that extends a cached completion can start
  in that row with nothing copied at all (line-by-line extension).
* Per slot, the **log-probability** of its token given the tokens before it, when
  known (NaN otherwise): decoding knows it for every generated token, a prefill
  computes it when asked to. Prompt logprobs and continuation scores can then be
  served from the cache too.

The cache holds no reference to the model: the owner drops it when the weights,
dtype or device change (:meth:`clear`).
"""

from __future__ import annotations

import heapq

import torch

__all__ = ["PrefixCache"]


class _Node:
    __slots__ = ("tokens", "slots", "children", "parent", "last", "rows")

    def __init__(self, tokens: list[int], slots: list[int], parent: _Node | None, last: int):
        self.tokens, self.slots, self.parent, self.last = tokens, slots, parent, last
        self.children: dict[int, _Node] = {}
        self.rows: set[int] = set()  # engine cache rows that hold this node's whole path


class PrefixCache:
    """K/V (and token logprobs) of token prefixes, in a radix tree over a slot pool (see module docs)."""

    MIN_SLOTS = 4096  # first allocation off the CPU (then doubled as needed)

    def __init__(self, max_tokens: int, n_layers: int, n_kv: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device):
        self.max_tokens = int(max_tokens)
        self.shape = (n_layers, n_kv, head_dim)
        self.dtype, self.device = dtype, torch.device(device)
        self.k = self.v = None
        self.lp = None
        self.clear()

    @staticmethod
    def bytes_per_token(n_layers: int, n_kv: int, head_dim: int, dtype: torch.dtype) -> int:
        """Pool memory per cached token: K and V of every layer, plus its float32 logprob."""
        return 2 * n_layers * n_kv * head_dim * torch.empty((), dtype=dtype).element_size() + 4

    def compatible(self, n_layers: int, n_kv: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> bool:
        return self.shape == (n_layers, n_kv, head_dim) and self.dtype == dtype and self.device == torch.device(device)

    def clear(self) -> None:
        """Forget everything (the pool's memory is released too)."""
        self.root = _Node([], [], None, 0)
        self.k = self.v = self.lp = None
        self.cap = 0
        self.free: list[int] = []
        self.leaves: set[_Node] = set()
        self.clock = 0
        self.evicted = 0  # tokens evicted so far
        self.row_node: dict[int, _Node] = {}  # engine row -> the node whose path it holds

    @property
    def size(self) -> int:
        """Tokens currently cached."""
        return self.cap - len(self.free)

    # ------------------------------------------------------------------ lookup
    def _walk(self, tokens: list[int], resident: list | None = None):
        """Longest cached prefix: ``(length, slots, node reached, tokens matched inside that node)``.

        ``resident``: collects ``(length, node)`` for the nodes on the way that rows hold.
        """
        node, i, n, slots = self.root, 0, len(tokens), []
        while i < n:
            child = node.children.get(tokens[i])
            if child is None:
                break
            seg = child.tokens
            L = len(seg)
            if tokens[i : i + L] == seg:
                slots += child.slots
                i += L
                node = child
                if resident is not None and child.rows:
                    resident.append((i, child))
                continue
            k = 1  # seg[0] == tokens[i] is known
            while k < L and i + k < n and seg[k] == tokens[i + k]:
                k += 1
            slots += child.slots[:k]
            return i + k, slots, child, k
        return i, slots, node, len(node.tokens)

    def _touch(self, node: _Node) -> None:
        while node is not None:
            node.last = self.clock
            node = node.parent

    def match(self, tokens: list[int], resident: list | None = None) -> tuple[int, list[int]]:
        """Length of the longest cached prefix of ``tokens`` and the slots of its tokens (marks it used).

        ``resident``: gets ``(length, node)`` for each prefix of ``tokens`` that rows
        hold (``node.rows``), shortest first.
        """
        self.clock += 1
        m, slots, node, _ = self._walk(tokens, resident)
        self._touch(node)
        return m, slots

    # ------------------------------------------------------------------ insert
    def insert(self, tokens: list[int], row: int | None = None) -> tuple[list[int], int]:
        """Make ``tokens`` (or as long a prefix of them as fits) cached.

        Returns ``(slots, m)``: the slots of ``tokens[:len(slots)]``, of which
        ``slots[m:]`` are new and must be written by the caller (:meth:`write`)
        before the next call to this cache. ``row``: an engine row that holds the
        K/V of ``tokens`` is recorded as holding the cached part.
        """
        self.clock += 1
        m, slots, node, k = self._walk(tokens)
        need = len(tokens) - m if self.max_tokens > 0 else 0
        if k < len(node.tokens) and (need > 0 or row is not None):
            node = self._split(node, k)  # the sequence ends or leaves `node` mid-run: split it there
        self._touch(node)
        if need > 0:
            new = self._allocate(need)
            if new:
                child = _Node(list(tokens[m : m + len(new)]), new, node, self.clock)
                node.children[child.tokens[0]] = child
                self.leaves.discard(node)
                self.leaves.add(child)
                node, slots = child, slots + new
        if row is not None and node is not self.root:
            self.release(row)
            node.rows.add(row)
            self.row_node[row] = node
        return slots, m

    # ------------------------------------------------------------ rows
    def release(self, row: int) -> None:
        """``row`` is about to be overwritten: it no longer holds anything."""
        node = self.row_node.pop(row, None)
        if node is not None:
            node.rows.discard(row)

    def move(self, src: int, dst: int) -> None:
        """The contents of row ``src`` now live in row ``dst`` (and ``dst``'s old contents are gone)."""
        self.release(dst)
        node = self.row_node.pop(src, None)
        if node is not None:
            node.rows.discard(src)
            node.rows.add(dst)
            self.row_node[dst] = node

    def held(self, row: int) -> int:
        """How many leading positions of ``row`` hold cached tokens (0: none)."""
        node, n = self.row_node.get(row), 0
        while node is not None:
            n += len(node.tokens)
            node = node.parent
        return n

    def _split(self, node: _Node, k: int) -> _Node:
        """Cut ``node`` after its first ``k`` tokens; returns the new upper part."""
        top = _Node(node.tokens[:k], node.slots[:k], node.parent, node.last)  # rows stay with `node`
        node.parent.children[top.tokens[0]] = top
        node.tokens, node.slots, node.parent = node.tokens[k:], node.slots[k:], top
        top.children[node.tokens[0]] = node
        return top

    def write(self, slots: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V ``[len(slots), layers, kv_heads, head_dim]`` in ``slots`` (their logprobs become unknown)."""
        if slots:
            idx = torch.tensor(slots, device=self.device)
            self.k.index_copy_(0, idx, k.to(self.dtype))
            self.v.index_copy_(0, idx, v.to(self.dtype))
            self.lp.index_fill_(0, idx, float("nan"))

    def set_logprobs(self, slots: list[int], lp: list[float]) -> None:
        """Record the logprobs of the tokens in ``slots`` (NaN: unknown)."""
        if slots:
            idx = torch.tensor(slots, device=self.device)
            self.lp.index_copy_(0, idx, torch.tensor(lp, dtype=torch.float32, device=self.device))

    def logprobs(self, slots: list[int]) -> torch.Tensor:
        """Stored logprobs of the tokens in ``slots`` (NaN where unknown), float32 on the CPU."""
        if not slots:
            return torch.empty(0)
        return self.lp[torch.tensor(slots, device=self.device)].cpu()

    # ----------------------------------------------------------------- memory
    def _grow(self, want: int) -> None:
        """Room for ``want`` tokens (at most ``max_tokens``); slot 0 is the zero padding slot.

        On the CPU the whole budget is allocated at once but left uninitialised: the
        OS backs its pages only when a slot is first written, so memory follows what
        is cached and growing never copies. Elsewhere the pool doubles as needed.
        """
        if self.device.type == "cpu":
            cap = self.max_tokens
        else:
            cap = min(self.max_tokens, max(self.MIN_SLOTS, 2 * self.cap, want))
        if cap <= self.cap:
            return
        shape = (cap + 1, *self.shape)
        k = torch.empty(shape, dtype=self.dtype, device=self.device)
        v = torch.empty(shape, dtype=self.dtype, device=self.device)
        lp = torch.full((cap + 1,), float("nan"), device=self.device)
        if self.cap:
            k[: self.cap + 1], v[: self.cap + 1], lp[: self.cap + 1] = self.k, self.v, self.lp
        else:
            k[0], v[0] = 0, 0  # padding for gathers of prefixes of different lengths
        self.k, self.v, self.lp = k, v, lp
        self.free.extend(range(cap, self.cap, -1))  # popped from the end: slots are used in order
        self.cap = cap

    def _allocate(self, need: int) -> list[int]:
        """Up to ``need`` free slots, growing the pool or evicting old leaves as needed."""
        if len(self.free) < need and self.cap < self.max_tokens:
            self._grow(self.cap + need - len(self.free))
        if len(self.free) < need:
            self._evict(need - len(self.free) + self.cap // 16)
        take = min(need, len(self.free))
        out = self.free[len(self.free) - take :]
        del self.free[len(self.free) - take :]
        return out[::-1]

    def _evict(self, want: int) -> None:
        """Free about ``want`` slots, least recently used leaves first (never the current path)."""
        heap = [(n.last, id(n), n) for n in self.leaves if n.last != self.clock]
        heapq.heapify(heap)
        freed = 0
        while heap and freed < want:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            del parent.children[node.tokens[0]]
            self.leaves.discard(node)
            self.free.extend(node.slots)
            freed += len(node.slots)
            for r in node.rows:
                del self.row_node[r]
            if parent is not self.root and not parent.children:
                self.leaves.add(parent)
                if parent.last != self.clock:
                    heapq.heappush(heap, (parent.last, id(parent), parent))
        self.evicted += freed
