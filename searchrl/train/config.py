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

from ..settings import SettingError, at_least


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
        at_least(self, warmup_steps=0, lr=0.0, weight_decay=0.0)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")


@dataclass(kw_only=True)
class TrainConfig(OptimConfig):
    """What every resumable training run needs besides its optimizer; trainers' configs subclass it.

    Trackers (W&B, TensorBoard) are not a trainer's setting but the command's: the run config's
    ``tracking`` section (:mod:`searchrl.tracking`), which the trainer core reads when a run starts.
    """

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
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute the transformer's activations in the backward pass instead of keeping them: "
                "less memory, about a third more compute, the same gradients (bool)"})
    lora_rank: int = field(default=0, metadata={
        "help": "train LoRA adapters of this rank (pip install 'searchrl[lora]') instead of every weight of the "
                "transformer; 0 = full fine-tuning. Value heads still train fully; the final model is merged (rank)"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling: updates are scaled by alpha / rank"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input (probability)"})
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata={
        "help": "comma-separated names of the linear layers that get adapters (module names)"})
    fsdp: bool = field(default=False, metadata={
        "help": "shard weights, gradients and optimizer state over the processes (torch FSDP2) instead of a "
                "whole copy on each (DDP); needs several processes; files are the same (bool)"})

    trajectory_fields: ClassVar[tuple[str, ...]] = OptimConfig.trajectory_fields + ("seed",)
    # what a checkpoint written before a trajectory field existed implicitly used
    trajectory_defaults: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self):
        super().__post_init__()
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be 'auto', 'bf16' or 'no', got {self.mixed_precision!r}")
        at_least(self, keep_last=1, log_every=1)
        if self.lora_rank < 0 or (self.lora_rank and not self.lora_targets.strip()):
            raise ValueError(f"lora_rank must be >= 0 (with lora_targets), got {self.lora_rank}")
        if self.fsdp and self.lora_rank:
            raise ValueError("fsdp=true with lora_rank > 0 is not supported: train LoRA adapters under DDP "
                             "(fsdp=false), where the frozen weights are small next to full fine-tuning's state")

    def lora_target_names(self) -> list[str]:
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    def lora_settings(self) -> dict:
        """What LoRA changes in the trajectory ({} for full fine-tuning, so older records still agree)."""
        if not self.lora_rank:
            return {}
        return {"rank": self.lora_rank, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "targets": sorted(self.lora_target_names())}


@dataclass
class SFTConfig(TrainConfig):
    """Settings of one SFT run. Units are in brackets at the end of each help text.

    The optimizer and run settings (``output_dir``, ``lr``, ``seed``, ``save_every``, ...)
    are inherited from :class:`~searchrl.train.config.TrainConfig`.
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
        at_least(self, max_steps=(1, "or null: epochs decide"), grad_accum=1, bucket_size=1)
        if self.max_steps is None and not self.epochs > 0:
            raise SettingError("epochs", self.epochs, "must be > 0")


@dataclass
class DPOConfig(SFTConfig):
    """Settings of one DPO run (:mod:`searchrl.train.dpo`): SFT's batching and optimizer fields, where a
    row of the batch plan is a preference *pair*, plus DPO's ``beta`` and cDPO's label smoothing.
    Units are in brackets at the end of each help text.

    Defaults follow the common DPO recipes (Rafailov et al. 2023; Zephyr; TRL): lr 1e-6,
    beta 0.1, a short warmup, cosine to 0, one epoch.
    """

    lr: float = field(default=1e-6, metadata={"help": "peak learning rate of AdamW (per unit gradient)"})
    warmup_steps: int = field(default=10, metadata={
        "help": "linear warmup length; cosine decay follows (optimizer steps)"})
    min_lr_ratio: float = field(default=0.0, metadata={
        "help": "learning rate at the last step, relative to lr (fraction)"})
    tokens_per_batch: int = field(default=16384, metadata={
        "help": "budget of one process's batch per optimizer step, padding counted: a pair costs "
                "2 x (prompt + longer response), pairs * 2 * longest_sequence <= this (tokens)"})
    max_seq_len: int = field(default=1024, metadata={
        "help": "longest prompt + response kept; pairs with a longer one are dropped (tokens)"})
    truncation: str = field(default="drop", metadata={
        "help": "pairs longer than max_seq_len are dropped ('drop'; a cut response is another response) (choice)"})
    beta: float = field(default=0.1, metadata={
        "help": "DPO's KL weight: implicit reward = beta * log(pi / pi_ref); smaller = further from the "
                "reference (dimensionless)"})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "cDPO: probability that a preference label is flipped; 0 = DPO (probability)"})

    trajectory_fields: ClassVar[tuple[str, ...]] = SFTConfig.trajectory_fields + ("beta", "label_smoothing")

    def __post_init__(self):
        super().__post_init__()
        if self.truncation != "drop":
            raise ValueError("DPO pairs are dropped when too long (truncation='drop'), never cut")
        if self.tokens_per_batch < 2 * self.max_seq_len:
            raise ValueError(f"tokens_per_batch ({self.tokens_per_batch}) must be >= 2 * max_seq_len "
                             f"({2 * self.max_seq_len}): a pair is two sequences")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5) (at 0.5 a label says nothing), "
                             f"got {self.label_smoothing}")


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


ADV_ESTIMATORS = ("gae_action", "gae", "grpo")  # searchrl.train.advantages (kept here: no torch import)
POLICY_LOSSES = ("ppo_clip", "dapo")  # searchrl.train.policy_losses
LOSS_AGGREGATIONS = ("action-mean", "seq-mean-action-mean")


@dataclass
class RLConfig(TrainConfig):
    """Settings of one on-policy RL run (:mod:`searchrl.train.rl`): PPO (operation- or token-level,
    with a critic) or GRPO / DAPO (group-normalised, no critic). Units in brackets.

    The defaults are Guided-ReST's operation-level PPO (seed 001's code: ``gae_action``, gamma =
    lambda = 1, whitened advantages, clip 0.2 with dual clip 3, value clip 0.5, no KL, no entropy,
    one sample per prompt at temperature 1, one PPO epoch, actor lr 1e-6, critic lr 1e-5, constant
    schedule) with a CPU-sized batch; ``searchrl.config`` gives the ``grpo`` section GRPO's.
    """

    lr: float = field(default=1e-6, metadata={"help": "actor (policy) learning rate (per unit gradient)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup of both learning rates (optimizer steps)"})
    min_lr_ratio: float = field(default=1.0, metadata={
        "help": "learning rate at the last step relative to lr; 1.0 = constant, as the RL recipes (fraction)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay on >= 2-dim tensors (fraction)"})
    critic_lr: float = field(default=1e-5, metadata={"help": "critic learning rate (per unit gradient)"})
    save_every: int = field(default=10, metadata={"help": "iterations between resumable checkpoints (iterations)"})
    log_every: int = field(default=1, metadata={"help": "iterations between metrics.jsonl lines (iterations)"})
    # what is sampled
    split: str = field(default="selftrain", metadata={"help": "task split the prompts come from (split name)"})
    n_problems: int = field(default=0, metadata={"help": "use the split's first N problems; 0 = all (problems)"})
    iterations: int = field(default=20, metadata={"help": "rollout batches, each followed by its updates (iterations)"})
    prompts_per_step: int = field(default=64, metadata={"help": "prompts sampled per iteration (prompts)"})
    samples_per_prompt: int = field(default=1, metadata={
        "help": "responses per prompt, the group of GRPO (responses)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (dimensionless)"})
    max_tokens: int = field(default=768, metadata={"help": "response budget (tokens)"})
    batch_size: int = field(default=64, metadata={"help": "rows the sampler decodes together (rows)"})
    # how it is optimised
    minibatch_size: int = field(default=64, metadata={
        "help": "responses per optimizer step; an iteration takes ppo_epochs x (responses / minibatch_size) "
                "steps (responses)"})
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each rollout batch (epochs)"})
    tokens_per_batch: int = field(default=16384, metadata={
        "help": "micro-batch budget of one forward/backward, padding counted (tokens)"})
    # the algorithm
    adv_estimator: str = field(default="gae_action", metadata={
        "help": "gae_action (operation-level MDP: an action is a line) | gae (token-level) | grpo "
                "(group-normalised, no critic) (choice)"})
    gamma: float = field(default=1.0, metadata={"help": "discount over actions (dimensionless)"})
    lam: float = field(default=1.0, metadata={"help": "GAE lambda (dimensionless)"})
    whiten_advantages: bool = field(default=True, metadata={
        "help": "whiten GAE advantages over the batch's action starts (bool)"})
    grpo_std_normalize: bool = field(default=True, metadata={
        "help": "GRPO: divide by the group's reward std (false = Dr. GRPO) (bool)"})
    policy_loss: str = field(default="ppo_clip", metadata={"help": "ppo_clip | dapo (choice)"})
    loss_agg: str = field(default="action-mean", metadata={
        "help": "action-mean (mean over the step's actions: Guided-ReST, DAPO token mean) | "
                "seq-mean-action-mean (per-response mean first: GRPO) (choice)"})
    clip_low: float = field(default=0.2, metadata={"help": "ratio clip below 1 (fraction)"})
    clip_high: float | None = field(default=None, metadata={
        "help": "ratio clip above 1; null = clip_low (DAPO clip-higher: 0.28) (fraction)"})
    dual_clip: float | None = field(default=3.0, metadata={
        "help": "dual clip constant on negative advantages; null = off (ratio)"})
    log_ratio_clamp: float = field(default=20.0, metadata={"help": "per-token log-ratio clamp (nats)"})
    value_clip: float | None = field(default=0.5, metadata={"help": "critic value clip; null = off (value)"})
    critic_warmup: int = field(default=0, metadata={
        "help": "iterations that train only the critic before the actor moves (iterations)"})
    kl_coef: float = field(default=0.0, metadata={
        "help": "weight of the k3 KL to the initial policy in the loss; 0 = no reference model (weight)"})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus weight (weight)"})
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "DAPO: drop groups whose rewards are all equal and sample more prompts to refill (bool)"})
    max_sample_rounds: int = field(default=3, metadata={
        "help": "dynamic sampling: sampling rounds per iteration at most (rounds)"})
    overlong_buffer: int = field(default=0, metadata={
        "help": "DAPO soft overlong punishment: the last N tokens of the budget are penalised linearly; "
                "0 = off (tokens)"})
    overlong_penalty: float = field(default=1.0, metadata={"help": "penalty at the full budget (reward)"})
    recompute_old_logprobs: bool = field(default=False, metadata={
        "help": "recompute the old log-probabilities with the policy before the updates instead of taking "
                "the sampler's (needed when temperature != 1) (bool)"})
    seed: int = field(default=0, metadata={"help": "seed of the prompt order, sampling and minibatches (integer)"})

    trajectory_fields: ClassVar[tuple[str, ...]] = TrainConfig.trajectory_fields + (
        "critic_lr", "split", "n_problems", "iterations", "prompts_per_step", "samples_per_prompt", "temperature",
        "max_tokens", "minibatch_size", "ppo_epochs", "tokens_per_batch", "adv_estimator", "gamma", "lam",
        "whiten_advantages", "grpo_std_normalize", "policy_loss", "loss_agg", "clip_low", "clip_high", "dual_clip",
        "log_ratio_clamp", "value_clip", "critic_warmup", "kl_coef", "entropy_coef", "dynamic_sampling",
        "max_sample_rounds", "overlong_buffer", "overlong_penalty", "recompute_old_logprobs")

    @property
    def uses_critic(self) -> bool:
        return self.adv_estimator in ("gae", "gae_action")

    @property
    def steps_per_iteration(self) -> int:
        return self.ppo_epochs * -(-self.prompts_per_step * self.samples_per_prompt // self.minibatch_size)

    def __post_init__(self):
        super().__post_init__()
        for name, allowed in (("adv_estimator", ADV_ESTIMATORS), ("policy_loss", POLICY_LOSSES),
                              ("loss_agg", LOSS_AGGREGATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {' | '.join(allowed)}, got {getattr(self, name)!r}")
        at_least(self, iterations=1, prompts_per_step=1, samples_per_prompt=1, max_tokens=1, batch_size=1,
                 minibatch_size=1, ppo_epochs=1, tokens_per_batch=1, max_sample_rounds=1, n_problems=(0, "0 = all"))
        if self.adv_estimator == "grpo" and self.samples_per_prompt < 2:
            raise ValueError("grpo needs samples_per_prompt >= 2 (a group)")
        if self.dynamic_sampling and self.samples_per_prompt < 2:
            raise ValueError("dynamic_sampling drops groups with equal rewards: it needs samples_per_prompt >= 2")
        if not (0 < self.clip_low < 1) or (self.clip_high is not None and not self.clip_high > 0):
            raise ValueError(f"clip_low must be in (0, 1) and clip_high > 0, got {self.clip_low}, {self.clip_high}")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip must be > 1 (or null), got {self.dual_clip}")
        if self.overlong_buffer < 0 or self.overlong_buffer >= self.max_tokens:
            raise ValueError(f"overlong_buffer must be in [0, max_tokens), got {self.overlong_buffer}")
        if self.temperature <= 0:
            raise ValueError("RL samples at temperature > 0 (the ratio needs the sampling distribution)")
        if self.temperature != 1.0 and not self.recompute_old_logprobs:
            raise ValueError("the sampler's logprobs are at temperature 1: with another temperature set "
                             "recompute_old_logprobs=true")
