"""Training losses, registered by name.

Why a registry
--------------
The trainers differ mostly in their loss: SFT imitates response tokens, a value
model regresses returns, PPO/GRPO/DAPO clip a policy ratio, DPO compares a chosen
and a rejected response. Variants of one family (GRPO's sequence-mean versus DAPO's
token-mean, a KL term or not) are picked by a config string, so each loss is a
pure function of tensors registered under a name (``@register_loss("sft")``) and
looked up with :func:`get_loss`. A trainer stays free of ``if loss_type == ...``
chains, a new variant is one decorated function, and an unknown name fails at once
with the list of known ones instead of deep inside a training step.

Conventions: a loss takes tensors (no model, no optimizer, no accelerator) and
returns the *sum* of its per-token or per-sequence terms together with their count.
Summing rather than averaging lets :func:`searchrl.train.core.accumulation_step`
divide once by the number of terms in the whole optimizer step (all micro-batches,
all processes), which is what makes gradient accumulation and data parallelism
give the gradient of one big batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt, padding), Hugging Face convention

_LOSSES: dict[str, Callable] = {}


def register_loss(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` available as ``get_loss(name)``. A name can be registered once."""

    def deco(fn: Callable) -> Callable:
        if name in _LOSSES and _LOSSES[name] is not fn:
            raise ValueError(f"a loss named {name!r} is already registered ({_LOSSES[name].__qualname__})")
        _LOSSES[name] = fn
        return fn

    return deco


def get_loss(name: str) -> Callable:
    """The loss registered as ``name``; an unknown name is a ``KeyError`` listing the known ones."""
    try:
        return _LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(_LOSSES)) or '(none)'}") from None


@register_loss("sft")
def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy (fp32) over positions whose label is not -100, and their count.

    ``logits[:, t]`` predicts ``labels[:, t + 1]``.
    """
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (target != IGNORE_INDEX).sum()
