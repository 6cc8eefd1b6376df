"""The batch of one RL step: an iteration's graded responses and what the step derives from them.

Why this file exists
--------------------
verl runs an RL step in seams, each a function over one batch object (its ``DataProto``):
collect rollouts -> compute log-probs / values -> advantages -> update. :class:`RolloutBatch` is
that object for every consumer of rollouts here (:mod:`searchrl.train.rl` and the loops built on
it): the collect seam (:func:`searchrl.train.rl.collect_rollouts`) fills its *sampled* fields,
the prepare seam (:func:`searchrl.train.rl.prepare`) its *derived* ones (values, reference
log-probabilities, advantages, returns), and the update and metrics seams read them. A new
method adds a field or a function over the batch, not a parameter threaded through a loop.

Rows are ragged (one entry per response, no padding) and held as Python lists and NumPy arrays,
so this module imports no torch; :meth:`RolloutBatch.collate` pads chosen rows into tensors for
one forward pass (torch is imported there).

Response positions. Every per-token field has one entry per *response* token ``t``: the sampler's
log-probability of token ``t``, whether ``t`` starts an action (the operation-level MDP,
:func:`searchrl.train.advantages.action_starts`), and, after prepare, the critic's value read at
the token before ``t``, the reference policy's log-probability, the advantage and the return
(non-zero only at action starts for GAE; on every token for GRPO).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# fields with one entry per response, in the order the positional constructor takes them
SAMPLED_FIELDS = ("prompt_ids", "response_ids", "logprobs", "rewards", "correct", "starts", "groups", "finish")
DERIVED_FIELDS = ("values", "ref_logprobs", "advantages", "returns")  # per response token, set by prepare


@dataclass
class RolloutBatch:
    """One iteration's graded responses, as token ids (the one rollout format of every RL trainer).

    Sampled (collect): ``prompt_ids`` (a given response prefix included), ``response_ids``, the
    sampler's ``logprobs`` per response token, ``rewards`` (task reward + DAPO's overlong
    penalty), ``correct``, action ``starts`` (bool per response token), ``groups`` (the prompt's
    stream position: GRPO's group id) and ``finish`` reasons; ``stats``: the sampling statistics
    of the whole collection (dropped groups included), which the metrics read.

    Derived (prepare), float32 per response token, ``None`` before: ``values`` (the critic's, 0
    without one), ``ref_logprobs`` (the reference policy's, 0 without KL), ``advantages``,
    ``returns``.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    logprobs: list[Sequence[float]]  # the sampler's (or recomputed by prepare), one per response token
    rewards: list[float]  # task reward (+ overlong penalty)
    correct: list[bool]
    starts: list[np.ndarray]  # bool per response token: starts an action
    groups: list[int]  # stream position of the prompt (GRPO groups)
    finish: list[str] = field(default_factory=list)
    values: list[np.ndarray] | None = None
    ref_logprobs: list[Sequence[float]] | None = None
    advantages: list[np.ndarray] | None = None
    returns: list[np.ndarray] | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.response_ids)

    def lengths(self) -> list[int]:
        """Prompt + response tokens of each row (what a forward pass costs)."""
        return [len(p) + len(r) for p, r in zip(self.prompt_ids, self.response_ids)]

    def select(self, rows: Sequence[int]) -> RolloutBatch:
        """The rows ``rows`` (per-response fields only; ``stats`` describe the whole collection)."""
        kept = [f for f in SAMPLED_FIELDS if f != "finish" or self.finish]  # finish reasons are optional
        kept += [f for f in DERIVED_FIELDS if getattr(self, f) is not None]
        return RolloutBatch(**{f: [getattr(self, f)[i] for i in rows] for f in kept})

    @classmethod
    def concat(cls, parts: Iterable[RolloutBatch]) -> RolloutBatch:
        """The rows of ``parts`` one after the other (sampled fields; prepare runs on the whole batch)."""
        parts = list(parts)
        return cls(*([x for p in parts for x in getattr(p, f)] for f in SAMPLED_FIELDS))

    def collate(self, rows: Sequence[int], pad_id: int, extra: Sequence[str] = ()) -> Padded:
        """Rows ``rows`` right-padded into tensors (:class:`Padded`); ``extra``: derived per-token fields
        to pad too (``"advantages"``, ``"values"``, ...), as float32 ``[b, T]``."""
        import torch

        P = [len(self.prompt_ids[r]) for r in rows]
        R = [len(self.response_ids[r]) for r in rows]
        L, T = max(p + r for p, r in zip(P, R)), max(R)
        ids = np.full((len(rows), L), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), T), dtype=bool)
        starts = np.zeros((len(rows), T), dtype=bool)
        old = np.zeros((len(rows), T), dtype=np.float32)
        ext = {k: np.zeros((len(rows), T), dtype=np.float32) for k in extra}
        for i, r in enumerate(rows):
            seq = self.prompt_ids[r] + self.response_ids[r]
            ids[i, :len(seq)] = seq
            mask[i, :R[i]] = True
            starts[i, :R[i]] = self.starts[r]
            old[i, :R[i]] = self.logprobs[r]
            for k in extra:
                ext[k][i, :R[i]] = getattr(self, k)[r]
        t = torch.from_numpy
        return Padded(ids=t(ids), prompt_lens=torch.tensor(P, dtype=torch.long), mask=t(mask), starts=t(starts),
                      old_logprobs=t(old), extra={k: t(v) for k, v in ext.items()})


@dataclass
class Padded:
    """Rows of a :class:`RolloutBatch` as tensors: ``ids`` ``[b, L]`` prompt + response right-padded,
    ``prompt_lens`` ``[b]``; over response positions ``[b, T]``: ``mask`` (real tokens), ``starts``,
    ``old_logprobs`` (the batch's ``logprobs``) and the ``extra`` fields asked for."""

    ids: Any  # torch.LongTensor
    prompt_lens: Any
    mask: Any
    starts: Any
    old_logprobs: Any
    extra: dict[str, Any]

    @property
    def T(self) -> int:
        return int(self.mask.shape[1])


__all__ = ["RolloutBatch", "Padded", "SAMPLED_FIELDS", "DERIVED_FIELDS"]
