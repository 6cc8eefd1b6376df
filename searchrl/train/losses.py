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
Summing rather than averaging lets :func:`searchrl.train.optim.accumulation_step`
divide once by the number of terms in the whole optimizer step (all micro-batches,
all processes), which is what makes gradient accumulation and data parallelism
give the gradient of one big batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Registry

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt, padding), Hugging Face convention

_LOSSES = Registry("loss")
register_loss = _LOSSES.register  # @register_loss("name"): make a loss available as get_loss("name")
get_loss = _LOSSES.get  # the loss registered under a name; an unknown name is a KeyError listing the known ones


@register_loss("sft")
def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy (fp32) over positions whose label is not -100, and their count.

    ``logits[:, t]`` predicts ``labels[:, t + 1]``.
    """
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (target != IGNORE_INDEX).sum()


def _per_sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over sequences of each sequence's mean over its masked positions, and how many sequences
    had any (a sequence without a masked position contributes nothing)."""
    mask = mask.to(per_token.dtype)
    n = mask.sum(dim=1)
    has = n > 0
    per_seq = (per_token * mask).sum(dim=1) / n.clamp(min=1)
    return per_seq[has].sum(), has.sum()


@register_loss("value_mse")
def value_mse_loss(values: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of values ``[B, T]`` (in [0, 1]) against one target per sequence ``[B]`` at the
    masked positions (ReST-RL eq. 6, ReST-MCTS*'s value loss), averaged per sequence, summed over
    sequences; and the number of sequences."""
    err = (values.float() - targets.float()[:, None]) ** 2
    return _per_sequence_mean(err, mask)


@register_loss("value_ce")
def value_ce_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of per-token class logits ``[B, T, C]`` against one label per sequence ``[B]``
    copied to every masked position (VGS: the roll-out tokens), averaged per sequence, summed over
    sequences; and the number of sequences."""
    B, T, C = logits.shape
    ce = F.cross_entropy(logits.float().reshape(B * T, C), labels.long().repeat_interleave(T),
                         reduction="none").reshape(B, T)
    return _per_sequence_mean(ce, mask)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence sum of the log-probabilities (fp32 log-softmax) of the tokens whose label is not -100: ``[B]``.

    Shifted like :func:`sft_loss`: ``logits[:, t]`` predicts ``labels[:, t + 1]``, so ``labels``
    are the (unshifted) input ids with prompt and padding positions set to -100. A sequence with
    no such position gets 0.
    """
    B, T, V = logits.shape
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    # cross_entropy = log_softmax + gather, fused; ignored positions give 0
    nll = F.cross_entropy(logits.float().reshape(B * T, V), target.reshape(-1), ignore_index=IGNORE_INDEX,
                          reduction="none")
    return -nll.reshape(B, T).sum(dim=1)


@register_loss("dpo")
def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss (Rafailov et al. 2023, eq. 7), summed over pairs; and the number of pairs.

    All inputs are ``[B]`` sequence log-probabilities (sums over response tokens,
    :func:`sequence_logps`) of the chosen (preferred) and rejected responses under the policy
    and the frozen reference. With the implicit rewards ``r = beta * log(pi / pi_ref)``, the
    logit is ``h = r_chosen - r_rejected = beta * ((pi_c - ref_c) - (pi_r - ref_r))`` and a
    pair's loss ``-(1 - ls) * log sigmoid(h) - ls * log sigmoid(-h)``: eq. 7 for ``ls = 0``;
    with ``ls > 0`` the label is taken to be flipped with probability ``ls`` (conservative DPO,
    cDPO), which bounds how far the margin is pushed.
    """
    chosen_ratio = chosen_logps.float() - ref_chosen_logps.float()
    rejected_ratio = rejected_logps.float() - ref_rejected_logps.float()
    h = beta * (chosen_ratio - rejected_ratio)
    per_pair = -(1.0 - label_smoothing) * F.logsigmoid(h)
    if label_smoothing:
        per_pair = per_pair - label_smoothing * F.logsigmoid(-h)
    return per_pair.sum(), torch.tensor(per_pair.numel(), device=per_pair.device)
