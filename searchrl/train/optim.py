"""The optimizer of a run and its one step: AdamW, the learning-rate schedule, the accumulation step.

* **AdamW** (:func:`build_optimizer`), the fused kernel where torch has one for the device;
  weight decay only on tensors with >= 2 dims (matrices and embeddings, not norms/biases).
  A model with parts that learn at their own rates (an actor and its critic) says so through
  ``optimizer_parts`` (:func:`optimizer_parts`); each part is also clipped on its own.
* **Schedule** (:func:`lr_lambda`): the learning rate is warmed up linearly over
  ``warmup_steps`` (step 0 uses ``lr / warmup_steps``), then cosine-decayed to
  ``min_lr_ratio * lr`` at the last step. It counts optimizer steps and is stepped by us, not
  through accelerate's wrapper (which would step it num_processes times per step unless told
  otherwise).
* **One optimizer step** (:func:`accumulation_step`). A step is a list of micro-batches per
  process, the same number on every process. The loss callable returns a *sum* over the
  terms of its micro-batch (tokens, sequences); the caller passes the number of terms of the
  whole step over all processes as the normaliser. Each micro-batch's backward is scaled by
  ``P / normaliser``: gradients add up over the micro-batches and DDP averages them over the
  ``P`` processes, so the result is the gradient of the mean over every term of the step,
  however the terms fall into micro-batches. Gradients are all-reduced once per step: all but
  the last micro-batch run under ``no_sync`` (FSDP: without gradient sync). Then the global
  gradient norm is clipped to ``grad_clip``, and the optimizer step, schedule step and
  ``zero_grad`` follow.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from searchrl.train import fsdp
from searchrl.train.config import OptimConfig


def lr_lambda(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_parts(model: torch.nn.Module, cfg: OptimConfig) -> list[tuple[str, list, float]]:
    """``(name, trainable parameters, peak lr)`` of each part of ``model`` that has its own learning
    rate and its own gradient clipping: one part (``cfg.lr``) unless the model defines
    ``optimizer_parts(cfg)`` (an actor with a critic: :class:`searchrl.train.rl.ActorCritic`)."""
    own = getattr(model, "optimizer_parts", None)
    if own is not None:
        return [(name, [p for p in ps if p.requires_grad], lr) for name, ps, lr in own(cfg)]
    return [("model", [p for p in model.parameters() if p.requires_grad], cfg.lr)]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int):
    """AdamW over ``model``'s trainable parameters and its warmup + cosine ``LambdaLR`` of ``total_steps``.

    ``cfg`` is any object with the :class:`OptimConfig` fields. Build it after moving the
    model to its device (the fused kernel is chosen by the parameters' device). A model with
    parts (:func:`optimizer_parts`) gets one pair of groups per part at that part's learning rate
    (the schedule scales every group alike).
    """
    parts = optimizer_parts(model, cfg)
    params = [p for _, ps, _ in parts for p in ps]
    groups = []
    for _, ps, lr in parts:
        groups += [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0, "lr": lr}]
    groups = [g for g in groups if g["params"]]
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused_devices = _get_fused_kernels_supported_devices()
    except ImportError:
        fused_devices = ["cuda"]
    fused = all(p.is_floating_point() and p.device.type in fused_devices for p in params)
    betas = tuple(cfg.betas)
    try:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused or None)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    return optimizer, scheduler


MicroBatch = TypeVar("MicroBatch")


def accumulation_step(accelerator, model, optimizer, scheduler, micro_batches: Sequence[MicroBatch],
                      loss_fn: Callable[[MicroBatch], torch.Tensor], normaliser: float,
                      max_norm: float = math.inf, clip_groups: Sequence[Sequence[torch.nn.Parameter]] | None = None
                      ) -> torch.Tensor:
    """One optimizer step over this process's ``micro_batches``; returns the gradient norm (before clipping).

    With ``clip_groups`` each group of parameters is clipped to ``max_norm`` on its own (an actor
    and its critic, as separate optimizers would) and the norms of all groups are returned.

    ``loss_fn(micro_batch)`` runs the forward pass and returns the *sum* of the micro-batch's
    loss terms; ``normaliser`` is the number of terms of the whole step on all processes
    (e.g. response tokens). The gradient is then that of the mean over all of them (see
    this module's docstring). Every process must pass the same number of micro-batches; one
    with no data left can pass a repeated micro-batch whose loss it multiplies by 0.
    """
    if not micro_batches:
        raise ValueError("an optimizer step needs at least one micro-batch")
    if not normaliser > 0:
        raise ValueError(f"normaliser must be > 0, got {normaliser}")
    scale = accelerator.num_processes / normaliser  # DDP and FSDP average gradients over the processes
    last = len(micro_batches) - 1
    for j, micro_batch in enumerate(micro_batches):
        # gradients are all-reduced (FSDP: reduce-scattered) once per step, on its last micro-batch
        with contextlib.nullcontext() if j == last else _no_sync(accelerator, model):
            accelerator.backward(loss_fn(micro_batch) * scale)
    if clip_groups:
        norms = [_plain(accelerator.clip_grad_norm_(list(g), max_norm)) for g in clip_groups]
        gnorm = torch.stack([n.detach().float() for n in norms])
    else:
        gnorm = _plain(accelerator.clip_grad_norm_(model.parameters(), max_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return gnorm.detach().float()


@contextlib.contextmanager
def _no_sync(accelerator, model):
    if not fsdp.is_sharded(model):
        with accelerator.no_sync(model):
            yield
        return
    fsdp.set_gradient_sync(model, False)
    try:
        yield
    finally:
        fsdp.set_gradient_sync(model, True)


def _plain(norm) -> torch.Tensor:
    """A gradient norm as a plain tensor (FSDP's is a replicated DTensor; accelerate may give a float or None)."""
    if not torch.is_tensor(norm):
        return torch.tensor(float(norm or 0.0))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
