"""The accelerate side of a run: its processes, its precision, and the launches refused.

A trainer runs on :class:`accelerate.Accelerator`, so ``accelerate launch`` or ``torchrun``
runs it data-parallel (DDP) unchanged. :func:`make_accelerator` makes (or checks) the one
accelerator of a run and refuses what the trainer core would get wrong without a word:

* **Precision.** Weights and optimizer state stay in the model's dtype (pass an fp32
  model); ``mixed_precision="auto"`` runs forward/backward under bf16 autocast on CUDA
  devices with bf16, fp32 elsewhere. fp16 (which needs a loss scaler) is refused.
  accelerate implements autocast by replacing ``model.forward`` in place;
  :class:`~searchrl.train.core.TrainRun` puts the original back when training ends.
* **Processes.** Only the main process writes files (except each process's RNG state in a
  checkpoint). A launch that accelerate does not recognise as distributed (``torchrun`` on
  CPU without ``ACCELERATE_USE_CPU=true``) is refused: every process would believe it is the
  main one and they would overwrite each other's files.
* **Sharding.** accelerate's FSDP/DeepSpeed/Megatron plugins are refused: ``fsdp=true``
  shards with torch's FSDP2 instead (:mod:`searchrl.train.fsdp`) and keeps our files.
* **Accumulation.** accelerate's own ``gradient_accumulation_steps`` is refused, because its
  backward divides the loss a second time (:func:`searchrl.train.optim.accumulation_step`
  accumulates instead).

Trackers are not accelerate's here: the command's ``tracking`` section opens them
(:mod:`searchrl.tracking`, from :class:`~searchrl.train.core.TrainRun`); an accelerator the caller
made with ``log_with=...`` keeps its own trackers, which the metrics log also feeds
(:class:`~searchrl.train.metrics.MetricsLog`).
"""

from __future__ import annotations

import logging
import os

import torch

from searchrl.train.config import TrainConfig

logger = logging.getLogger(__name__)


def resolve_mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting



def make_accelerator(cfg: TrainConfig, accelerator=None):
    """The :class:`accelerate.Accelerator` of a run: ``accelerator`` after checking it, or a new one.

    A new one gets ``cfg.mixed_precision``. A given one must not accumulate gradients itself.
    """
    from accelerate import Accelerator

    if accelerator is None:
        try:
            accelerator = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision))
        except ValueError as e:  # accelerate's process-wide state was set up earlier with another precision
            logger.warning("%s; using the existing accelerate state", e)
            accelerator = Accelerator()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:  # every process would think it is the only one
        raise ValueError(f"launched as {world} processes (WORLD_SIZE) but accelerate runs each alone, so all of them "
                         f"would write the same files; on CPU set ACCELERATE_USE_CPU=true or use "
                         f"'accelerate launch --cpu'")
    if getattr(accelerator, "gradient_accumulation_steps", 1) != 1:
        raise ValueError(f"pass an Accelerator with gradient_accumulation_steps=1 and set "
                         f"{type(cfg).__name__}.grad_accum instead (its backward would divide the loss a second time)")
    kind = str(getattr(accelerator, "distributed_type", ""))
    if any(k in kind for k in ("FSDP", "DEEPSPEED", "MEGATRON")):
        raise ValueError(f"{kind}: accelerate's sharding plugins are not used; launch as DDP "
                         "(configs/accelerate/ddp.yaml) and set the trainer's fsdp=true, which shards with torch "
                         "FSDP2 and keeps our checkpoint files")
    if accelerator.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed precision {accelerator.mixed_precision!r} is not supported (use 'bf16' or 'no')")
    return accelerator
