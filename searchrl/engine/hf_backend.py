"""The fallback backend: the HF model's own ``forward`` and cache, for any architecture.

Models the static-cache engine does not support (see :func:`searchrl.engine.llama.unsupported_reason`),
or ``Sampler(..., backend="hf")``, run here: static batches of ``max_batch_size`` samples, left
padding, the same per-sample bookkeeping (:mod:`searchrl.engine.sequence`) and so the same outputs
and API, only slower.
"""

from __future__ import annotations

import torch

from .sequence import RowState, Seq

__all__ = ["HFBackend"]


class HFBackend:
    """Generation and token logprobs through the HF model's forward (see module docs).

    ``eos_token_ids``: their smallest pads prompts when the tokenizer has no pad token.
    ``max_seq_len`` (or None): positions per sample (prompt + completion); a sample that
    reaches it finishes with ``"length"``.
    """

    def __init__(self, model, tokenizer, eos_token_ids: set[int], max_batch_size: int, max_seq_len: int | None):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len

    @torch.inference_mode()
    def run(self, seqs: list[list[Seq]], bar) -> None:
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
            state = RowState(n, width, dev)
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
    def token_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
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
