"""Training a value model on the trainer core: its data plan and its two losses, nothing else.

The loop, batching, checkpoints, exact resume, metrics and the final directory are SFT's
(:func:`searchrl.train.sft.fit_batches` on :mod:`searchrl.train.core`); this file turns value
records into token sequences with a loss mask and a target, and picks the loss:

* **scalar / orm** records ``{"prompt_ids", "state_ids", "target"}``: the value of the state
  (prompt + state) is read at its last token and regressed onto ``target`` in [0, 1] with
  squared error (``value_mse``; ReST-RL eq. 6, ReST-MCTS*). Value targets (ReST-RL
  Algorithm 2, MCTS*'s inferred values) and ORM labels (1.0 / 0.0 on complete responses)
  have this shape.
* **3class** records ``{"prompt_ids", "state_ids", "rollout_ids", "label"}`` (VGS): the
  sequence is prompt + roll-in + roll-out, the label (0 incomplete, 1 correct, 2 incorrect)
  is copied to every roll-out token, and the cross-entropy is masked to the roll-out tokens
  (roll-in masked out), averaged per sequence, then over the sequences (``value_ce``).

Both losses are means over *sequences*, so a step's normaliser is its number of sequences
(all micro-batches, all processes). Examples longer than ``max_seq_len`` are dropped, never
cut (a cut state is another state, and the target would be wrong).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .accel import make_accelerator
from .checkpoint import load_finished
from .config import ValueTrainConfig
from .losses import get_loss
from .sft import Objective, TokenizedData, fit_batches

logger = logging.getLogger(__name__)

LABEL_FIELDS = {"scalar": "target", "orm": "target", "3class": "label"}


def check_record(rec: dict, kind: str) -> tuple[str, str] | None:
    """``(field, problem)`` when ``rec`` is not a valid ``kind`` record, else None."""
    ids = ["prompt_ids", "state_ids"] + (["rollout_ids"] if kind == "3class" else [])
    for name in ids:
        v = rec.get(name)
        if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in v):
            return name, "missing or not a list of token ids"
    if not rec["prompt_ids"] and not rec["state_ids"]:
        return "state_ids", "empty: an empty sequence has no value"
    label = LABEL_FIELDS[kind]
    v = rec.get(label)
    if kind == "3class":
        if not isinstance(v, int) or isinstance(v, bool) or v not in (0, 1, 2):
            return label, f"must be 0 (incomplete), 1 (correct) or 2 (incorrect), got {v!r}"
        if not rec["rollout_ids"]:
            return "rollout_ids", "empty: the loss is on roll-out tokens"
    elif not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) <= 1.0:
        return label, f"must be a number in [0, 1], got {v!r}"
    return None


def tokenize_value_records(records: Sequence[dict], kind: str, max_seq_len: int) -> tuple[TokenizedData, np.ndarray]:
    """Value records as token sequences whose loss positions start at ``n_prompt`` (see module docs),
    and their targets; too-long records are dropped (counted in ``dropped``)."""
    seqs, starts, targets, dropped = [], [], [], 0
    for i, rec in enumerate(records):
        bad = check_record(rec, kind)
        if bad is not None:
            raise ValueError(f"value record {i}: field '{bad[0]}': {bad[1]}")
        head = list(rec["prompt_ids"]) + list(rec["state_ids"])
        tail = list(rec["rollout_ids"]) if kind == "3class" else []
        ids = head + tail
        if len(ids) > max_seq_len:
            dropped += 1
            continue
        seqs.append(np.asarray(ids, dtype=np.int32))
        starts.append(len(head) if kind == "3class" else len(ids) - 1)
        targets.append(rec[LABEL_FIELDS[kind]])
    starts_a = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
    data = TokenizedData(seqs, starts_a, lengths, lengths - starts_a, dropped, 0)
    return data, np.asarray(targets, dtype=np.int64 if kind == "3class" else np.float32)


def collate_value(seqs: Sequence[np.ndarray], starts: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and the loss mask (True from each row's start to its end)."""
    longest = max(len(s) for s in seqs)
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=bool)
    for r, (s, start) in enumerate(zip(seqs, starts)):
        ids[r, :len(s)] = s
        mask[r, start:len(s)] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)


def train_value(model, tokenizer, records: Sequence[dict], cfg: ValueTrainConfig, *,
                callback: Callable[[int, dict | None], Any] | None = None, accelerator=None,
                progress: bool = True) -> dict:
    """Train ``model`` (a :class:`~searchrl.models.value.ValueModel` of ``cfg.kind``'s head) in place on
    value ``records``; checkpoints, metrics and ``output_dir/final`` as every trainer on the core.

    Returns the summary (``final_loss`` is the loss of the last logged window), or the stored one
    with ``skipped=True`` when the run had finished.
    """
    t_call = time.perf_counter()
    if (model.classes == 3) != (cfg.kind == "3class"):  # orm data trains a scalar head
        raise ValueError(f"the model's head is {model.kind!r}, the data is {cfg.kind!r}")
    finished = load_finished(model, cfg.output_dir, "value model")
    if finished is not None:
        return {**finished, "wall_time_s": time.perf_counter() - t_call}
    accelerator = make_accelerator(cfg, accelerator)
    data, targets = tokenize_value_records(records, cfg.kind, cfg.max_seq_len)
    if not data.seqs:
        raise ValueError(f"no trainable value records ({len(records)} given, {data.dropped} longer than "
                         f"max_seq_len={cfg.max_seq_len})")
    if accelerator.is_main_process and data.dropped:
        logger.warning("value data: %d records longer than max_seq_len=%d dropped", data.dropped, cfg.max_seq_len)
    pad_id = 0
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        pad_id = tokenizer.pad_token_id
    three = cfg.kind == "3class"
    loss_fn = get_loss("value_ce" if three else "value_mse")

    def loss(ddp_model, rows: list[int], device) -> torch.Tensor:
        ids, mask = collate_value([data.seqs[i] for i in rows], [int(data.n_prompt[i]) for i in rows], pad_id)
        out = ddp_model(ids.to(device))  # the head's raw outputs (ValueModel.forward)
        target = torch.from_numpy(targets[rows]).to(device)
        pred = out if three else torch.sigmoid(out.float())
        return loss_fn(pred, target, mask.to(device))[0]

    positives = float((targets == 1).mean()) if three else float(targets.mean())
    objective = Objective(f"value_{cfg.kind}", loss, terms=len)
    return fit_batches(model, tokenizer, data, cfg, objective, accelerator=accelerator, callback=callback,
                       progress=progress, started=t_call,
                       summary={"num_examples": len(records), "trained_examples": len(data.seqs),
                                "dropped_examples": data.dropped, "kind": cfg.kind,
                                "mean_target" if not three else "correct_fraction": positives})


__all__ = ["train_value", "tokenize_value_records", "collate_value", "check_record", "LABEL_FIELDS"]
