"""Per-sample bookkeeping of the sampler: one generated sequence, its text, its randomness and its row settings.

:class:`Seq` is one sample being generated (tokens, logprobs, incremental text, the rules that
end it, its own seed: see :mod:`searchrl.engine.sampler`, "Per-sample randomness");
:class:`RowState` holds the sampling settings of the rows decoded together as tensors, so
choosing the next token of every row is one vectorised op. Both backends (the continuous batch
of :mod:`searchrl.engine.batch` and the HF fallback of :mod:`searchrl.engine.hf_backend`) drive
them the same way, so their outputs follow the same rules (seeds, stop strings, logprobs).
"""

from __future__ import annotations

import hashlib

import torch

from .types import CompletionOutput, SamplingParams

__all__ = ["Seq", "RowState", "text_decoder"]


def _sample_seed(seed: int | None, request_id: int, index: int) -> int:
    key = f"req:{request_id}:{index}" if seed is None else f"seed:{seed}:{index}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1


def text_decoder(tokenizer):
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
        self.decode = decode  # ids -> text (text_decoder)
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


class Seq:
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


class RowState:
    """Per-row sampling settings as tensors, so token choice is one vectorised op."""

    def __init__(self, rows: int, width: int, device):
        self.temp = torch.zeros(rows, device=device)
        self.top_p = torch.ones(rows, device=device)
        self.u = torch.zeros(rows, max(width, 1), device=device)
        self.step = torch.zeros(rows, dtype=torch.long, device=device)  # tokens sampled so far
        self.greedy = [True] * rows
        self.nucleus = [False] * rows

    def set(self, row: int, seq: Seq, u: torch.Tensor | None) -> None:
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
