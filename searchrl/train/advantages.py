"""Advantage estimators for the RL trainers, registered by name, and the operation-level MDP.

Why a registry
--------------
PPO, GRPO and DAPO differ first in how a sampled response's reward becomes a per-position
advantage: GAE with a learned critic over tokens (classic PPO), GAE over *operations* (Guided-ReST,
seed 001: "Operation-level MDP is essential"), or group-normalised rewards without a critic
(GRPO/DAPO, ReST-GRPO). Each estimator is a pure function of tensors registered under a name
(``@register_adv_est("gae_action")``, verl's style) and picked by ``RLConfig.adv_estimator``; a new
one is one decorated function.

The prepare seam of the RL step (:func:`searchrl.train.rl.compute_advantages`) calls it over the
whole batch as ``fn(rewards [B], values [B, T], mask, starts, gamma=, lam=, whiten=, groups=,
std_normalize=, cfg=)`` and takes ``(advantages, returns)`` ``[B, T]``; an estimator takes the
keywords it uses and ignores the rest (``**_``), and one with settings of its own reads them from
``cfg`` (the run's ``RLConfig``), so none is threaded through the trainer.

The operation-level MDP (Guided-ReST's ``hgae``/``hppo``, reproduced exactly)
------------------------------------------------------------------------------
* An **action** is one operation: one line of the trace. A response token *starts* an action if
  the token before it contains ``"\\n"`` anywhere (a BPE token can carry the newline in its
  middle, e.g. ``").\\n"``), and the first response token always starts one
  (:func:`action_starts`). The token-level MDP is the special case where every response token
  starts an action, so both run through the same code.
* The critic's value for an action is read at the token *before* its start (the hidden state
  that has seen everything up to the action, verl's shifted values): position ``P + t - 1`` of
  prompt + response for response token ``t`` (:func:`shift_values`).
* Rewards are terminal: the response's reward is given on its last action.
* **GAE over actions** (:func:`gae_over_actions`): with values ``V_k`` at the K action starts of a
  response and ``r_k = R`` on the last action (0 before), ``delta_k = r_k + gamma V_{k+1} - V_k``
  (``V_K = 0``), ``A_k = delta_k + gamma lambda A_{k+1}``, returns ``A_k + V_k``. With
  ``gamma = lambda = 1`` (the recipe) ``A_k = R - V_k``.
* Advantages are **whitened over the action starts** of the whole batch
  (:func:`masked_whiten`: verl's ``masked_whiten``, unbiased variance, ``rsqrt(var + 1e-8)``).
* Values and advantages live only at action starts; the other positions hold 0 and are masked.

Shapes: per-response tensors are ``[B, T]`` over *response* positions (``mask`` marks real
tokens, right-padded); ``starts`` is a bool ``[B, T]`` subset of ``mask``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

from ..registry import Registry

_ESTIMATORS = Registry("advantage estimator")
register_adv_est = _ESTIMATORS.register  # @register_adv_est("name")
get_adv_est = _ESTIMATORS.get
adv_estimators = _ESTIMATORS.names


# -----------------------------------------------------------------------------
# the operation-level MDP


def newline_table(tokenizer) -> np.ndarray:
    """``table[i]`` is True when token ``i``'s text contains ``"\\n"`` (decoded alone)."""
    return _newline_table(tokenizer)


@lru_cache(maxsize=8)
def _newline_table(tokenizer) -> np.ndarray:
    n = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    return np.fromiter(("\n" in t for t in texts), dtype=bool, count=n)


def action_starts(response_ids: Sequence[int], has_newline: np.ndarray | Callable[[int], bool]) -> np.ndarray:
    """Bool mask over a response's tokens: which start an action (module docs).

    ``has_newline``: :func:`newline_table` of the tokenizer, or a function of a token id.
    The first token always starts one; token ``t > 0`` does when token ``t - 1`` contains a newline.
    """
    ids = np.asarray(response_ids, dtype=np.int64)
    out = np.zeros(len(ids), dtype=bool)
    if len(ids):
        out[0] = True
        if len(ids) > 1:
            if callable(has_newline):
                prev = np.fromiter((bool(has_newline(int(t))) for t in ids[:-1]), dtype=bool, count=len(ids) - 1)
            else:
                prev = has_newline[ids[:-1]]
            out[1:] = prev
    return out


def shift_values(values: torch.Tensor, prompt_lens: torch.Tensor, T: int) -> torch.Tensor:
    """Per-position values of prompt + response ``[B, L]`` -> the value of each response position
    ``t`` read at sequence position ``P_b + t - 1`` (the token before it), ``[B, T]``."""
    B, L = values.shape
    idx = (prompt_lens.to(values.device)[:, None] - 1 + torch.arange(T, device=values.device)[None, :]).clamp(0, L - 1)
    return values.gather(1, idx)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """verl's ``masked_whiten``: ``(x - mean) * rsqrt(var + 1e-8)`` over the masked entries (unbiased
    variance; with one entry the variance is taken as 0). Masked-out entries are returned as 0."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1)
    var = (((x - mean) ** 2) * m).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * m


# -----------------------------------------------------------------------------
# estimators: (rewards [B], values [B, T] at response positions, mask, starts, **settings) -> (advantages, returns)


@register_adv_est("gae_action")
def gae_over_actions(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor,
                     gamma: float = 1.0, lam: float = 1.0, whiten: bool = True, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the actions of each response (module docs; Guided-ReST ``hgae``).

    ``values[b, t]`` is the critic's value for response position ``t`` (already shifted, see
    :func:`shift_values`); only positions in ``starts`` are read. Returns ``(advantages,
    returns)`` ``[B, T]``, non-zero only at action starts; advantages whitened over all starts of
    the batch when ``whiten``.
    """
    starts = starts & mask.bool()
    adv = torch.zeros_like(values, dtype=torch.float32)
    ret = torch.zeros_like(values, dtype=torch.float32)
    vals = values.float()
    for b in range(values.shape[0]):
        pos = torch.nonzero(starts[b], as_tuple=False).flatten()
        if pos.numel() == 0:
            continue
        v = vals[b, pos]
        K = v.numel()
        nxt = torch.cat([v[1:], v.new_zeros(1)])
        r = v.new_zeros(K)
        r[-1] = float(rewards[b])
        delta = r + gamma * nxt - v
        a = torch.empty_like(v)
        run = v.new_zeros(())
        for k in range(K - 1, -1, -1):
            run = delta[k] + gamma * lam * run
            a[k] = run
        adv[b, pos] = a
        ret[b, pos] = a + v
    if whiten:
        adv = masked_whiten(adv, starts)
    return adv, ret


@register_adv_est("gae")
def gae_over_tokens(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor | None = None,
                    gamma: float = 1.0, lam: float = 1.0, whiten: bool = True, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level GAE (classic PPO on LMs): every response token is an action."""
    return gae_over_actions(rewards, values, mask, mask.bool(), gamma=gamma, lam=lam, whiten=whiten)


@register_adv_est("grpo")
def grpo_advantages(rewards: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor,
                    starts: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                    std_normalize: bool = True, eps: float = 1e-6, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-normalised outcome advantages (GRPO, DeepSeekMath eq. 3 outcome supervision): each
    response's ``(R - mean_g) / (std_g + eps)`` over the responses of its group ``g`` (unbiased std,
    as ``torch.std``; a group of one has std 0), or ``R - mean_g`` when not ``std_normalize``
    (Dr. GRPO). Broadcast to every response token; ``returns`` = the same (no critic).
    A group whose rewards are all equal gets advantage 0 (no signal, no division blow-up).
    """
    if groups is None:
        raise ValueError("grpo advantages need group ids")
    r = rewards.float()
    groups = groups.to(r.device)
    scores = torch.zeros_like(r)
    for g in torch.unique(groups):
        sel = groups == g
        x = r[sel]
        mean = x.mean()
        std = x.std() if x.numel() > 1 else x.new_zeros(())
        scores[sel] = (x - mean) / (std + eps) if std_normalize else x - mean
    adv = scores[:, None] * mask.to(scores.dtype)
    return adv, adv


def group_reward_std(rewards: Sequence[float], groups: Sequence[int]) -> list[float]:
    """The reward standard deviation (unbiased) of each group, in order of first appearance."""
    by: dict[int, list[float]] = {}
    for r, g in zip(rewards, groups):
        by.setdefault(int(g), []).append(float(r))
    return [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in by.values()]


__all__ = ["register_adv_est", "get_adv_est", "adv_estimators", "newline_table", "action_starts", "shift_values",
           "masked_mean", "masked_whiten", "gae_over_actions", "gae_over_tokens", "grpo_advantages",
           "group_reward_std"]
