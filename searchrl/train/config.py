"""Trainer settings as dataclasses, without importing torch.

The run config (:mod:`searchrl.config`) and ``searchrl <command> --help`` read these, so
they live apart from the trainers that need torch. :class:`OptimConfig` is what every
optimizer shares, :class:`TrainConfig` what every resumable run shares (trainers' configs
subclass it), :class:`SFTConfig` the SFT trainer's own. ``trajectory_fields`` names the
settings that change the training trajectory: a checkpoint is resumed only by a run that
agrees on all of them, and a run directory's stage records them as what it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

TRACKERS = ("tensorboard", "wandb")  # report_to names; other accelerate trackers work through an Accelerator


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with warmup + cosine schedule. Units are in brackets at the end of each help text."""

    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of AdamW (per unit gradient)"})
    weight_decay: float = field(default=0.0, metadata={
        "help": "AdamW decoupled weight decay, only on tensors with >= 2 dims (fraction of lr per step)"})
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={
        "help": "AdamW moment decay rates beta1, beta2 (dimensionless)"})
    warmup_steps: int = field(default=100, metadata={
        "help": "linear warmup length; cosine decay follows (optimizer steps)"})
    min_lr_ratio: float = field(default=0.1, metadata={
        "help": "learning rate at the last step, relative to lr (fraction)"})
    grad_clip: float = field(default=1.0, metadata={
        "help": "max global gradient L2 norm; <= 0 disables clipping (norm)"})

    # settings that change the training trajectory (see TrainRun)
    trajectory_fields: ClassVar[tuple[str, ...]] = ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio",
                                                    "grad_clip")

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")


@dataclass(kw_only=True)
class TrainConfig(OptimConfig):
    """What every resumable training run needs besides its optimizer; trainers' configs subclass it."""

    output_dir: str = field(metadata={"help": "directory for checkpoints, metrics and the final model (path)"})
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
    report_to: str = field(default="", metadata={
        "help": "also send metrics to these accelerate trackers: '' (none), 'tensorboard', 'wandb', or "
                "both comma-separated; their files go under output_dir (choice)"})

    trajectory_fields: ClassVar[tuple[str, ...]] = OptimConfig.trajectory_fields + ("seed",)
    # what a checkpoint written before a trajectory field existed implicitly used
    trajectory_defaults: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self):
        super().__post_init__()
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {self.mixed_precision!r}")
        if self.keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        if self.log_every < 1:
            raise ValueError("log_every must be >= 1")
        tracker_names(self.report_to)  # validates


def tracker_names(report_to: str) -> list[str]:
    """``"tensorboard, wandb"`` -> ``["tensorboard", "wandb"]``; an unknown name is a ValueError."""
    names = [n.strip() for n in report_to.split(",") if n.strip()]
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ValueError(f"report_to: unknown tracker(s) {bad}; use '' or a comma-separated subset of {TRACKERS}")
    return list(dict.fromkeys(names))


@dataclass
class SFTConfig(TrainConfig):
    """Settings of one SFT run. Units are in brackets at the end of each help text.

    The optimizer and run settings (``output_dir``, ``lr``, ``seed``, ``save_every``, ...)
    are inherited from :class:`~searchrl.train.core.TrainConfig`.
    """

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

    # Settings that change the training trajectory: a checkpoint is only resumed by a
    # run that agrees on all of them (and on the data, the precision and the number of processes).
    trajectory_fields: ClassVar[tuple[str, ...]] = TrainConfig.trajectory_fields + (
        "max_steps", "epochs", "tokens_per_batch", "grad_accum", "max_seq_len", "truncation", "bucket_size")
    trajectory_defaults: ClassVar[dict[str, Any]] = {"grad_accum": 1}

    def __post_init__(self):
        super().__post_init__()
        if self.truncation not in ("truncate", "drop"):
            raise ValueError(f"truncation must be 'truncate' or 'drop', got {self.truncation!r}")
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
        if self.bucket_size < 1:
            raise ValueError("bucket_size must be >= 1")


VALUE_KINDS = ("scalar", "3class", "orm")  # searchrl.models.value.KINDS (kept here: no torch import)


@dataclass
class ValueTrainConfig(SFTConfig):
    """Settings of one value-model run (:mod:`searchrl.train.value`): the batching and optimizer fields
    of SFT, with the VGS classifier's optimizer values as defaults (AdamW (0.9, 0.95), weight decay
    0.1, gradient clip 5, lr 1e-4, cosine)."""

    lr: float = field(default=1e-4, metadata={"help": "peak learning rate of AdamW (per unit gradient)"})
    weight_decay: float = field(default=0.1, metadata={
        "help": "AdamW decoupled weight decay, only on tensors with >= 2 dims (fraction of lr per step)"})
    warmup_steps: int = field(default=20, metadata={
        "help": "linear warmup length; cosine decay follows (optimizer steps)"})
    min_lr_ratio: float = field(default=0.0, metadata={
        "help": "learning rate at the last step, relative to lr (fraction)"})
    grad_clip: float = field(default=5.0, metadata={"help": "max global gradient L2 norm; <= 0 disables (norm)"})
    epochs: float = field(default=2.0, metadata={
        "help": "passes over the data when max_steps is None; fractions allowed (epochs)"})
    tokens_per_batch: int = field(default=8192, metadata={
        "help": "budget of one process's batch per optimizer step, padding counted (tokens)"})
    truncation: str = field(default="drop", metadata={
        "help": "examples longer than max_seq_len are dropped ('drop'; a cut state has no target) (choice)"})
    kind: str = field(default="scalar", metadata={
        "help": "value head and data: scalar (value targets, MSE; ReST-RL/ReST-MCTS*) | 3class (VGS roll-outs, "
                "cross-entropy) | orm (outcome labels of complete responses, scalar head) (choice)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout before the 3-class head (probability)"})

    trajectory_fields: ClassVar[tuple[str, ...]] = SFTConfig.trajectory_fields + ("kind", "dropout")

    def __post_init__(self):
        super().__post_init__()
        if self.kind not in VALUE_KINDS:
            raise ValueError(f"kind must be one of {' | '.join(VALUE_KINDS)}, got {self.kind!r}")
        if self.truncation != "drop":
            raise ValueError("a value model's examples are dropped when too long (truncation='drop'), never cut")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
