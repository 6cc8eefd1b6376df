"""Supervised fine-tuning (SFT) of a causal language model on prompt/response pairs.

Why this file exists
--------------------
Every method in searchrl starts from, or repeatedly returns to, plain next-token
imitation: Stream of Search trains a model on search traces, and ReST-style
self-training re-runs SFT on the model's own filtered samples after every round.
SFT therefore has to be (1) correct about what it imitates, (2) cheap on padding,
(3) safe to kill at any moment and rerun, and (4) able to scale from a laptop CPU
to many GPUs without a different code path. One file, read top to bottom
(nanoGPT style), with every decision written next to the code that makes it:

* **What is learned.** Each example is a prompt and a response. Prompt and response
  are tokenized *separately* (``add_special_tokens=False``) and concatenated, and the
  tokenizer's EOS id is appended to a text response so the model learns to stop.
  The loss is the mean cross-entropy over response tokens only; prompt and padding
  positions carry the label ``-100``. (Tokenizing separately can split differently
  at the boundary than tokenizing the joined string would; it is what generation
  sees, where the prompt is tokenized alone.) Pre-tokenized examples
  (``prompt_ids``/``response_ids``) are used exactly as given, no EOS added.
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
  makes exact resumption cheap. Rows are right-padded and no attention mask is
  passed: with causal attention a real token never attends to the padding after
  it, so the mask would change nothing but would keep fused attention kernels from
  being used.
* **Optimisation.** AdamW (fused kernel where torch has one for the device); weight
  decay only on tensors with >= 2 dims (matrices and embeddings, not norms/biases);
  learning rate warmed up linearly over ``warmup_steps`` (step 0 uses
  ``lr / warmup_steps``), then cosine-decayed to ``min_lr_ratio * lr`` (10% by
  default) at the last step; gradient norm clipped to ``grad_clip``.
* **Precision.** Weights and optimizer state stay in the model's dtype (pass an
  fp32 model); ``mixed_precision="auto"`` runs forward/backward under bf16 autocast
  on CUDA devices with bf16, fp32 elsewhere. fp16 (which needs a loss scaler) is not
  supported.
* **Many GPUs.** The code runs on :class:`accelerate.Accelerator`, so
  ``accelerate launch -m ...`` runs it data-parallel (DDP) unchanged. Every process
  builds the same batch plan; with ``A = grad_accum``, optimizer step ``s`` uses
  batches ``s*P*A ... s*P*A+P*A-1`` of the epoch, process ``r`` taking ``s*P*A+j*P+r``
  in its micro-step ``j`` (gradients accumulate over the A micro-steps and are
  all-reduced once, on the last). ``tokens_per_batch`` is therefore a per-process,
  per-micro-step budget (global batch = P x A budgets). The loss of each
  micro-batch is scaled so that, after accumulation and DDP's averaging, the
  gradient is that of the mean over *all* response tokens of the step. When an
  epoch's last step has fewer than P x A batches, the micro-steps nobody has a
  batch for are skipped and idle processes run a batch with weight 0. Only the
  main process writes files (each process writes its own RNG state).
  FSDP/DeepSpeed sharding is not handled.
* **Checkpoints and resumption.** Every ``save_every`` steps
  ``output_dir/checkpoints/step-N/`` is written into a temporary directory and then
  renamed, so a checkpoint either exists completely or not at all. It holds the
  model (``save_pretrained``, loadable on its own, with the tokenizer), optimizer,
  scheduler, every process's RNG states, and ``trainer_state.json`` (step, data
  position, seed, fingerprints of the data and of the epoch's batch order, the
  config). A rerun with the same arguments resumes from the newest checkpoint and
  continues exactly as if never interrupted (same batches, same RNG; bitwise equal
  weights on CPU). A rerun whose trajectory-relevant settings or data differ from
  the checkpoint's is refused rather than silently mixed. When training ends, model
  and tokenizer go to ``output_dir/final/`` (temporary dir + rename) with
  ``train_state.json`` (``{"done": true, ...}``) written last; if it is already
  there, :func:`train_sft` loads those weights into ``model`` and returns at once.
* **Metrics.** ``output_dir/metrics.jsonl`` gets one line per ``log_every`` steps
  (and at the last step): ``losses/sft`` is the token-weighted mean loss over the
  steps since the previous line; ``charts/tokens_per_s`` counts non-padding tokens
  (all processes) per second of training compute (checkpoint writing excluded).
  On resume, lines written after the checkpoint's step are dropped, so the file
  reads as one uninterrupted run. Lines are appended (one write and fsync each),
  and the file is rewritten only once per start; a line cut short by a crash is
  dropped on resume (:func:`searchrl.data.read_jsonl_log`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from searchrl.data import append_jsonl, atomic_write, read_json, read_jsonl_log, write_json, write_jsonl

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
FINAL_DIR = "final"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"  # in final/: completion marker, written last
TRAINER_STATE = "trainer_state.json"  # in checkpoints/step-N/


# -----------------------------------------------------------------------------
# configuration


@dataclass
class SFTConfig:
    """Settings of one SFT run. Units are in brackets at the end of each help text."""

    output_dir: str = field(metadata={"help": "directory for checkpoints, metrics and the final model (path)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of AdamW (per unit gradient)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "AdamW decoupled weight decay, only on tensors with >= 2 dims (fraction of lr per step)"})
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={
        "help": "AdamW moment decay rates beta1, beta2 (dimensionless)"})
    warmup_steps: int = field(default=100, metadata={
        "help": "linear warmup length; cosine decay follows (optimizer steps)"})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "learning rate at the last step, relative to lr (fraction)"})
    max_steps: int | None = field(default=None, metadata={
        "help": "total optimizer steps; overrides epochs when set (optimizer steps)"})
    epochs: float = field(default=1.0, metadata={
        "help": "passes over the data when max_steps is None; fractions allowed (epochs)"})
    tokens_per_batch: int = field(default=16384, metadata={
        "help": "budget of one process's batch per optimizer step, padding counted: "
                "rows * longest_row <= this (tokens)"})
    grad_accum: int = field(default=1, metadata={
        "help": "token-budget batches each process accumulates into one optimizer step; the global "
                "batch is processes x grad_accum budgets (batches)"})
    max_seq_len: int = field(default=1024, metadata={"help": "longest example kept; see truncation (tokens)"})
    truncation: str = field(default="truncate", metadata={
        "help": "'truncate': cut too-long examples to max_seq_len (the end of the response is lost; "
                "examples whose prompt fills max_seq_len are dropped); 'drop': drop them (choice)"})
    bucket_size: int = field(default=2048, metadata={
        "help": "examples sorted by length together before being cut into batches; larger = less "
                "padding, less mixing (examples)"})
    grad_clip: float = field(default=1.0, metadata={
        "help": "max global gradient L2 norm; <= 0 disables clipping (norm)"})
    seed: int = field(default=0, metadata={
        "help": "seed of the batch plan and of the torch/python/numpy RNGs (integer)"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "'auto' (bf16 on CUDA with bf16 support, else 'no'), 'bf16' or 'no' (choice)"})
    save_every: int = field(default=200, metadata={
        "help": "steps between resumable checkpoints; <= 0 disables them (optimizer steps)"})
    log_every: int = field(default=10, metadata={
        "help": "steps between metrics.jsonl lines; the last step is always logged (optimizer steps)"})
    keep_last: int = field(default=1, metadata={
        "help": "resumable checkpoints kept; older ones are deleted (checkpoints)"})

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {self.betas}")
        if self.truncation not in ("truncate", "drop"):
            raise ValueError(f"truncation must be 'truncate' or 'drop', got {self.truncation!r}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {self.mixed_precision!r}")
        if self.max_seq_len < 2:
            raise ValueError("max_seq_len must be >= 2")
        if self.tokens_per_batch < self.max_seq_len:
            raise ValueError(f"tokens_per_batch ({self.tokens_per_batch}) must be >= "
                             f"max_seq_len ({self.max_seq_len})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 (or None)")
        if self.max_steps is None and not self.epochs > 0:
            raise ValueError("epochs must be > 0")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        if self.log_every < 1:
            raise ValueError("log_every must be >= 1")
        if self.bucket_size < 1:
            raise ValueError("bucket_size must be >= 1")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")


# Settings that change the training trajectory: a checkpoint is only resumed by a
# run that agrees on all of them (and on the data and the number of processes).
_TRAJECTORY_FIELDS = ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "max_steps", "epochs",
                      "tokens_per_batch", "grad_accum", "max_seq_len", "truncation", "bucket_size", "grad_clip",
                      "seed")
# what a checkpoint written before a field existed implicitly used
_TRAJECTORY_DEFAULTS = {"grad_accum": 1}


def resolve_mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


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
        chunk = perm[start:start + bucket_size]
        order = chunk[np.argsort(-lengths[chunk], kind="stable")]
        i = 0
        while i < len(order):
            rows = max(1, tokens_per_batch // int(lengths[order[i]]))  # order[i] is the longest remaining
            batches.append(order[i:i + rows].tolist())
            i += rows
    return [batches[j] for j in rng.permutation(len(batches))]


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


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy (fp32) over positions whose label is not -100, and their count.

    ``logits[:, t]`` predicts ``labels[:, t + 1]``.
    """
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (target != IGNORE_INDEX).sum()


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


def lr_lambda(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# -----------------------------------------------------------------------------
# files: checkpoints, RNG, weights


def _torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename a fully written ``tmp`` directory to ``dest`` (replacing it)."""
    _fsync_tree(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load weights written by ``save_pretrained`` in ``directory`` into ``model`` (in place)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        own = model.state_dict()
        missing = set(own) - set(state)
        unexpected = set(state) - set(own)
        loaded_ptrs = {own[k].data_ptr() for k in own if k in state}
        # save_pretrained leaves out tied weights (lm_head tied to the embeddings)
        if not unexpected and all(own[k].data_ptr() in loaded_ptrs for k in missing):
            model.load_state_dict(state, strict=False)
            return
    # anything else (renamed keys, .bin files): let transformers read it, then copy
    loaded = type(model).from_pretrained(str(directory), dtype=next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict())


def _checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with trainer_state.json), oldest first."""
    found = []
    root = output_dir / CHECKPOINT_DIR
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith("step-") and d.name[5:].isdigit() and (d / TRAINER_STATE).is_file():
                found.append((int(d.name[5:]), d))
    return sorted(found)


def is_complete(output_dir: str | os.PathLike) -> bool:
    """True when ``output_dir/final`` holds a finished run."""
    marker = Path(output_dir) / FINAL_DIR / STATE_FILE
    if not marker.is_file():
        return False
    try:
        return bool(read_json(marker).get("done"))
    except (OSError, ValueError):
        return False


def _trajectory(cfg: SFTConfig, mixed_precision: str, num_processes: int, fingerprint: str) -> dict[str, Any]:
    d = {k: getattr(cfg, k) for k in _TRAJECTORY_FIELDS}
    d.update(mixed_precision=mixed_precision, num_processes=num_processes, data_fingerprint=fingerprint)
    return json.loads(json.dumps(d))  # tuples -> lists, as read back from JSON


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
            with ``cfg.mixed_precision``.

    Returns:
        Summary: ``final_loss``, ``steps``, ``tokens`` (non-padding, all processes),
        ``response_tokens``, ``padded_tokens``, ``wall_time_s`` (this call), ``train_time_s``
        (training compute over all resumed parts), ``tokens_per_s``, ``resumed_from_step``, ...
        If the run had already finished, the stored summary with ``skipped=True``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    t_call = time.perf_counter()
    out = Path(cfg.output_dir)
    mixed_precision = resolve_mixed_precision(cfg.mixed_precision)

    if is_complete(out):
        summary = read_json(out / FINAL_DIR / STATE_FILE)
        _load_weights(model, out / FINAL_DIR)
        logger.info("SFT already finished in %s; loaded its weights", out / FINAL_DIR)
        return {**summary, "skipped": True, "wall_time_s": time.perf_counter() - t_call}

    if accelerator is None:
        try:
            accelerator = Accelerator(mixed_precision=mixed_precision)
        except ValueError as e:  # accelerate's process-wide state was set up earlier with another precision
            logger.warning("%s; using the existing accelerate state", e)
            accelerator = Accelerator()
    mixed_precision = accelerator.mixed_precision
    if getattr(accelerator, "gradient_accumulation_steps", 1) != 1:
        raise ValueError("pass an Accelerator with gradient_accumulation_steps=1 and set SFTConfig.grad_accum "
                         "instead (its backward would divide the loss a second time)")
    if mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed precision {mixed_precision!r} is not supported (use 'bf16' or 'no')")
    main, rank, P = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes

    # ---- data
    data = tokenize_examples(examples, tokenizer, cfg.max_seq_len, cfg.truncation)
    if not data.seqs:
        raise ValueError(f"no trainable examples ({len(examples)} given, {data.dropped} dropped)")
    if main and (data.dropped or data.truncated):
        logger.warning("SFT data: %d examples truncated and %d dropped at max_seq_len=%d",
                       data.truncated, data.dropped, cfg.max_seq_len)
    pad_id = 0
    if tokenizer is not None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    plan = _Plan(data, cfg, P)
    total = plan.total_steps
    trajectory = _trajectory(cfg, mixed_precision, P, data.fingerprint())

    # ---- model, optimizer, schedule
    was_training = model.training
    # accelerate's bf16 autocast wraps model.forward in place; remember it to restore exactly
    # (unwrap_model(keep_fp32_wrapper=False) can also strip transformers' own forward decorators)
    had_forward, saved_forward = "forward" in model.__dict__, model.__dict__.get("forward")
    base_model = model
    model.to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused_devices = _get_fused_kernels_supported_devices()
    except ImportError:
        fused_devices = ["cuda"]
    fused = all(p.is_floating_point() and p.device.type in fused_devices for p in params)
    try:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    # The schedule is in optimizer steps and stepped by us, not through accelerate's
    # wrapper (which steps it num_processes times per step unless told otherwise).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.warmup_steps, total, cfg.min_lr_ratio))

    # ---- resume?
    start_step, tokens, resp_tokens, padded_tokens, train_time = 0, 0, 0, 0, 0.0
    resume = _checkpoints(out)
    ckpt = resume[-1][1] if resume else None
    if ckpt is not None:
        state = read_json(ckpt / TRAINER_STATE)
        was = {k: state["trajectory"].get(k, _TRAJECTORY_DEFAULTS.get(k)) for k in trajectory}
        diff = {k: (was[k], v) for k, v in trajectory.items() if was[k] != v}
        if diff:
            raise ValueError(f"{ckpt} was written by a run with different settings or data "
                             f"(checkpoint, now): {diff}. Use another output_dir or delete {out / CHECKPOINT_DIR}.")
        _load_weights(model, ckpt)
        start_step = state["step"]
        tokens, resp_tokens, padded_tokens = state["tokens"], state["response_tokens"], state["padded_tokens"]
        train_time = state["train_time_s"]
        epoch, idx = plan.locate(start_step)
        if (epoch, idx) != (state["epoch"], state["batch_index"]) or (
                state.get("batch_order_sha256") not in (None, plan.order_digest(epoch))):
            raise ValueError(f"{ckpt}: data position does not match the batch plan")
    else:
        set_seed(cfg.seed, device_specific=True)

    # (the prepared scheduler only registers it with accelerate; we step the raw one, see above)
    model, optimizer, _ = accelerator.prepare(model, optimizer, scheduler)
    if ckpt is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True))
        _set_rng_state(torch.load(ckpt / f"rng_state_{rank}.pt", map_location="cpu", weights_only=True))
        if main:
            logger.info("resuming SFT from %s (step %d of %d)", ckpt, start_step, total)
    unwrapped = accelerator.unwrap_model(model)

    if main:  # leftovers of writes cut short by a crash
        for tmp in [*(out / CHECKPOINT_DIR).glob(".tmp-step-*"), out / ".final.tmp"]:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- metrics file: keep what was logged up to the resume point
    metrics_path = out / "metrics.jsonl"
    if main:  # rewritten once per start, then appended to line by line
        metrics: list[dict] = []
        if metrics_path.exists():
            try:
                metrics = [r for r in read_jsonl_log(metrics_path) if r.get("step", math.inf) <= start_step]
            except ValueError as e:
                logger.warning("ignoring unreadable %s: %s", metrics_path, e)
        write_jsonl(metrics_path, metrics)

    def save_checkpoint(step: int, epoch: int, idx: int, train_time: float) -> None:
        root = out / CHECKPOINT_DIR
        tmp, dest = root / f".tmp-step-{step}", root / f"step-{step}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        _torch_save(_rng_state(), tmp / f"rng_state_{rank}.pt")
        if main:
            unwrapped.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
            _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        accelerator.wait_for_everyone()
        if main:
            write_json(tmp / TRAINER_STATE, {
                "step": step, "epoch": epoch, "batch_index": idx, "seed": cfg.seed,
                "batch_order_sha256": plan.order_digest(epoch), "total_steps": total,
                "tokens": tokens, "response_tokens": resp_tokens, "padded_tokens": padded_tokens,
                "train_time_s": train_time, "trajectory": trajectory, "config": asdict(cfg)})
            _replace_dir(tmp, dest)
            for _, old in _checkpoints(out)[:-cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    # ---- loop
    model.train()
    step = start_step
    epoch, idx = plan.locate(step)
    win_loss = torch.zeros((), device=accelerator.device)
    win_gnorm = torch.zeros((), device=accelerator.device)
    win_steps = win_resp = win_tokens = win_padded = 0
    last_loss = math.nan
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    bar = tqdm(total=total, initial=start_step, desc="sft", unit="step", dynamic_ncols=True,
               disable=not (main and progress))
    t_window = time.perf_counter()
    try:
        while step < total:
            batches = plan.batches(epoch)
            # this step's batches: micro-step j gives batch j*P + r to process r
            group = batches[idx * plan.per_step:(idx + 1) * plan.per_step]
            step_resp = int(sum(data.n_loss[i] for b in group for i in b))
            step_tokens = int(sum(data.lengths[i] for b in group for i in b))
            step_padded = int(sum(len(b) * max(data.lengths[i] for i in b) for b in group))
            lr = scheduler.get_last_lr()[0]
            n_micro = math.ceil(len(group) / P)  # the same on every process
            for j in range(n_micro):
                m = j * P + rank
                mine, weight = (group[m], 1.0) if m < len(group) else (group[0], 0.0)
                batch = collate([(data.seqs[i], int(data.n_prompt[i])) for i in mine], pad_id)
                input_ids = batch["input_ids"].to(accelerator.device, non_blocking=True)
                labels = batch["labels"].to(accelerator.device, non_blocking=True)
                # gradients are all-reduced once per step, on its last micro-batch
                sync = contextlib.nullcontext() if j == n_micro - 1 else accelerator.no_sync(model)
                with sync:
                    logits = model(input_ids=input_ids, use_cache=False).logits
                    loss_sum, _ = sft_loss(logits, labels)
                    del logits
                    # DDP averages gradients over P processes; scale so the accumulated result
                    # is the gradient of the mean loss over all response tokens of the step.
                    accelerator.backward(loss_sum * (weight * P / step_resp))
                win_loss += loss_sum.detach() * weight
            gnorm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            step += 1
            idx += 1
            if idx >= plan.steps_in_epoch(epoch):
                epoch, idx = epoch + 1, 0
            tokens += step_tokens
            resp_tokens += step_resp
            padded_tokens += step_padded
            win_gnorm += gnorm.detach().float() if torch.is_tensor(gnorm) else float(gnorm or 0.0)
            win_steps += 1
            win_resp += step_resp
            win_tokens += step_tokens
            win_padded += step_padded
            bar.update(1)

            logs = None
            if step % cfg.log_every == 0 or step == total:
                loss_total = accelerator.reduce(win_loss, reduction="sum").item()
                gnorm_mean = win_gnorm.item() / win_steps
                now = time.perf_counter()
                train_time += now - t_window
                last_loss = loss_total / win_resp
                logs = {"step": step, "epoch": round(epoch + idx / plan.steps_in_epoch(epoch), 4),
                        "tokens": tokens, "losses/sft": last_loss, "charts/lr": lr,
                        "charts/tokens_per_s": win_tokens / max(now - t_window, 1e-9),
                        "charts/grad_norm": gnorm_mean, "charts/padding_fraction": 1.0 - win_tokens / win_padded,
                        "time_s": round(train_time, 3)}
                if main:
                    append_jsonl(metrics_path, logs)
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                win_loss.zero_()
                win_gnorm.zero_()
                win_steps = win_resp = win_tokens = win_padded = 0
                t_window = time.perf_counter()
            # checkpoint writing and the callback are not training compute: shift the
            # window's start by their duration so tokens/s and train_time leave them out
            computed = time.perf_counter() - t_window
            if cfg.save_every > 0 and step % cfg.save_every == 0 and step < total:
                save_checkpoint(step, epoch, idx, train_time + computed)
            if callback is not None:
                callback(step, logs)
            t_window = time.perf_counter() - computed
    finally:
        bar.close()
        base_model.__dict__.pop("_original_forward", None)
        if had_forward:
            base_model.forward = saved_forward
        else:
            base_model.__dict__.pop("forward", None)
        unwrapped.train(was_training)

    # ---- final model
    summary = {"done": True, "steps": total, "epochs": round(epoch + idx / plan.steps_in_epoch(epoch), 4),
               "final_loss": last_loss, "tokens": tokens, "response_tokens": resp_tokens,
               "padded_tokens": padded_tokens, "train_time_s": train_time,
               "tokens_per_s": tokens / max(train_time, 1e-9), "resumed_from_step": start_step,
               "num_examples": len(examples), "trained_examples": len(data.seqs),
               "dropped_examples": data.dropped, "truncated_examples": data.truncated,
               "num_processes": P, "mixed_precision": mixed_precision,
               "final_dir": str(out / FINAL_DIR), "config": asdict(cfg)}
    accelerator.wait_for_everyone()
    if main:
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        summary["wall_time_s"] = time.perf_counter() - t_call
        write_json(tmp / STATE_FILE, summary)  # the completion marker: written last
        _replace_dir(tmp, out / FINAL_DIR)
    accelerator.wait_for_everyone()
    summary["wall_time_s"] = time.perf_counter() - t_call
    return summary
