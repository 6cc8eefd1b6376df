"""Direct Preference Optimization (DPO) on the trainer core: its data plan and its loss, nothing else.

Why this file exists
--------------------
DPO (Rafailov et al. 2023) learns from pairs of responses to one prompt, one preferred
("chosen") and one not ("rejected"), without a reward model or sampling: it is the
ReST-DPO baseline of ReST-RL, where the pairs are the policy's own correct and incorrect
samples. The loop, batching, checkpoints, exact resume, metrics and the final directory
are SFT's (:func:`searchrl.train.sft.fit_batches` on :mod:`searchrl.train.core`); this
file turns pairs into token rows, computes the frozen reference's log-probabilities, and
picks the loss:

* **What is learned.** With the implicit reward ``r(x, y) = beta * log(pi(y|x) / pi_ref(y|x))``,
  the loss of a pair is ``-log sigmoid(r(x, y_chosen) - r(x, y_rejected))`` (DPO eq. 7;
  ``"dpo"`` in :mod:`searchrl.train.losses`, with cDPO's label smoothing as an option).
  ``log pi(y|x)`` is the *sum* of the response tokens' log-probabilities (fp32
  log-softmax), the prompt's tokens carry none. The policy moves its log-ratio to the
  reference up on chosen responses and down on rejected ones; ``beta`` says how much
  that ratio is worth (small beta = far from the reference).
* **Records.** ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` (token ids, used as given)
  or ``{"prompt", "chosen", "rejected"}`` text: each part is tokenized on its own without
  special tokens and the tokenizer's EOS is appended to each response, as
  :func:`~searchrl.train.sft.tokenize_examples` does for SFT (so the model learns where
  the preferred response stops). Responses must not be empty. With an empty prompt the
  first response token has no log-probability (nothing predicts it). A bad record is a
  ValueError naming its index and field.
* **Too-long pairs** (prompt + either response longer than ``max_seq_len``) are dropped,
  never cut (a cut response is another response), counted and logged.
* **The reference** is frozen: its sequence log-probabilities are computed once, before
  the loop (``no_grad``, eval mode, the run's autocast, batches in a fixed order, so a
  resumed run recomputes the same numbers), and the reference is not needed afterwards.
  ``reference=None`` means the model as given, before any step: its log-probabilities
  are taken before training starts, so no copy of it is kept. A resumed run therefore
  has to be given the same starting model (or reference) as the first: the reference's
  weights are part of the data fingerprint, and a rerun with other ones is refused
  ("different settings or data") instead of mixing two references.
* **Batches.** A row of the batch plan is a *pair*, and costs ``2 * (len(prompt) +
  max(len(chosen), len(rejected)))`` tokens: its two sequences are forwarded together
  (chosen rows, then rejected rows, one right-padded tensor), so a batch of ``n`` pairs
  whose longest sequence has ``L`` tokens is a ``2n x L`` tensor, exactly the
  ``rows * longest_row <= tokens_per_batch`` budget of the plan. Because of that length,
  the ``tokens`` counters and ``charts/padding_fraction`` of the metrics count the
  shorter response's padding up to the longer one as tokens; ``response_tokens`` counts
  the predicted response tokens exactly.
* **Normaliser.** The loss is a mean over *pairs*: a step's normaliser is its number of
  pairs (all micro-batches, all processes).
* **Reward accuracy.** The summary's ``reward_accuracy`` is the fraction of pairs whose
  chosen implicit reward exceeded the rejected one, and ``reward_margin`` the mean of
  ``r_chosen - r_rejected``, over the pairs of the last logged window (measured in the
  forward pass of the step that trained on them, i.e. before its update; in a
  multi-process run, an idle process's repeated batch at an epoch's end counts too).

Dropout makes the policy's log-probabilities noisy where the reference's are not (it is
evaluated in eval mode); DPO recipes usually train with dropout off.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .accel import make_accelerator
from .checkpoint import load_finished
from .config import DPOConfig
from .losses import IGNORE_INDEX, get_loss, sequence_logps
from .sft import Objective, TokenizedData, fit_batches

logger = logging.getLogger(__name__)

ID_FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids")
TEXT_FIELDS = ("prompt", "chosen", "rejected")


# -----------------------------------------------------------------------------
# data: pairs as token rows


@dataclass
class PairData(TokenizedData):
    """Preference pairs as rows of the batch plan.

    ``seqs[i]`` is prompt + chosen + rejected, ``n_prompt[i]`` the prompt's length and
    ``n_chosen[i]`` the chosen response's; ``lengths[i] = 2 * (prompt + longer response)``
    is what the pair costs in a batch (module docs), ``n_loss[i]`` its predicted response
    tokens (both responses). ``reference`` is the reference model's weight fingerprint,
    part of :meth:`fingerprint`.
    """

    n_chosen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reference: str = ""

    def parts(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prompt, chosen, rejected) token ids of pair ``i``."""
        s, p, c = self.seqs[i], int(self.n_prompt[i]), int(self.n_chosen[i])
        return s[:p], s[p:p + c], s[p + c:]

    def fingerprint(self) -> str:
        h = hashlib.sha256(super().fingerprint().encode())
        h.update(self.n_chosen.tobytes())
        h.update(self.reference.encode())
        return h.hexdigest()


def _bad_ids(v, vocab_size: int | None) -> str | None:
    if isinstance(v, np.ndarray):
        if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
            return "must be a list of token ids"
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        return f"must be a list of token ids, got {type(v).__name__}"
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in v):
        return "must be a list of token ids (ints)"
    if v and (min(v) < 0 or (vocab_size is not None and max(v) >= vocab_size)):
        return f"token ids must be in [0, {vocab_size if vocab_size is not None else 'vocab'}), got {min(v)}..{max(v)}"
    return None


def tokenize_pairs(pairs: Sequence[dict], tokenizer, max_seq_len: int, *, vocab_size: int | None = None,
                   chunk: int = 1024) -> PairData:
    """Turn ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` or ``{"prompt", "chosen", "rejected"}`` dicts
    into a :class:`PairData` (module docs); pairs with a sequence longer than ``max_seq_len`` are dropped.

    A bad record is a ValueError ``"DPO pair <i>: field '<name>': <problem>"``.
    """
    n = len(pairs)
    toks: list[list[list[int]] | None] = [None] * n
    text_idx = []
    for i, rec in enumerate(pairs):
        if not isinstance(rec, dict):
            raise ValueError(f"DPO pair {i}: expected a dict, got {type(rec).__name__}")
        if any(k in rec for k in ID_FIELDS):
            for key in ID_FIELDS:
                if key not in rec:
                    raise ValueError(f"DPO pair {i}: field '{key}': missing (pre-tokenized pairs need "
                                     f"{', '.join(ID_FIELDS)})")
                bad = _bad_ids(rec[key], vocab_size)
                if bad is None and key != "prompt_ids" and len(rec[key]) == 0:
                    bad = "empty: a response needs at least one token"
                if bad is not None:
                    raise ValueError(f"DPO pair {i}: field '{key}': {bad}")
            toks[i] = [np.asarray(rec[k], dtype=np.int64).tolist() for k in ID_FIELDS]
        else:
            for key in TEXT_FIELDS:
                if not isinstance(rec.get(key), str):
                    raise ValueError(f"DPO pair {i}: field '{key}': must be a string (or give "
                                     f"{', '.join(ID_FIELDS)}), got {rec.get(key)!r:.80}")
            text_idx.append(i)
    if text_idx:
        if tokenizer is None:
            raise ValueError("text DPO pairs need a tokenizer")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; it is appended to every text response")
        for start in range(0, len(text_idx), chunk):
            idx = text_idx[start:start + chunk]
            p, c, r = (tokenizer([pairs[i][key] for i in idx], add_special_tokens=False)["input_ids"]
                       for key in TEXT_FIELDS)
            for j, i in enumerate(idx):
                toks[i] = [list(p[j]), list(c[j]) + [eos], list(r[j]) + [eos]]
                for key, ids in zip(TEXT_FIELDS, toks[i]):
                    if vocab_size is not None and max(ids, default=0) >= vocab_size:
                        raise ValueError(f"DPO pair {i}: field '{key}': the tokenizer gives ids >= the model's "
                                         f"vocabulary size {vocab_size}")

    seqs, n_prompt, n_chosen, lengths, n_loss, dropped = [], [], [], [], [], 0
    for p, c, r in toks:
        longest = len(p) + max(len(c), len(r))
        if longest > max_seq_len:
            dropped += 1
            continue
        seqs.append(np.asarray(p + c + r, dtype=np.int32))
        n_prompt.append(len(p))
        n_chosen.append(len(c))
        lengths.append(2 * longest)
        n_loss.append(len(c) + len(r) - (2 if not p else 0))  # with no prompt, nothing predicts token 0
    as64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return PairData(seqs, as64(n_prompt), as64(lengths), as64(n_loss), dropped, 0, n_chosen=as64(n_chosen))


def collate_pairs(data: PairData, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pairs ``rows`` as one right-padded batch of ``2 * len(rows)`` sequences: rows ``0..n-1`` are
    prompt + chosen, rows ``n..2n-1`` prompt + rejected, in the order of ``rows``.

    ``labels`` are the input ids on response tokens and -100 on prompt and padding
    (unshifted; :func:`~searchrl.train.losses.sequence_logps` shifts).
    """
    seqs = [data.parts(i) for i in rows]
    full = [(p, c) for p, c, _ in seqs] + [(p, r) for p, _, r in seqs]
    longest = max(len(p) + len(resp) for p, resp in full)
    input_ids = np.full((len(full), longest), pad_id, dtype=np.int64)
    labels = np.full((len(full), longest), IGNORE_INDEX, dtype=np.int64)
    for k, (p, resp) in enumerate(full):
        n = len(p) + len(resp)
        input_ids[k, :len(p)] = p
        input_ids[k, len(p):n] = resp
        labels[k, len(p):n] = resp
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}


def pair_logps(model, data: PairData, rows: Sequence[int], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probabilities ``[len(rows)]`` of the chosen and the rejected responses of pairs
    ``rows`` under ``model``, from one forward pass."""
    batch = collate_pairs(data, rows, pad_id)
    logits = model(input_ids=batch["input_ids"].to(device, non_blocking=True), use_cache=False).logits
    logps = sequence_logps(logits, batch["labels"].to(device, non_blocking=True))
    return logps[:len(rows)], logps[len(rows):]


# -----------------------------------------------------------------------------
# the reference


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of ``model``'s state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


@torch.no_grad()
def reference_logps(reference, data: PairData, tokens_per_batch: int, pad_id: int, accelerator,
                    progress: bool = True, move_back: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen ``reference``'s chosen and rejected sequence log-probabilities of every pair, fp32 ``[N]``
    on the accelerator's device.

    Pairs are cut longest first into batches of the plan's token budget (a fixed order, so the
    numbers are the same on every call); in eval mode, under the run's autocast. With several
    processes each computes every P-th batch and the results are summed across processes.
    ``reference`` is put back in its mode afterwards, and on its device with ``move_back``.
    """
    from tqdm.auto import tqdm

    device, P, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    n = len(data.seqs)
    order = np.argsort(-data.lengths, kind="stable")
    batches, i = [], 0
    while i < n:
        rows = max(1, tokens_per_batch // int(data.lengths[order[i]]))
        batches.append(order[i:i + rows].tolist())
        i += rows
    out = torch.zeros(2, n, dtype=torch.float32, device=device)
    was_training = reference.training
    home = next(reference.parameters()).device
    reference.eval().to(device)
    try:
        show = progress and accelerator.is_main_process
        for rows in tqdm(batches[rank::P], desc="dpo reference", unit="batch", disable=not show):
            with accelerator.autocast():
                chosen, rejected = pair_logps(reference, data, rows, pad_id, device)
            idx = torch.as_tensor(rows, device=device)
            out[0, idx] = chosen.float()
            out[1, idx] = rejected.float()
    finally:
        reference.train(was_training)
        if move_back:
            reference.to(home)
    if P > 1:  # each pair was computed by exactly one process
        out = accelerator.reduce(out, reduction="sum")
    return out[0], out[1]


# -----------------------------------------------------------------------------
# training


def train_dpo(model, reference, tokenizer, pairs: Sequence[dict], cfg: DPOConfig, *,
              callback: Callable[[int, dict | None], Any] | None = None, accelerator=None,
              progress: bool = True) -> dict:
    """Train ``model`` (in place) with DPO on preference ``pairs``; checkpoints, metrics and
    ``output_dir/final`` as every trainer on the core.

    Args:
        model: a causal LM (``model(input_ids=...).logits``), ideally fp32: the policy.
        reference: the frozen reference policy (never trained), or None for ``model`` as given
            (before any step). A rerun that resumes must be given the same one (module docs).
        tokenizer: for text pairs (EOS appended) and saved with the model; may be None when every
            pair is pre-tokenized (padding then uses id 0).
        pairs: ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` or ``{"prompt", "chosen", "rejected"}``.
        cfg: :class:`~searchrl.train.config.DPOConfig`.
        callback: ``callback(step, logs)`` on every process after each optimizer step, as for
            :func:`~searchrl.train.sft.train_sft`.
        accelerator: an existing :class:`accelerate.Accelerator`, else one is made from ``cfg``.

    Returns:
        The summary of :func:`~searchrl.train.sft.fit_batches` (``final_loss`` is the last logged
        window's mean loss per pair) with ``num_pairs``, ``trained_pairs``, ``dropped_pairs``,
        ``reward_accuracy`` and ``reward_margin`` (module docs); or the stored one with
        ``skipped=True`` when the run had finished.
    """
    t_call = time.perf_counter()
    finished = load_finished(model, cfg.output_dir, "DPO")
    if finished is not None:
        return {**finished, "wall_time_s": time.perf_counter() - t_call}
    accelerator = make_accelerator(cfg, accelerator)
    reference = model if reference is None else reference  # its numbers are taken before any step
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    data = tokenize_pairs(pairs, tokenizer, cfg.max_seq_len, vocab_size=getattr(emb, "num_embeddings", None))
    if not data.seqs:
        raise ValueError(f"no trainable DPO pairs ({len(pairs)} given, {data.dropped} longer than "
                         f"max_seq_len={cfg.max_seq_len})")
    if accelerator.is_main_process and data.dropped:
        logger.warning("DPO data: %d of %d pairs longer than max_seq_len=%d dropped", data.dropped, len(pairs),
                       cfg.max_seq_len)
    pad_id = 0
    if tokenizer is not None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    data.reference = weights_fingerprint(reference)
    ref_chosen, ref_rejected = reference_logps(reference, data, cfg.tokens_per_batch, pad_id, accelerator,
                                               progress=progress, move_back=reference is not model)
    loss_fn = get_loss("dpo")
    device = accelerator.device
    window = torch.zeros(3, device=device)  # pairs with r_chosen > r_rejected, sum of margins, pairs

    def loss(ddp_model, rows: list[int], device) -> torch.Tensor:
        chosen, rejected = pair_logps(ddp_model, data, rows, pad_id, device)
        idx = torch.as_tensor(rows, device=device)
        rc, rr = ref_chosen[idx], ref_rejected[idx]
        with torch.no_grad():
            margin = cfg.beta * ((chosen.float() - rc) - (rejected.float() - rr))
            window.add_(torch.stack([(margin > 0).float().sum(), margin.sum(), margin.new_tensor(len(rows))]))
        return loss_fn(chosen, rejected, rc, rr, cfg.beta, cfg.label_smoothing)[0]

    summary: dict[str, Any] = {"num_pairs": len(pairs), "trained_pairs": len(data.seqs),
                               "dropped_pairs": data.dropped,
                               "reward_accuracy": None, "reward_margin": None}

    def on_step(step: int, logs: dict | None) -> Any:
        if logs is not None:  # a window closed (always at the last step): fit_batches merges `summary` at the end
            correct, margins, n = accelerator.reduce(window.clone(), reduction="sum").tolist()
            summary["reward_accuracy"], summary["reward_margin"] = correct / max(n, 1), margins / max(n, 1)
            window.zero_()
        if callback is not None:
            return callback(step, logs)

    return fit_batches(model, tokenizer, data, cfg, Objective("dpo", loss, terms=len), accelerator=accelerator,
                       callback=on_step, progress=progress, started=t_call, summary=summary)


__all__ = ["train_dpo", "tokenize_pairs", "collate_pairs", "pair_logps", "reference_logps", "weights_fingerprint",
           "PairData"]
