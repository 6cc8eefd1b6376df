"""A Llama-family forward pass over a preallocated (static) KV cache.

This is the part of the engine that does arithmetic. It reads the weights of an
already-loaded Hugging Face ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` /
``MistralForCausalLM`` and runs the same computation as their ``forward``, but
organised for decoding many independent sequences at once:

* The KV cache is one tensor per layer, ``[rows, kv_heads, max_seq_len, head_dim]``,
  allocated once (grown, keeping its contents, when a call needs longer rows).
  Decoding a token writes one slot per row in place (HF's ``DynamicCache``
  concatenates, i.e. copies the whole cache, every step).
* Each row has its own position. One decode step takes one token per row, each
  at its own position, and a boolean mask ``key_pos <= row_pos`` hides the unused
  tail of each row's cache. So rows that started at different times (different
  prompt lengths, or refilled mid-way by the scheduler) share one batched step.
* Grouped-query attention without copying K/V: for a single query token the
  ``G = heads / kv_heads`` query heads that share a KV head are laid out as ``G``
  "query positions" of that KV head, ``q: [rows, kv_heads, G, head_dim]``, so one
  ``scaled_dot_product_attention`` call attends all of them to the shared cache.
* Prefill can start mid-prompt: given the K/V of the first ``c`` tokens (from a
  prefix cache), only the suffix is computed, its queries at their true
  positions attending to the given prefix and causally to each other. The
  per-layer caches are views of one ``[layers, rows, ...]`` tensor, so the K/V
  of a token in every layer is read or written in one indexing op.
* q/k/v projections are fused into one matmul, gate/up into another (for models
  up to 200M parameters: the fused weights are a copy); rotary is applied to q and
  k in one go. Fewer, bigger kernels means less per-op overhead per token.
* On CPU in float32 with the compiled kernels (:mod:`.kernels`), a decode step is per layer
  the four matmuls and three compiled calls (RMSNorm with the residual add; rotary, cache write
  and attention over each row's own length; SiLU gate): :meth:`StaticLlama._decode_fused`.
  Otherwise (GPU, half precision, no compiler) it is the same computation in torch ops with SDPA.

The arithmetic mirrors Hugging Face's op for op (RMSNorm in float32, the rotary
tables built from the model's own ``rotary_emb.inv_freq`` and
``attention_scaling``, so default/linear/llama3/yarn RoPE are all covered,
``rotate_half`` convention, SiLU-gated MLP, tied or untied ``lm_head``), so greedy
decoding reproduces ``model.generate`` token for token up to floating-point
rounding differences between kernels (which only matter at exact argmax ties).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels

SUPPORTED_ARCHS = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
_DYNAMIC_ROPE = ("dynamic", "longrope")  # inv_freq depends on sequence length
ATTENTION_MODES = ("auto", "kernel", "sdpa")  # decode attention: compiled kernel when it fits, or either forced


def check_attention_mode(attention: str) -> None:
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {'|'.join(ATTENTION_MODES)}, got {attention!r}")


BACKBONES = ("LlamaModel", "Qwen2Model", "MistralModel")  # the same without lm_head (``hidden=True``)


def unsupported_reason(model, seq_len: int | None = None, hidden: bool = False) -> str | None:
    """Why ``model`` cannot use the static-cache path (``None`` if it can); ``hidden``: ``model`` is
    a backbone (``LlamaModel``...) whose final hidden states are wanted, not a causal LM."""
    name = type(model).__name__
    if name not in (BACKBONES if hidden else SUPPORTED_ARCHS):
        return f"architecture {name} is not one of {BACKBONES if hidden else SUPPORTED_ARCHS}"
    cfg = model.config
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act={cfg.hidden_act!r} (only silu)"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp != 1"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type in _DYNAMIC_ROPE:
        return f"rope_type={rope_type!r} changes with sequence length"
    inner = model if hidden else getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(inner.rotary_emb, "inv_freq"):
        return "model has no model.rotary_emb.inv_freq"
    # Sliding-window attention only differs from full attention past the window.
    window = _sliding_window(cfg)
    if window is not None and seq_len is not None and seq_len > window:
        return f"sequence length {seq_len} exceeds sliding window {window}"
    return None


def _sliding_window(cfg) -> int | None:
    name = cfg.model_type
    if name == "qwen2":
        types = getattr(cfg, "layer_types", None) or []
        if not any(t == "sliding_attention" for t in types) and not getattr(cfg, "use_sliding_window", False):
            return None
    return getattr(cfg, "sliding_window", None) if name in ("qwen2", "mistral") else None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Same op order as LlamaRMSNorm: normalise in float32, scale in the input dtype.
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _project(h: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor | None]) -> torch.Tensor:
    """``h`` through one fused weight, or through several whose outputs are concatenated."""
    if len(weights) == 1:
        return F.linear(h, weights[0], biases[0])
    return torch.cat([F.linear(h, w, b) for w, b in zip(weights, biases)], dim=-1)


class _Layer:
    # wqkv/bqkv and wgu/bgu are lists: one fused tensor, or the separate q,k,v / gate,up ones
    __slots__ = ("ln1", "wqkv", "bqkv", "wo", "bo", "ln2", "wgu", "bgu", "wd", "bd")


class StaticLlama:
    """Static-cache forward pass for Llama-family HF models (see module docstring).

    ``rows`` is the number of sequences decoded together. The cache is allocated by
    :meth:`ensure_cache`; weights are read (q/k/v and gate/up fused, i.e. copied)
    from the HF module by :meth:`load_weights`, again whenever a parameter's
    storage or version counter changed, so a model trained in place in between
    generate calls is picked up.
    """

    FUSE_MAX_PARAMS = 200_000_000  # above this, don't pay for a fused copy of the weights

    def __init__(self, model, rows: int, device=None, dtype=None, fuse: bool | None = None, attention: str = "auto",
                 hidden: bool = False):
        check_attention_mode(attention)
        self.model = model
        self.hidden = hidden  # model is a backbone: "logits" are the final (normed) hidden states
        n_params = sum(p.numel() for p in model.parameters())
        self.fuse = n_params <= self.FUSE_MAX_PARAMS if fuse is None else fuse
        cfg = model.config
        self.rows = rows
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype or next(model.parameters()).dtype
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.groups = self.n_heads // self.n_kv
        self.scaling = self.head_dim**-0.5  # same Python float HF passes to attention
        self.eps = cfg.rms_norm_eps
        self.seq_len = 0
        self.k_cache: list[torch.Tensor] = []
        self.v_cache: list[torch.Tensor] = []
        self.layers: list[_Layer] = []
        self._loaded_sig = None
        self._cos = self._sin = None
        # decode attention: the compiled per-row kernel (CPU float32) or torch SDPA
        fits = (self.device.type == "cpu" and self.dtype == torch.float32 and self.head_dim % 2 == 0
                and self.head_dim <= 1024)
        if attention == "kernel" and not fits:
            raise ValueError(f"the compiled attention kernel needs CPU float32 and an even head_dim <= 1024, not "
                             f"{self.dtype} on {self.device}, head_dim {self.head_dim}")
        if attention == "kernel" and not kernels.available():
            raise ValueError(f"compiled attention kernel unavailable: {kernels.unavailable_reason()}")
        self.attention = "kernel" if attention != "sdpa" and fits and kernels.available() else "sdpa"

    # ------------------------------------------------------------------ weights
    def _weights_signature(self):
        # Identity and version counter of every parameter: an optimizer step (in-place
        # update), load_state_dict or reassigning .data changes it.
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    @torch.inference_mode()
    def load_weights(self, force: bool = False) -> bool:
        """Read (and fuse) the current weights of the HF module, unless unchanged since last time.

        Returns whether they were (re)read: anything computed with the old ones
        (a prefix cache) is stale then.
        """
        sig = self._weights_signature()
        if not force and self.layers and sig == self._loaded_sig:
            return False
        self._loaded_sig = sig
        dev, dt = self.device, self.dtype

        def w(t):
            return None if t is None else t.detach().to(device=dev, dtype=dt)

        def cat(*ts):  # fused copy (one matmul instead of several), or the tensors themselves
            if not self.fuse:
                return [w(t) for t in ts]
            if any(t is None for t in ts):
                assert all(t is None for t in ts)
                return [None]
            return [torch.cat([w(t) for t in ts], dim=0).contiguous()]

        inner = self.model if self.hidden else self.model.model
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            L = _Layer()
            L.ln1 = w(layer.input_layernorm.weight)
            L.wqkv = cat(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)
            L.bqkv = cat(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias)
            L.wo, L.bo = w(a.o_proj.weight), w(a.o_proj.bias)
            L.ln2 = w(layer.post_attention_layernorm.weight)
            L.wgu = cat(m.gate_proj.weight, m.up_proj.weight)
            L.bgu = cat(m.gate_proj.bias, m.up_proj.bias)
            L.wd, L.bd = w(m.down_proj.weight), w(m.down_proj.bias)
            self.layers.append(L)
        self.embed = w(inner.embed_tokens.weight)
        self.norm = w(inner.norm.weight)
        head = None if self.hidden else self.model.lm_head
        self.lm_head = None if head is None else w(head.weight)
        self.lm_bias = None if head is None else w(getattr(head, "bias", None))
        rot = inner.rotary_emb
        self.inv_freq = rot.inv_freq.detach().to(self.device, torch.float32)
        self.attention_scaling = float(getattr(rot, "attention_scaling", 1.0))
        if self._cos is not None:
            self._build_rope(self._cos.shape[0])
        return True

    def ensure_rope(self, n: int) -> None:
        """Make sure the rotary tables cover positions ``0..n-1`` (prefill-only work needs no KV cache)."""
        if self._cos is None or self._cos.shape[0] < n:
            self._build_rope(n)

    def _build_rope(self, n: int) -> None:
        # Exactly LlamaRotaryEmbedding.forward: float positions * inv_freq, duplicated, cos/sin.
        pos = torch.arange(n, device=self.device).float()
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self._cos = (emb.cos() * self.attention_scaling).to(self.dtype)
        self._sin = (emb.sin() * self.attention_scaling).to(self.dtype)

    # -------------------------------------------------------------------- cache
    def ensure_cache(self, seq_len: int) -> None:
        """Make sure the cache holds at least ``seq_len`` positions per row."""
        if seq_len <= self.seq_len and len(self.k_cache) == self.n_layers:
            return
        # One tensor for all layers (a prefix cache reads a token of every layer in one gather),
        # used as one contiguous view per layer. What the rows held is kept (a prefix cache may
        # point at it). The rest is zeroed for SDPA, which reads masked positions too (0 * NaN of
        # uninitialised memory would be NaN); the kernel reads only positions written before, so
        # there the OS backs a page only once it is first written: memory follows what is used.
        shape = (self.n_layers, self.rows, self.n_kv, seq_len, self.head_dim)
        k_all = torch.empty(shape, device=self.device, dtype=self.dtype)
        v_all = torch.empty(shape, device=self.device, dtype=self.dtype)
        old = self.seq_len if len(self.k_cache) == self.n_layers else 0
        for new, prev in ((k_all, self.k_all if old else None), (v_all, self.v_all if old else None)):
            if old:
                new[:, :, :, :old] = prev
            if self.attention != "kernel":
                new[:, :, :, old:] = 0
        self.k_all, self.v_all = k_all, v_all
        self.k_cache, self.v_cache = list(self.k_all.unbind(0)), list(self.v_all.unbind(0))
        self.seq_len = seq_len
        self._build_rope(max(seq_len, 0 if self._cos is None else self._cos.shape[0]))
        self._key_pos = torch.arange(seq_len, device=self.device)
        # flat slot index of (row, kv_head, position=0) for scattering one token per row
        self._row_base = (
            torch.arange(self.rows, device=self.device)[:, None] * (self.n_kv * seq_len)
            + torch.arange(self.n_kv, device=self.device)[None, :] * seq_len
        )

    def read_tokens(self, rows: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V ``[N, layers, kv_heads, head_dim]`` at cache positions ``pos[i]`` of rows ``rows[i]``."""
        return self.k_all.permute(1, 3, 0, 2, 4)[rows, pos], self.v_all.permute(1, 3, 0, 2, 4)[rows, pos]

    def write_tokens(self, rows: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write K/V ``[N, layers, kv_heads, head_dim]`` at cache positions ``pos[i]`` of rows ``rows[i]``."""
        self.k_all.permute(1, 3, 0, 2, 4)[rows, pos] = k.to(self.dtype)
        self.v_all.permute(1, 3, 0, 2, 4)[rows, pos] = v.to(self.dtype)

    def swap_rows(self, a: torch.Tensor, b: torch.Tensor, length: int) -> None:
        """Exchange the first ``length`` cache positions of rows ``a`` and rows ``b``."""
        for c in (self.k_all, self.v_all):
            tmp = c[:, a, :, :length]
            c[:, a, :, :length] = c[:, b, :, :length]
            c[:, b, :, :length] = tmp

    def copy_rows(self, dst: torch.Tensor, src: torch.Tensor, length: int) -> None:
        """Copy the first ``length`` cache positions of rows ``src`` into rows ``dst``."""
        for kc, vc in zip(self.k_cache, self.v_cache):
            kc[dst, :, :length] = kc[src, :, :length]
            vc[dst, :, :length] = vc[src, :, :length]

    # ------------------------------------------------------------------ forward
    def _qkv(self, L: _Layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Project, split into heads and apply RoPE. Returns q, k, v as [..., heads, head_dim]."""
        nh, nkv, d = self.n_heads, self.n_kv, self.head_dim
        qkv = _project(h, L.wqkv, L.bqkv).unflatten(-1, (nh + 2 * nkv, d))
        qk = qkv[..., : nh + nkv, :]
        qk = qk * cos + _rotate_half(qk) * sin
        return qk[..., :nh, :], qk[..., nh:, :], qkv[..., nh + nkv :, :]

    def _mlp_block(self, L: _Layer, x: torch.Tensor) -> torch.Tensor:
        h = _rms_norm(x, L.ln2, self.eps)
        gate, up = _project(h, L.wgu, L.bgu).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, L.wd, L.bd)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = _rms_norm(x, self.norm, self.eps)
        return x if self.lm_head is None else F.linear(x, self.lm_head, self.lm_bias).float()

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], starts: list[int] | None = None, prefix_k: torch.Tensor | None = None,
                prefix_v: torch.Tensor | None = None, logprobs: list[bool] | None = None):
        """Run a batch of prompts through the model.

        The projections and MLPs run on the prompts' tokens packed back to back
        (no padding tokens to pay for); only attention uses a padded
        ``[P, heads, T, head_dim]`` layout with a causal + length mask.

        With a prefix cache, ``starts[i]`` tokens of prompt ``i`` are already known:
        their K/V are given in ``prefix_k``/``prefix_v`` (``[P, C, layers, kv_heads,
        head_dim]``, ``C >= max(starts)``, rows past ``starts[i]`` ignored) and only
        tokens ``starts[i]:`` are computed; their queries (at their true positions)
        attend to the given prefix and causally to each other. ``starts[i] < len``.

        Returns ``(keys, values, logits, lps)``: per layer K and V of the whole
        prompts, ``[P, kv_heads, T, head_dim]`` (to be copied into cache rows with
        :meth:`write_prefill`, possibly several rows per prompt); the logits of each
        prompt's last token, ``[P, vocab]``; and where ``logprobs[i]``, ``lps[i]``:
        the log-probability (temperature 1) of each computed token after the first,
        ``prompts[i][starts[i] + 1:]``, given the tokens before it (else ``None``).
        """
        dev, nh, nkv, d = self.device, self.n_heads, self.n_kv, self.head_dim
        lens = [len(p) for p in prompts]
        starts = list(starts) if starts is not None else [0] * len(prompts)
        sl = [n - c for n, c in zip(lens, starts)]  # tokens computed per prompt
        if min(sl) < 1:
            raise ValueError("every prompt needs at least one token to compute")
        P, T, S, N = len(prompts), max(lens), max(sl), sum(sl)
        ids = torch.tensor([t for p, c in zip(prompts, starts) for t in p[c:]], dtype=torch.long).to(dev)
        positions = torch.cat([torch.arange(c, n) for c, n in zip(starts, lens)]).to(dev)
        q_padded = N < P * S  # queries: [P, S] layout; keys: [P, T] (the same unless a prefix is given)
        k_padded = q_padded or S < T
        if q_padded:  # where each packed token sits in the padded layouts
            q_slot = torch.cat([torch.arange(n) + i * S for i, n in enumerate(sl)]).to(dev)
        if k_padded:
            k_slot = torch.cat([torch.arange(c, n) + i * T for i, (c, n) in enumerate(zip(starts, lens))]).to(dev)
        C = max(starts)
        if C and prefix_k is None:
            raise ValueError("starts > 0 need prefix_k/prefix_v")
        q_pos = torch.tensor(starts, device=dev)[:, None] + torch.arange(S, device=dev)[None, :]  # [P, S]
        mask = (torch.arange(T, device=dev)[None, None, :] <= q_pos[:, :, None])[:, None]  # [P, 1, S, T]

        def keys_of(t, prefix):  # [N, kv, D] (+ the given prefix [P, C, kv, D]) -> [P, kv, T, D]
            if k_padded:
                full = t.new_zeros(P * T, nkv, d)
                if C:
                    full.view(P, T, nkv, d)[:, :C] = prefix
                t = full.index_copy_(0, k_slot, t)
            return t.view(P, T, nkv, d).transpose(1, 2).contiguous()

        cos, sin = self._cos[positions][:, None, :], self._sin[positions][:, None, :]  # [N, 1, D]
        x = F.embedding(ids, self.embed)  # [N, hidden]
        keys, values = [], []
        for i, L in enumerate(self.layers):
            h = _rms_norm(x, L.ln1, self.eps)
            q, k, v = self._qkv(L, h, cos, sin)  # [N, heads, D]
            if q_padded:
                q = q.new_zeros(P * S, nh, d).index_copy_(0, q_slot, q)
            q = q.view(P, S, nh, d).transpose(1, 2)
            k = keys_of(k, prefix_k[:, :C, i] if C else None)
            v = keys_of(v, prefix_v[:, :C, i] if C else None)
            keys.append(k)
            values.append(v)
            if self.groups > 1:
                k, v = k.repeat_interleave(self.groups, dim=1), v.repeat_interleave(self.groups, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
            o = o.transpose(1, 2).reshape(P * S, nh * d)
            if q_padded:
                o = o.index_select(0, q_slot)
            x = x + F.linear(o, L.wo, L.bo)
            x = self._mlp_block(L, x)
        ends = torch.tensor(sl, device=dev).cumsum(0)
        lps: list[torch.Tensor | None] = [None] * P
        want = [i for i in range(P) if logprobs is not None and logprobs[i]]
        if want:  # token j's logprob comes from the output at j - 1
            off = [0, *ends.tolist()]
            rows = torch.cat([torch.arange(off[i], off[i + 1] - 1) for i in want]).to(dev)
            nxt = torch.tensor([t for i in want for t in prompts[i][starts[i] + 1 :]], dtype=torch.long, device=dev)
            lp = torch.log_softmax(self._logits(x[rows]), -1).gather(1, nxt[:, None]).squeeze(1)
            for i, part in zip(want, lp.split([sl[i] - 1 for i in want])):
                lps[i] = part
        return keys, values, self._logits(x[ends - 1]), lps

    @torch.inference_mode()
    def write_prefill(self, rows: torch.Tensor, src: torch.Tensor, keys, values) -> None:
        """Copy prefill K/V of prompts ``src`` (indices into the prefill batch) into cache ``rows``."""
        T = keys[0].shape[2]
        for kc, vc, k, v in zip(self.k_cache, self.v_cache, keys, values):
            kc[rows, :, :T] = k[src]
            vc[rows, :, :T] = v[src]

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, pos: torch.Tensor, n: int, span: int) -> torch.Tensor:
        """One decode step for cache rows ``0..n-1``.

        ``tokens[i]`` is fed at position ``pos[i]`` of row ``i`` (its K/V is written
        there); ``span`` > max(pos) bounds the part of the cache attended to.
        Returns logits ``[n, vocab]`` for the next token of every row.
        """
        if self.attention == "kernel":
            return self._decode_fused(tokens, pos, n, span)
        nkv, G, d = self.n_kv, self.groups, self.head_dim
        cos, sin = self._cos[pos][:, None, :], self._sin[pos][:, None, :]  # [n, 1, D]
        mask = (self._key_pos[None, :span] <= pos[:, None])[:, None, None, :]  # [n, 1, 1, span]
        slot = (self._row_base[:n] + pos[:, None]).flatten()  # [n * kv_heads]
        x = F.embedding(tokens, self.embed)  # [n, hidden]
        for L, kc, vc in zip(self.layers, self.k_cache, self.v_cache):
            h = _rms_norm(x, L.ln1, self.eps)
            q, k, v = self._qkv(L, h, cos, sin)  # [n, heads, D]
            kc.view(-1, d).index_copy_(0, slot, k.reshape(-1, d))
            vc.view(-1, d).index_copy_(0, slot, v.reshape(-1, d))
            o = F.scaled_dot_product_attention(
                q.reshape(n, nkv, G, d),  # the G query heads of a KV head as G "positions"
                kc[:n, :, :span],
                vc[:n, :, :span],
                attn_mask=mask,
                scale=self.scaling,
            )
            x = x + F.linear(o.reshape(n, -1), L.wo, L.bo)
            x = self._mlp_block(L, x)
        return self._logits(x)

    def _decode_fused(self, tokens: torch.Tensor, pos: torch.Tensor, n: int, span: int) -> torch.Tensor:
        """:meth:`decode` with the compiled kernels (CPU float32): per layer four matmuls and three
        calls, RMSNorm (with the residual add before it), rotary + cache write + attention, and
        SiLU-gate, instead of some thirty torch ops whose dispatch cost more than their arithmetic."""
        threads = kernels.threads()
        if span > self.seq_len or pos.dtype != torch.int64 or not pos.is_contiguous():
            raise ValueError(f"decode: span {span} > cache length {self.seq_len}, or pos not contiguous int64")
        x = F.embedding(tokens, self.embed).contiguous()  # [n, hidden]
        resid = None  # the last block's output, added to x by the next RMSNorm
        for L, kc, vc in zip(self.layers, self.k_cache, self.v_cache):
            h = kernels.rms_norm(x, L.ln1, self.eps, resid)
            qkv = _project(h, L.wqkv, L.bqkv).contiguous()
            o = kernels.rope_attention(qkv, self._cos, self._sin, kc, vc, pos, self.n_heads, self.scaling, threads)
            h = kernels.rms_norm(x, L.ln2, self.eps, F.linear(o, L.wo, L.bo))
            act = kernels.silu_mul(_project(h, L.wgu, L.bgu).contiguous(), threads)
            resid = F.linear(act, L.wd, L.bd)
        x = kernels.rms_norm(x, self.norm, self.eps, resid)
        return x if self.lm_head is None else F.linear(x, self.lm_head, self.lm_bias).float()
