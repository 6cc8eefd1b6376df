"""Policy-gradient losses of the RL trainers, registered by name, on actions.

Why this file exists
--------------------
PPO (Guided-ReST's operation-level PPO and its token-level ablation), GRPO and DAPO share one
surrogate, the clipped importance ratio, and differ in small settings: what an *action* is (an
operation or a token), how the ratio is clipped (symmetric, clip-higher, dual clip) and how
per-action terms are averaged (over all actions of the step, or per sequence first). Each loss is
a pure function registered under a name (``@register_policy_loss("ppo_clip")``, verl's
``register_policy_loss`` style) returning its *per-action* terms; the trainer aggregates them with
:func:`aggregate` and divides by counts over the whole optimizer step (see
:mod:`searchrl.train.rl`). The value loss (clipped, PPO) and the k3 KL estimator live here too.

The protocol. The update seam (:func:`searchrl.train.rl.micro_loss`) calls the loss named by
``RLConfig.policy_loss`` as ``fn(logprobs, old_logprobs, advantages, actions, cfg)`` (``[B, T]``
tensors over response positions, :class:`Actions`, the run's config) and reads a
:class:`PolicyLossOut`. A loss reads its own settings from ``cfg`` (:func:`loss_settings`: its
defaults, then ``cfg``'s attributes of those names, then keyword overrides), so a new loss, or a
new setting of one, is a decorated function here and a field of ``RLConfig``: nothing is passed
through the trainer by hand. Called without a config (tests, other trainers) a loss uses its
defaults and keyword settings.

Actions. ``starts`` ``[B, T]`` marks the response tokens that begin an action (see
:func:`searchrl.train.advantages.action_starts`); every masked token belongs to the action whose
start is the last one at or before it. An action's log-ratio is the **sum** of its tokens'
log-ratios, each clamped to ``+-log_ratio_clamp`` (Guided-ReST: "The log importance ratio is
computed as the sum over tokens"; clamp 20 as verl), and its advantage is the one at its start.
With ``starts = mask`` (token level) this is the usual per-token PPO.

The clipped surrogate (PPO, Schulman et al. 2017 eq. 7; dual clip, Ye et al. 2020, as verl):
``l1 = -A r``, ``l2 = -A clip(r, 1 - eps_low, 1 + eps_high)``, ``l = max(l1, l2)``, and where
``A < 0``: ``l = min(l, -A c)`` with ``c = dual_clip`` (3 in the Guided-ReST recipe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..registry import Registry

_POLICY_LOSSES = Registry("policy loss")
register_policy_loss = _POLICY_LOSSES.register  # @register_policy_loss("name")
get_policy_loss = _POLICY_LOSSES.get
policy_losses = _POLICY_LOSSES.names
AGGREGATIONS = ("action-mean", "seq-mean-action-mean")


@dataclass
class Actions:
    """The actions of a batch, flattened in row-major order: ``seq[k]`` is action k's row,
    ``index`` ``[B, T]`` the action of each masked token (-1 elsewhere)."""

    seq: torch.Tensor  # long [K]
    index: torch.Tensor  # long [B, T]
    starts: torch.Tensor  # bool [B, T]
    count: int

    @classmethod
    def of(cls, mask: torch.Tensor, starts: torch.Tensor) -> Actions:
        mask = mask.bool()
        starts = starts.bool() & mask
        flat = torch.cumsum(starts.flatten().long(), 0) - 1  # row-major: actions numbered row by row
        index = torch.where(mask, flat.view_as(mask), torch.full_like(flat.view_as(mask), -1))
        # a masked token before its row's first start would join the previous row's action
        first = torch.where(starts.any(1), starts.float().argmax(1),
                            torch.full((mask.shape[0],), mask.shape[1], device=mask.device))
        if bool((mask & (torch.arange(mask.shape[1], device=mask.device)[None, :] < first[:, None])).any()):
            raise ValueError("every row's first response token must start an action")
        seq = torch.nonzero(starts, as_tuple=False)[:, 0]
        return cls(seq=seq, index=index, starts=starts, count=int(starts.sum()))

    def sum_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Per-action sums of a per-token ``[B, T]`` tensor (masked tokens only) -> ``[K]``."""
        keep = self.index >= 0
        out = x.new_zeros(self.count)
        return out.index_add(0, self.index[keep], x[keep])


def action_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, actions: Actions,
                     clamp: float = 20.0) -> torch.Tensor:
    """Each action's log importance ratio: the sum of its tokens' ``logp - old_logp``, each clamped to
    ``+-clamp`` (``[K]``)."""
    lr = torch.clamp(logprobs.float() - old_logprobs.float(), -clamp, clamp)
    return actions.sum_tokens(lr)


@dataclass
class PolicyLossOut:
    terms: torch.Tensor  # [K] per-action loss
    log_ratio: torch.Tensor  # [K]
    clipped: torch.Tensor  # [K] bool: the clipped branch was taken (ratio outside the trust region, gradient 0)
    dual_clipped: torch.Tensor  # [K] bool


def _clipped_surrogate(log_ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float,
                       dual_clip: float | None) -> PolicyLossOut:
    ratio = torch.exp(log_ratio)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(l1, l2)
    clipped = l2 > l1
    dual = torch.zeros_like(clipped)
    if dual_clip is not None:
        l3 = -adv * dual_clip
        neg = adv < 0
        dual = neg & (l3 < loss)
        loss = torch.where(neg, torch.minimum(loss, l3), loss)
    return PolicyLossOut(terms=loss, log_ratio=log_ratio, clipped=clipped, dual_clipped=dual)


def loss_settings(cfg: Any, overrides: Mapping[str, Any], **defaults: Any) -> dict[str, Any]:
    """A policy loss's settings: its ``defaults``, replaced by the attributes of ``cfg`` (an
    ``RLConfig``; None: none) with the same names, then by the keyword ``overrides`` of the call.
    An override the loss does not have is a ``TypeError``, as for any unknown keyword."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TypeError(f"unknown policy-loss setting(s) {', '.join(unknown)}; this loss reads {', '.join(defaults)}")
    out = dict(defaults)
    if cfg is not None:
        out.update({k: getattr(cfg, k) for k in defaults if hasattr(cfg, k)})
    out.update(overrides)
    return out


@register_policy_loss("ppo_clip")
def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, actions: Actions,
                  cfg: Any = None, **settings: Any) -> PolicyLossOut:
    """PPO's clipped surrogate per action (module docs): ``eps_low = clip_low``, ``eps_high =
    clip_high`` (default ``clip_low``), dual clip ``dual_clip`` on negative advantages (None: off),
    per-token log-ratios clamped to ``+-log_ratio_clamp``; each read from ``cfg`` (defaults 0.2,
    None, 3.0, 20.0) or given as keywords.

    ``advantages`` ``[B, T]`` is read at the action starts (one value per action).
    """
    s = loss_settings(cfg, settings, clip_low=0.2, clip_high=None, dual_clip=3.0, log_ratio_clamp=20.0)
    starts_adv = advantages.float()[actions.starts]  # row-major, as the actions are numbered
    log_ratio = action_log_ratio(logprobs, old_logprobs, actions, s["log_ratio_clamp"])
    high = s["clip_low"] if s["clip_high"] is None else s["clip_high"]
    return _clipped_surrogate(log_ratio, starts_adv, s["clip_low"], high, s["dual_clip"])


@register_policy_loss("dapo")
def dapo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, actions: Actions,
              cfg: Any = None, **settings: Any) -> PolicyLossOut:
    """DAPO's surrogate (Yu et al. 2025 eq. 8): the clipped ratio with *clip-higher* (``eps_low``
    0.2, ``eps_high`` 0.28 where ``clip_high`` is unset), to be aggregated by token mean over the
    step (``action-mean`` with token actions); no dual clip unless ``cfg`` (or a keyword) sets one."""
    s = loss_settings(cfg, settings, clip_low=0.2, clip_high=0.28, dual_clip=None, log_ratio_clamp=20.0)
    return ppo_clip_loss(logprobs, old_logprobs, advantages, actions, clip_low=s["clip_low"],
                         clip_high=0.28 if s["clip_high"] is None else s["clip_high"], dual_clip=s["dual_clip"],
                         log_ratio_clamp=s["log_ratio_clamp"])


def aggregate(terms: torch.Tensor, seq: torch.Tensor, mode: str, n_actions: float, n_seqs: float) -> torch.Tensor:
    """This micro-batch's share of the step's mean loss.

    ``action-mean``: sum of the terms / ``n_actions`` (all actions of the optimizer step: the
    Guided-ReST loss "averaged over action starts", DAPO's token mean). ``seq-mean-action-mean``:
    each sequence's mean over its actions, summed / ``n_seqs`` (sequences of the step; GRPO's
    original sequence-level mean). The step's counts make accumulation exact however the step is
    cut into micro-batches.
    """
    if mode == "action-mean":
        return terms.sum() / max(n_actions, 1)
    if mode == "seq-mean-action-mean":
        if terms.numel() == 0:
            return terms.sum()
        B = int(seq.max()) + 1
        s = terms.new_zeros(B).index_add(0, seq, terms)
        c = terms.new_zeros(B).index_add(0, seq, torch.ones_like(terms))
        return (s[c > 0] / c[c > 0]).sum() / max(n_seqs, 1)
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGGREGATIONS}")


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, starts: torch.Tensor,
                       clip: float | None = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss at the action starts (verl ``compute_value_loss``): ``0.5 *
    max((V - G)^2, (V_old + clip(V - V_old, -c, c) - G)^2)``; returns ``(sum over starts, clipped
    fraction numerator)``."""
    m = starts.bool()
    v, vo, g = values.float()[m], old_values.float()[m], returns.float()[m]
    l1 = (v - g) ** 2
    if clip is None:
        return 0.5 * l1.sum(), torch.zeros((), device=v.device)
    vc = vo + torch.clamp(v - vo, -clip, clip)
    l2 = (vc - g) ** 2
    return 0.5 * torch.maximum(l1, l2).sum(), (l2 > l1).float().sum()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref) (Schulman's "approximating KL"; GRPO eq. 4):
    ``exp(ref - logp) - (ref - logp) - 1``, clamped to [-10, 10] as verl."""
    d = torch.clamp(ref_logprobs.float() - logprobs.float(), -20.0, 20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, -10.0, 10.0)


def token_logprobs_and_entropy(logits: torch.Tensor, targets: torch.Tensor, want_entropy: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log softmax(logits)[targets]`` per position (fp32) and, if asked, the entropy of each
    position's distribution. ``logits`` ``[B, T, V]``, ``targets`` ``[B, T]``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    lp = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1) if want_entropy else None
    return lp, ent


__all__ = ["register_policy_loss", "get_policy_loss", "policy_losses", "Actions", "action_log_ratio", "PolicyLossOut",
           "loss_settings", "ppo_clip_loss", "dapo_loss", "aggregate", "clipped_value_loss", "kl_k3",
           "token_logprobs_and_entropy", "AGGREGATIONS"]
