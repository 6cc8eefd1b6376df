"""Supervised fine-tuning (SFT) of a causal language model on prompt/response pairs.

Why this file exists
--------------------
Every method in searchrl starts from, or repeatedly returns to, plain next-token
imitation: Stream of Search trains a model on search traces, and ReST-style
self-training re-runs SFT on the model's own filtered samples after every round.
SFT therefore has to be (1) correct about what it imitates, (2) cheap on padding,
(3) safe to kill at any moment and rerun, and (4) able to scale from a laptop CPU
to many GPUs without a different code path. This file is SFT's data plan and its
loss; (3) and (4), along with the optimizer, precision, checkpoints and metrics
files, are the trainer core shared with the other trainers
(:mod:`searchrl.train.core` and the modules it names, whose docstrings explain those
decisions). Read top to bottom (nanoGPT style), with every decision written next to the
code that makes it:

* **What is learned.** Each example is a prompt and a response. Prompt and response
  are tokenized *separately* (``add_special_tokens=False``) and concatenated, and the
  tokenizer's EOS id is appended to a text response so the model learns to stop.
  The loss (``"sft"`` in :mod:`searchrl.train.losses`) is the mean cross-entropy over
  response tokens only; prompt and padding positions carry the label ``-100``.
  (Tokenizing separately can split differently at the boundary than tokenizing the
  joined string would; it is what generation sees, where the prompt is tokenized
  alone.) Pre-tokenized examples (``prompt_ids``/``response_ids``) are used exactly
  as given, no EOS added.
* **Too-long examples.** With ``truncation="truncate"`` (default) an example longer
  than ``max_seq_len`` keeps its first ``max_seq_len`` tokens: the end of the
  response is cut (and so is its EOS). An example whose prompt alone fills
  ``max_seq_len`` has nothing left to learn and is dropped. With
  ``truncation="drop"`` every too-long example is dropped. Counts are logged and
  returned.
* **Batches.** A token budget, not a row count: a batch holds as many rows as fit in
  ``rows * longest_row <= tokens_per_batch``. Each epoch the examples are shuffled
  (seeded by ``(seed, epoch)``), cut into chunks of ``bucket_size`` examples, each
  chunk sorted by length and greedily cut into batches (so rows in a batch have
  similar length and padding is small), and finally the batch order is shuffled.
  The plan is a pure function of the data, the seed and the epoch, which is what
  makes exact resumption cheap: a checkpoint stores only the position in it (epoch,
  step within the epoch, and a digest of that epoch's batch order, checked on
  resume). Rows are right-padded and no attention mask is passed: with causal
  attention a real token never attends to the padding after it, so the mask would
  change nothing but would keep fused attention kernels from being used.
* **Optimisation and precision** are the core's (:mod:`searchrl.train.optim`,
  :mod:`searchrl.train.accel`): AdamW, decay on >= 2-dim tensors only, linear warmup
  then cosine to ``min_lr_ratio * lr`` (10% by default), gradient clipping; bf16
  autocast on CUDA with ``mixed_precision="auto"``, fp32 weights.
* **Many GPUs.** The code runs on :class:`accelerate.Accelerator`, so
  ``accelerate launch -m ...`` runs it data-parallel (DDP) unchanged. Every process
  builds the same batch plan; with ``A = grad_accum``, optimizer step ``s`` uses
  batches ``s*P*A ... s*P*A+P*A-1`` of the epoch, process ``r`` taking ``s*P*A+j*P+r``
  in its micro-step ``j`` (gradients accumulate over the A micro-steps and are
  all-reduced once, on the last). ``tokens_per_batch`` is therefore a per-process,
  per-micro-step budget (global batch = P x A budgets). The step's response tokens
  over all processes are the normaliser of :func:`~searchrl.train.optim.accumulation_step`,
  so the gradient is that of the mean loss over *all* response tokens of the step.
  When an epoch's last step has fewer than P x A batches, the micro-steps nobody has
  a batch for are skipped and idle processes run a batch with weight 0.
* **Files.** ``output_dir/checkpoints/step-N/`` every ``save_every`` steps (resumed
  exactly by a rerun with the same arguments; a rerun with different
  trajectory-relevant settings or data is refused), ``output_dir/metrics.jsonl``,
  and ``output_dir/final/`` with ``train_state.json`` (``{"done": true, ...}``)
  written last; if it is already there, :func:`train_sft` loads those weights into
  ``model`` and returns at once. Layout and guarantees: :mod:`searchrl.train.checkpoint`.
* **Metrics.** One line per ``log_every`` steps (and at the last step):
  ``losses/sft`` is the token-weighted mean loss over the steps since the previous
  line; ``charts/tokens_per_s`` counts non-padding tokens (all processes) per second
  of training compute (checkpoint writing excluded); ``charts/grad_norm`` is the
  mean pre-clipping gradient norm and ``charts/padding_fraction`` the share of
  computed tokens that were padding, over the same steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchrl.train.accel import make_accelerator
from searchrl.train.checkpoint import FINAL_DIR, load_finished
from searchrl.train.config import SFTConfig
from searchrl.train.core import TrainRun
from searchrl.train.losses import IGNORE_INDEX, get_loss, sft_loss  # noqa: F401

logger = logging.getLogger(__name__)


# -----------------------------------------------------------------------------
# configuration


# -----------------------------------------------------------------------------
# data: tokenize, batch, collate


@dataclass
class TokenizedData:
    """Examples as token arrays: ``seqs[i]`` is prompt+response, its first ``n_prompt[i]`` tokens the prompt."""

    seqs: list[np.ndarray]  # int32 token ids
    n_prompt: np.ndarray  # int64 [N]
    lengths: np.ndarray  # int64 [N]
    n_loss: np.ndarray  # int64 [N]: tokens that are predicted with a loss (response tokens after position 0)
    dropped: int = 0
    truncated: int = 0

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(np.int64(len(self.seqs)).tobytes())
        h.update(self.n_prompt.tobytes())
        h.update(self.lengths.tobytes())
        for s in self.seqs:
            h.update(s.tobytes())
        return h.hexdigest()


def _is_int_list(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.ndim == 1 and np.issubdtype(x.dtype, np.integer)
    return isinstance(x, (list, tuple)) and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in x)


def tokenize_examples(examples: Sequence[dict], tokenizer, max_seq_len: int, truncation: str = "truncate",
                      chunk: int = 1024) -> TokenizedData:
    """Turn ``{"prompt", "response"}`` or ``{"prompt_ids", "response_ids"}`` dicts into token arrays.

    Text: ``tokenizer(text, add_special_tokens=False)`` for each part, EOS appended to the
    response. Ids: used as given. See the module docstring for too-long examples.
    Examples left with no token to learn are dropped.
    """
    n = len(examples)
    prompts: list[list[int] | None] = [None] * n
    responses: list[list[int] | None] = [None] * n
    text_idx = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise ValueError(f"example {i}: expected a dict, got {type(ex).__name__}")
        if "prompt_ids" in ex or "response_ids" in ex:
            for key in ("prompt_ids", "response_ids"):
                if not _is_int_list(ex.get(key)):
                    raise ValueError(f"example {i}: field '{key}' must be a list of ints, got {ex.get(key)!r:.80}")
            prompts[i] = np.asarray(ex["prompt_ids"], dtype=np.int64).tolist()
            responses[i] = np.asarray(ex["response_ids"], dtype=np.int64).tolist()
        else:
            for key in ("prompt", "response"):
                if not isinstance(ex.get(key), str):
                    raise ValueError(f"example {i}: field '{key}' must be a string "
                                     f"(or give 'prompt_ids'/'response_ids'), got {ex.get(key)!r:.80}")
            text_idx.append(i)
    if text_idx:
        if tokenizer is None:
            raise ValueError("text examples need a tokenizer")
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token_id; it is appended to every text response")
        for start in range(0, len(text_idx), chunk):
            idx = text_idx[start:start + chunk]
            p = tokenizer([examples[i]["prompt"] for i in idx], add_special_tokens=False)["input_ids"]
            r = tokenizer([examples[i]["response"] for i in idx], add_special_tokens=False)["input_ids"]
            for j, i in enumerate(idx):
                prompts[i], responses[i] = p[j], r[j] + [eos]

    seqs, n_prompt, dropped, truncated = [], [], 0, 0
    for p, r in zip(prompts, responses):
        ids = p + r
        if len(ids) > max_seq_len:
            if truncation == "drop" or len(p) >= max_seq_len:
                dropped += 1
                continue
            ids = ids[:max_seq_len]
            truncated += 1
        if len(ids) - max(len(p), 1) <= 0:  # nothing to predict (position 0 is never predicted)
            dropped += 1
            continue
        seqs.append(np.asarray(ids, dtype=np.int32))
        n_prompt.append(len(p))
    n_prompt = np.asarray(n_prompt, dtype=np.int64)
    lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
    return TokenizedData(seqs, n_prompt, lengths, lengths - np.maximum(n_prompt, 1), dropped, truncated)


def make_batches(lengths: np.ndarray, tokens_per_batch: int, seed: int, epoch: int,
                 bucket_size: int = 2048) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch; deterministic in (lengths, seed, epoch).

    Shuffle, sort by length within chunks of ``bucket_size``, cut greedily so that
    ``rows * longest_row <= tokens_per_batch``, shuffle the batch order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(perm), bucket_size):
        batches += cut_by_budget(perm[start:start + bucket_size], lengths, tokens_per_batch)
    return [batches[j] for j in rng.permutation(len(batches))]


def cut_by_budget(rows, lengths, tokens_per_batch: int) -> list[list[int]]:
    """``rows`` sorted longest first (stable) and cut greedily into batches with
    ``len(batch) * longest <= tokens_per_batch`` (a row longer than the budget is a batch alone)."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    out, i = [], 0
    while i < len(order):
        k = max(1, tokens_per_batch // max(1, int(lengths[order[i]])))  # order[i] is the longest remaining
        out.append(order[i:i + k].tolist())
        i += k
    return out


def collate(rows: Sequence[tuple[Sequence[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``(token_ids, n_prompt)`` rows into ``input_ids`` and ``labels`` [rows, longest].

    ``labels`` equals ``input_ids`` on response tokens and is ``-100`` on prompt and
    padding positions (unshifted, Hugging Face convention; :func:`sft_loss` shifts).
    """
    longest = max(len(ids) for ids, _ in rows)
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    labels = np.full((len(rows), longest), IGNORE_INDEX, dtype=np.int64)
    for r, (ids, n_prompt) in enumerate(rows):
        input_ids[r, :len(ids)] = ids
        labels[r, n_prompt:len(ids)] = np.asarray(ids[n_prompt:], dtype=np.int64)
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}


class _Plan:
    """Which batches each optimizer step uses: epoch e has ceil(len(make_batches(e)) / (P * A)) steps,
    step i of the epoch taking batches ``i*P*A ... (i+1)*P*A - 1`` (A = grad_accum)."""

    def __init__(self, data: TokenizedData, cfg: SFTConfig, num_processes: int):
        self.data, self.cfg, self.P = data, cfg, num_processes
        self.per_step = num_processes * cfg.grad_accum
        self._cache: dict[int, list[list[int]]] = {}
        self._steps: dict[int, int] = {}
        if cfg.max_steps is not None:
            self.total_steps = cfg.max_steps
        else:
            whole = int(math.floor(cfg.epochs))
            total = sum(self.steps_in_epoch(e) for e in range(whole))
            frac = cfg.epochs - whole
            if frac > 0:
                total += int(round(frac * self.steps_in_epoch(whole)))
            self.total_steps = max(1, total)

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            self._cache.clear()  # keep one epoch in memory
            self._cache[epoch] = make_batches(self.data.lengths, self.cfg.tokens_per_batch, self.cfg.seed, epoch,
                                              self.cfg.bucket_size)
        return self._cache[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        if epoch not in self._steps:
            self._steps[epoch] = math.ceil(len(self.batches(epoch)) / self.per_step)
        return self._steps[epoch]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step index within the epoch) of global step ``step``."""
        epoch = 0
        while step >= self.steps_in_epoch(epoch):
            step -= self.steps_in_epoch(epoch)
            epoch += 1
        return epoch, step

    def order_digest(self, epoch: int) -> str:
        return hashlib.sha256(json.dumps(self.batches(epoch)).encode()).hexdigest()


# -----------------------------------------------------------------------------
# training


def train_sft(model, tokenizer, examples: list[dict], cfg: SFTConfig, *,
              callback: Callable[[int, dict | None], Any] | None = None, accelerator=None,
              progress: bool = True) -> dict:
    """Fine-tune ``model`` (in place) on ``examples``; write checkpoints, metrics and ``output_dir/final``.

    Args:
        model: a causal LM (``model(input_ids=...).logits``), ideally fp32.
        tokenizer: used for text examples (EOS appended) and saved with the model; may be
            None when every example is pre-tokenized (then padding uses id 0).
        examples: ``{"prompt": str, "response": str}`` or ``{"prompt_ids": [...], "response_ids": [...]}``.
        cfg: :class:`SFTConfig`.
        callback: called on every process after each optimizer step (and after that step's
            checkpoint, if any) as ``callback(step, logs)``; ``step`` counts finished steps,
            ``logs`` is the metrics line written at this step or None.
        accelerator: an existing :class:`accelerate.Accelerator` to use; by default one is made
            with ``cfg.mixed_precision`` (trackers: the ``tracking`` section, :mod:`searchrl.tracking`).

    Returns:
        Summary: ``final_loss``, ``steps``, ``tokens`` (non-padding, all processes),
        ``response_tokens``, ``padded_tokens``, ``wall_time_s`` (this call), ``train_time_s``
        (training compute over all resumed parts), ``tokens_per_s``, ``resumed_from_step``, ...
        If the run had already finished, the stored summary with ``skipped=True``.
    """
    t_call = time.perf_counter()
    finished = load_finished(model, cfg.output_dir, "SFT")
    if finished is not None:
        return {**finished, "wall_time_s": time.perf_counter() - t_call}
    accelerator = make_accelerator(cfg, accelerator)
    data = tokenize_examples(examples, tokenizer, cfg.max_seq_len, cfg.truncation)
    if not data.seqs:
        raise ValueError(f"no trainable examples ({len(examples)} given, {data.dropped} dropped)")
    if accelerator.is_main_process and (data.dropped or data.truncated):
        logger.warning("SFT data: %d examples truncated and %d dropped at max_seq_len=%d",
                       data.truncated, data.dropped, cfg.max_seq_len)
    pad_id = 0
    if tokenizer is not None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    loss_fn = get_loss("sft")

    def loss(model, rows: list[int], device) -> torch.Tensor:
        batch = collate([(data.seqs[i], int(data.n_prompt[i])) for i in rows], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device, non_blocking=True), use_cache=False).logits
        return loss_fn(logits, batch["labels"].to(device, non_blocking=True))[0]

    objective = Objective("sft", loss, terms=lambda rows: int(sum(data.n_loss[i] for i in rows)))
    return fit_batches(model, tokenizer, data, cfg, objective, accelerator=accelerator, callback=callback,
                       progress=progress, started=t_call,
                       summary={"num_examples": len(examples), "trained_examples": len(data.seqs),
                                "dropped_examples": data.dropped, "truncated_examples": data.truncated})


@dataclass
class Objective:
    """What a trainer on :func:`fit_batches` learns: ``loss(model, rows, device)`` is the *summed*
    loss of examples ``rows`` (one micro-batch), and ``terms(rows)`` how many terms that sum has
    (response tokens for SFT, sequences for a value model): the step's normaliser."""

    name: str  # metrics key losses/<name>; the progress bar's name
    loss: Callable[[Any, list[int], Any], torch.Tensor]
    terms: Callable[[list[int]], int]


def fit_batches(model, tokenizer, data: TokenizedData, cfg: SFTConfig, objective: Objective, *, accelerator,
                callback: Callable[[int, dict | None], Any] | None = None, progress: bool = True,
                started: float | None = None, summary: dict | None = None) -> dict:
    """The training loop of every trainer on token-budget batches (SFT, value models).

    Batches ``data`` by the plan of the module docs, takes optimizer steps on the trainer
    core with ``objective``'s loss (normalised by its terms over the whole step), logs,
    checkpoints, resumes exactly, and writes ``output_dir/final``. ``summary`` adds the
    trainer's own fields to the returned (and stored) summary.
    """
    t_call = time.perf_counter() if started is None else started
    out = Path(cfg.output_dir)
    main, rank, P = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    plan = _Plan(data, cfg, P)
    total = plan.total_steps
    name = objective.name

    # ---- the core: resume point (checked against settings and data), optimizer, files
    run = TrainRun(model, cfg, accelerator, total_steps=total, tokenizer=tokenizer, name=name,
                   trajectory={"data_fingerprint": data.fingerprint()})
    state, step = run.state, run.start_step
    tokens, resp_tokens, padded_tokens = (state.get(k, 0) for k in ("tokens", "response_tokens", "padded_tokens"))
    train_time = state.get("train_time_s", 0.0)
    epoch, idx = plan.locate(step)
    if run.checkpoint is not None and ((epoch, idx) != (state["epoch"], state["batch_index"]) or (
            state.get("batch_order_sha256") not in (None, plan.order_digest(epoch)))):
        raise ValueError(f"{run.checkpoint}: data position does not match the batch plan")

    device = accelerator.device
    win_loss = torch.zeros((), device=device)
    win_gnorm = torch.zeros((), device=device)
    win_steps = win_terms = win_tokens = win_padded = 0
    last_loss = math.nan

    with run, run.progress_bar(name, enabled=progress) as bar:
        ddp_model = run.model

        def micro_loss(micro: tuple[list[int], float]) -> torch.Tensor:
            rows, weight = micro
            loss_sum = objective.loss(ddp_model, rows, device)
            win_loss.add_(loss_sum.detach() * weight)
            return loss_sum if weight == 1.0 else loss_sum * weight

        while step < total:
            # this step's batches: micro-step j gives batch j*P + r to process r; a process
            # with no batch left in the epoch's last step runs batch 0 with weight 0
            group = plan.batches(epoch)[idx * plan.per_step:(idx + 1) * plan.per_step]
            micro = [(group[m], 1.0) if m < len(group) else (group[0], 0.0)
                     for m in range(rank, math.ceil(len(group) / P) * P, P)]
            step_terms = sum(objective.terms(b) for b in group)
            step_resp = int(sum(data.n_loss[i] for b in group for i in b))
            step_tokens = int(sum(data.lengths[i] for b in group for i in b))
            step_padded = int(sum(len(b) * max(data.lengths[i] for i in b) for b in group))
            lr = run.lr
            gnorm = run.step(micro, micro_loss, normaliser=step_terms)

            step += 1
            idx += 1
            if idx >= plan.steps_in_epoch(epoch):
                epoch, idx = epoch + 1, 0
            tokens += step_tokens
            resp_tokens += step_resp
            padded_tokens += step_padded
            win_gnorm += gnorm
            win_steps += 1
            win_terms += step_terms
            win_tokens += step_tokens
            win_padded += step_padded
            bar.update(1)

            logs = None
            if run.should_log(step):
                loss_total = accelerator.reduce(win_loss, reduction="sum").item()
                gnorm_mean = win_gnorm.item() / win_steps
                window = run.clock.lap()
                train_time = run.clock.elapsed()
                last_loss = loss_total / win_terms
                logs = {"step": step, "epoch": round(epoch + idx / plan.steps_in_epoch(epoch), 4),
                        "tokens": tokens, f"losses/{name}": last_loss, "charts/lr": lr,
                        "charts/tokens_per_s": win_tokens / max(window, 1e-9),
                        "charts/grad_norm": gnorm_mean, "charts/padding_fraction": 1.0 - win_tokens / win_padded,
                        "time_s": round(train_time, 3)}
                run.log(logs)
                if main:
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                win_loss.zero_()
                win_gnorm.zero_()
                win_steps = win_terms = win_tokens = win_padded = 0
            if run.should_save(step):
                run.save(step, {"epoch": epoch, "batch_index": idx, "batch_order_sha256": plan.order_digest(epoch),
                                "tokens": tokens, "response_tokens": resp_tokens, "padded_tokens": padded_tokens})
            if callback is not None:
                with run.clock.paused():  # not training compute
                    callback(step, logs)

    # ---- final model
    summary = {"done": True, "steps": total, "epochs": round(epoch + idx / plan.steps_in_epoch(epoch), 4),
               "final_loss": last_loss, "tokens": tokens, "response_tokens": resp_tokens,
               "padded_tokens": padded_tokens, "train_time_s": train_time,
               "tokens_per_s": tokens / max(train_time, 1e-9), "resumed_from_step": run.start_step,
               **(summary or {}), "num_processes": P, "mixed_precision": accelerator.mixed_precision,
               "final_dir": str(out / FINAL_DIR), "config": asdict(cfg)}
    return run.finish(summary, started=t_call)
