"""On-policy RL on the trainer core: PPO (operation- or token-level, with a critic), GRPO and DAPO.

(Over 500 lines on purpose: the step's seams, collect -> prepare -> update -> metrics, read top to
bottom as one algorithm, as CleanRL's files do; the batch, the estimators and the losses live apart.)

Why this file exists
--------------------
Guided-ReST ends with PPO on an operation-level MDP (seed 001); ReST-RL (seed 004) needs GRPO, and
DAPO is what users compare GRPO with. They are one loop: **sample a batch of responses with our
sampler, grade them with the task, turn rewards into advantages, take clipped-ratio optimizer
steps, repeat**. The differences are an advantage estimator (:mod:`searchrl.train.advantages`)
and a policy loss (:mod:`searchrl.train.policy_losses`), picked by name in :class:`RLConfig`.
Optimizer, schedule, accumulation, checkpoints, exact resume, metrics and the final directory
are the trainer core's (:class:`~searchrl.train.core.TrainRun`), as for SFT and value models.

One iteration (``cfg.iterations`` of them)
------------------------------------------
1. **Prompts.** The split's problems are a stream: pass ``e`` over them is a permutation seeded
   by ``(seed, e)``, and iteration ``i`` takes the next ``prompts_per_step`` (the position in
   the stream is checkpointed). Dynamic sampling (DAPO) keeps drawing from the stream.
2. **Collect** (:func:`collect_rollouts`, over :func:`searchrl.rollout.rollout`):
   ``samples_per_prompt`` responses per prompt from the sampler over the live policy, each with
   its own seed (a function of the stream position and the sample), graded by ``task.score``.
   A :class:`~searchrl.train.batch.RolloutBatch` holds prompt ids, response ids, the sampler's
   per-token logprobs, rewards, the action-start mask and group ids. DAPO's soft overlong
   punishment (eq. 13) is added to the reward; dynamic sampling (DAPO eq. 11) drops groups whose
   rewards are all equal and samples more prompts (up to ``max_sample_rounds`` rounds).
3. **Prepare** (:func:`prepare`): with the weights the batch was sampled with, the critic's
   values (read at the token before each action's start), the reference policy's log-probs
   (``kl_coef > 0``) and, with ``recompute_old_logprobs``, the old ones; then
   (:func:`compute_advantages`) the registered estimator over the whole batch. PPO: GAE over
   actions (``gae_action``) or tokens (``gae``), ``A_k = sum_l (gamma lambda)^l delta_{k+l}``,
   ``delta_k = r_k + gamma V_{k+1} - V_k``, whitened over action starts. GRPO/DAPO:
   group-normalised rewards ``(R_i - mean_g) / std_g`` (DeepSeekMath eq. 3, outcome supervision).
4. **Update** (:func:`update`; the loss of a micro-batch is :func:`micro_loss`). ``ppo_epochs``
   passes; each shuffles the batch (seeded by ``(seed, i, epoch)``) and cuts it into
   ``ceil(responses / minibatch_size)`` minibatches, one optimizer step each, computed in
   micro-batches of at most ``tokens_per_batch`` padded tokens. Each loss term is
   divided by its count over the whole minibatch (actions, responses or action starts), so
   accumulation is exact. The actor's loss is the policy loss (+ ``kl_coef`` * k3 KL to the
   initial policy, - ``entropy_coef`` * entropy, both token means); the critic's is the clipped
   value loss averaged over action starts. Actor and critic are one module with two parameter
   groups at their own learning rates (``lr``, ``critic_lr``), each clipped to ``grad_clip`` on
   its own, as two optimizers would. The policy loss is the function registered under
   ``policy_loss`` (:mod:`searchrl.train.policy_losses`): PPO's clipped surrogate (Schulman et
   al. 2017 eq. 7) ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` per action, with dual
   clip ``min(., -A c)`` where ``A < 0``; DAPO's clip-higher (eq. 8) ``eps_high = 0.28``. It
   reads its own settings from the config, so the update seam passes it nothing by hand.
5. **Metrics** (:func:`rl_metrics`): one ``metrics.jsonl`` line from the batch, its sampling
   statistics and the update's summed loss terms.

Each seam is a function over the batch (verl's "collect -> log-probs / values -> advantages ->
update"), tested alone in ``tests/test_rl_step.py``; :func:`train_rl` only sequences them
around the trainer core's run, checkpoints and sampler refresh. The modules a step runs are one
:class:`StepModels`.

Old log-probabilities are the sampler's (temperature 1, the logits the policy had when it
sampled: equal to an HF forward within 1e-4 in fp32, tested in ``tests/test_rollout.py``);
``recompute_old_logprobs`` recomputes them with the policy before the updates (needed when
sampling is not at temperature 1 or not in fp32). Rewards must lie in [0, 1] when a critic is
trained: the critic is a :class:`~searchrl.models.value.ValueModel` with the scalar head, whose
values are a sigmoid.

Several processes (``accelerate launch``): every process samples the whole batch (the same
samples: seeds are per prompt) and takes every P-th micro-batch; the gradient is the sum over all
of them (DDP's mean times P) and the logged loss terms are summed over the processes, so two
processes train and log what one does (``tests/test_multiprocess.py``, within 1e-5).

Files: ``output_dir/checkpoints/step-N`` at iteration boundaries (every ``save_every``
iterations), ``metrics.jsonl`` (one line per iteration), and ``final/``: the policy (an HF
directory, what evaluation loads) with the critic in ``final/critic/``. A rerun resumes exactly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import SamplingParams
from ..rollout import rollout
from ..seeding import stable_seed
from .advantages import action_starts, get_adv_est, group_reward_std, newline_table, shift_values
from .batch import RolloutBatch
from .config import RLConfig
from . import fsdp
from .accel import make_accelerator
from .checkpoint import load_finished, load_weights
from .core import TrainRun
from .sft import cut_by_budget
from .policy_losses import Actions, aggregate, clipped_value_loss, get_policy_loss, kl_k3, token_logprobs_and_entropy

logger = logging.getLogger(__name__)

CRITIC_DIR = "critic"


# -----------------------------------------------------------------------------
# the model: an actor and, for PPO, its critic


class ActorCritic(nn.Module):
    """The policy and its critic as one module, so one :class:`TrainRun` trains both: ``forward``
    returns the policy's logits and the critic's raw head outputs; two optimizer parts (``lr``,
    ``critic_lr``); saved as the policy's HF directory with the critic in ``critic/``."""

    def __init__(self, policy: nn.Module, critic: nn.Module):
        super().__init__()
        self.policy, self.critic = policy, critic
        self.config = policy.config

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(input_ids=input_ids, use_cache=False).logits, self.critic(input_ids)

    def optimizer_parts(self, cfg) -> list[tuple[str, list, float]]:
        return [("actor", list(self.policy.parameters()), cfg.lr),
                ("critic", list(self.critic.parameters()), cfg.critic_lr)]

    def save_pretrained(self, directory, state_dict: dict | None = None, **kw) -> None:
        """The policy's HF directory with the critic's in ``critic/`` (``state_dict``: these weights,
        keyed ``policy.*`` / ``critic.*``, instead of the modules' own: a sharded model's gathered ones)."""
        parts = {"policy": None, "critic": None}
        if state_dict is not None:
            parts = {p: {k[len(p) + 1:]: v for k, v in state_dict.items() if k.startswith(p + ".")} for p in parts}
        self.policy.save_pretrained(directory, state_dict=parts["policy"], **kw)
        self.critic.save_pretrained(Path(directory) / CRITIC_DIR, state_dict=parts["critic"])

    def load_searchrl_weights(self, directory) -> None:
        load_weights(self.policy, directory)
        load_weights(self.critic, Path(directory) / CRITIC_DIR)


# -----------------------------------------------------------------------------
# seam 1: collect


def overlong_penalty(length: int, max_tokens: int, buffer: int, penalty: float) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025 eq. 13): 0 up to ``max_tokens - buffer``, then
    linearly down to ``-penalty`` at ``max_tokens`` (and below that beyond)."""
    if buffer <= 0:
        return 0.0
    expected = max_tokens - buffer
    if length <= expected:
        return 0.0
    return min((expected - length) / buffer, 0.0) * penalty


class PromptStream:
    """The split's problems in seeded passes: position ``j`` is ``perm(j // n)[j % n]``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def __getitem__(self, j: int) -> int:
        e = j // self.n
        if self._perm is None or self._perm[0] != e:
            self._perm = (e, np.random.default_rng([self.seed, e]).permutation(self.n))
        return int(self._perm[1][j % self.n])


def collect_rollouts(generator, task, problems: Sequence[dict], stream: PromptStream, cursor: int, cfg: RLConfig,
                     newline: np.ndarray | None, progress: Callable[[int], Any] | None = None,
                     prefixes: Sequence[str] | None = None) -> tuple[RolloutBatch, int, dict]:
    """One iteration's rollouts from stream position ``cursor``; returns the batch, the new cursor and
    sampling statistics (also the batch's ``stats``; see module docs: dynamic sampling, overlong
    punishment).

    ``prefixes[i]`` (ReST-GRPO's partial-solution prompts) starts every response to ``problems[i]``:
    the task grades prefix + completion, and the prefix's tokens join the prompt, so the loss and
    the actions cover the completion only."""
    want = cfg.prompts_per_step
    parts: list[RolloutBatch] = []
    kept_groups = sampled = rounds = 0
    stats: dict[str, Any] = {"reward_raw": [], "correct": [], "lengths": [], "group_std": [], "truncated": 0}
    while kept_groups < want and (rounds == 0 or (cfg.dynamic_sampling and rounds < cfg.max_sample_rounds)):
        rounds += 1
        positions = list(range(cursor, cursor + want))
        cursor += want
        probs = [problems[stream[j]] for j in positions]
        params = [SamplingParams(n=cfg.samples_per_prompt, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                 seed=stable_seed("rl", cfg.seed, j)) for j in positions]
        trajs = rollout(generator, task, probs, params, indices=positions, advance=progress,
                        prefixes=None if prefixes is None else [prefixes[stream[j]] for j in positions])
        for group in trajs:
            for t in group:  # a given prefix is prompt, not action (it has no logprobs)
                if t.prefix_len:
                    t.prompt_ids = list(t.prompt_ids) + list(t.response_ids[:t.prefix_len])
                    t.response_ids, t.prefix_len = list(t.response_ids[t.prefix_len:]), 0
        for j, group in zip(positions, trajs):
            sampled += 1
            rewards = [t.reward + overlong_penalty(len(t.response_ids), cfg.max_tokens, cfg.overlong_buffer,
                                                   cfg.overlong_penalty) for t in group]
            std = group_reward_std(rewards, [0] * len(rewards))[0]
            stats["group_std"].append(std)
            for t in group:
                stats["reward_raw"].append(t.reward)
                stats["correct"].append(t.correct)
                stats["lengths"].append(len(t.response_ids))
                stats["truncated"] += t.finish_reason == "length"
            if kept_groups >= want or (cfg.dynamic_sampling and std == 0.0):
                continue
            kept_groups += 1
            parts.append(RolloutBatch(
                prompt_ids=[list(t.prompt_ids) for t in group], response_ids=[list(t.response_ids) for t in group],
                logprobs=[list(t.logprobs) for t in group], rewards=rewards, correct=[t.correct for t in group],
                starts=[action_starts(t.response_ids, newline) if newline is not None
                        else np.ones(len(t.response_ids), dtype=bool) for t in group],
                groups=[j] * len(group), finish=[t.finish_reason for t in group]))
    batch = RolloutBatch.concat(parts)
    stats.update(rounds=rounds, sampled_prompts=sampled, kept_prompts=kept_groups)
    batch.stats = stats
    return batch, cursor, stats


# -----------------------------------------------------------------------------
# the modules of a step, and tensors of a micro-batch


@dataclass
class StepModels:
    """What the seams of an RL step run.

    ``model``: the module the optimizer steps (``run.model``: DDP- or FSDP-wrapped; an
    :class:`ActorCritic` when a critic is trained); ``actor`` and ``critic``: its unwrapped parts;
    ``reference``: the frozen initial policy (``kl_coef > 0``, else None); ``sampling``: the
    weights the batch was sampled with (the actor, or its whole copy when sharded); ``device``
    where tensors go; ``pad_id`` pads rows.
    """

    model: nn.Module
    actor: nn.Module
    critic: nn.Module | None
    reference: nn.Module | None
    sampling: nn.Module
    device: Any
    pad_id: int


@dataclass
class Micro:
    rows: list[int]
    weight: float = 1.0


@dataclass
class StepCounts:
    """Counts over a whole optimizer step (minibatch), the denominators of its means: every
    micro-batch's loss terms are divided by them, so accumulation is exact."""

    actions: int  # action starts (also the critic's terms)
    tokens: int  # response tokens (KL, entropy)
    responses: int  # sequences (seq-mean aggregation)


def _targets(ids: torch.Tensor, prompt_lens: torch.Tensor, T: int) -> torch.Tensor:
    """The response tokens of right-padded prompt + response rows, ``[b, T]`` (padding past each end)."""
    idx = prompt_lens.to(ids.device)[:, None] + torch.arange(T, device=ids.device)[None, :]
    return ids.gather(1, idx.clamp(max=ids.shape[1] - 1))


def _response_logits(logits: torch.Tensor, prompt_lens: torch.Tensor, T: int) -> torch.Tensor:
    """Logits predicting response token ``t``: sequence position ``P + t - 1``; ``[b, T, V]``."""
    idx = (prompt_lens.to(logits.device)[:, None] - 1 + torch.arange(T, device=logits.device)[None, :])
    idx = idx.clamp(0, logits.shape[1] - 1)
    return logits.gather(1, idx[:, :, None].expand(-1, -1, logits.shape[-1]))


# -----------------------------------------------------------------------------
# seam 2: prepare (values, old and reference logprobs, advantages)


def prepare(batch: RolloutBatch, models: StepModels, cfg: RLConfig) -> RolloutBatch:
    """Fill the batch's derived fields (no gradient, the weights the batch was sampled with): the
    critic's ``values`` (0 without a critic), the reference policy's ``ref_logprobs`` (0 without
    one), with ``cfg.recompute_old_logprobs`` the ``logprobs`` again from ``models.sampling`` at
    ``cfg.temperature``; then ``advantages`` and ``returns`` (:func:`compute_advantages`).
    Forward passes run in micro-batches of at most ``cfg.tokens_per_batch`` padded tokens.
    Returns the batch."""
    critic, n = models.critic, len(batch)
    if critic is not None and any(not 0.0 <= r <= 1.0 for r in batch.rewards):
        bad = next(r for r in batch.rewards if not 0.0 <= r <= 1.0)
        raise ValueError(f"a reward of {bad} is outside [0, 1], which the critic's sigmoid value head cannot "
                         f"fit; scale the task's reward (or the overlong penalty) into [0, 1], or train "
                         f"without a critic (grpo)")
    batch.values = [np.zeros(len(r), dtype=np.float32) for r in batch.response_ids]
    batch.ref_logprobs = [np.zeros(len(r), dtype=np.float32) for r in batch.response_ids]
    batch.advantages, batch.returns = list(batch.values), list(batch.values)
    if not n:
        return batch
    recompute = models.sampling if cfg.recompute_old_logprobs else None
    with torch.no_grad():
        for rows in cut_by_budget(range(n), batch.lengths(), cfg.tokens_per_batch):
            pad = batch.collate(rows, models.pad_id)
            ids, T = pad.ids.to(models.device), pad.T
            if critic is not None:
                v = shift_values(critic.to_values(critic(ids)), pad.prompt_lens, T).cpu().numpy()
                for i, r in enumerate(rows):
                    batch.values[r] = v[i, :len(batch.response_ids[r])]
            for frozen, dest in ((models.reference, batch.ref_logprobs), (recompute, batch.logprobs)):
                if frozen is None:
                    continue
                lg = _response_logits(frozen(input_ids=ids, use_cache=False).logits, pad.prompt_lens, T)
                lp = token_logprobs_and_entropy(lg / cfg.temperature, _targets(ids, pad.prompt_lens, T))[0]
                lp = lp.cpu().numpy()
                for i, r in enumerate(rows):
                    dest[r] = lp[i, :len(batch.response_ids[r])].tolist()
    return compute_advantages(batch, cfg)


def compute_advantages(batch: RolloutBatch, cfg: RLConfig) -> RolloutBatch:
    """``advantages`` and ``returns`` of every response from the estimator registered as
    ``cfg.adv_estimator``, over the whole batch at once (whitening and groups see every response),
    from its ``rewards``, ``values``, action ``starts`` and ``groups``. Returns the batch."""
    n = len(batch)
    if batch.values is None:
        batch.values = [np.zeros(len(r), dtype=np.float32) for r in batch.response_ids]
    if not n:
        batch.advantages, batch.returns = list(batch.values), list(batch.values)
        return batch
    pad = batch.collate(list(range(n)), 0, ("values",))
    adv, ret = get_adv_est(cfg.adv_estimator)(
        torch.tensor(batch.rewards, dtype=torch.float32), pad.extra["values"], pad.mask, pad.starts, gamma=cfg.gamma,
        lam=cfg.lam, whiten=cfg.whiten_advantages, groups=torch.tensor(batch.groups),
        std_normalize=cfg.grpo_std_normalize, cfg=cfg)
    batch.advantages = [adv[i, :len(batch.response_ids[i])].numpy() for i in range(n)]
    batch.returns = [ret[i, :len(batch.response_ids[i])].numpy() for i in range(n)]
    return batch


# -----------------------------------------------------------------------------
# seam 3: update

SUM_KEYS = ("pg_loss", "vf_loss", "clipped", "dual_clipped", "actions", "kl", "entropy", "tokens", "approx_kl",
            "vf_clipped", "starts")


@dataclass
class UpdateStats:
    """What an iteration's updates did: ``sums`` of the loss terms and their counts over every
    micro-batch (of all processes), the gradient norm of each optimizer step (one per parameter
    group: actor, critic) and the number of optimizer steps taken."""

    sums: dict[str, float]
    grad_norms: list[torch.Tensor]
    steps: int


def micro_loss(batch: RolloutBatch, mc: Micro, counts: StepCounts, models: StepModels, cfg: RLConfig,
               sums: dict[str, float], train_actor: bool = True) -> torch.Tensor:
    """The loss of micro-batch ``mc``: its share of the step's mean (module docs, step 4), times
    ``mc.weight`` (0 for a process's padding micro-batch). Adds its detached terms to ``sums``.

    Actor: the registered ``cfg.policy_loss`` (which reads its settings from ``cfg``), aggregated
    by ``cfg.loss_agg`` over the step's actions or responses; ``+ kl_coef * k3`` and ``-
    entropy_coef * entropy`` over the step's tokens; all times 0 while ``train_actor`` is False
    (critic warmup). Critic: the clipped value loss over the step's action starts."""
    device, critic = models.device, models.critic
    extra = ("advantages",) + (("returns", "values") if critic is not None else ()) + (
        ("ref_logprobs",) if cfg.kl_coef > 0 else ())
    pad = batch.collate(mc.rows, models.pad_id, extra)
    ids, mask, starts, old = (pad.ids.to(device), pad.mask.to(device), pad.starts.to(device),
                              pad.old_logprobs.to(device))
    ex = {k: v.to(device) for k, v in pad.extra.items()}
    plen, T = pad.prompt_lens, pad.T
    tgt = _targets(ids, plen, T)
    if critic is not None:
        logits, raw = models.model(ids)
    else:
        logits, raw = models.model(input_ids=ids, use_cache=False).logits, None
    lg = _response_logits(logits, plen, T) / cfg.temperature
    lp, ent = token_logprobs_and_entropy(lg, tgt, want_entropy=cfg.entropy_coef > 0)
    acts = Actions.of(mask, starts)
    out = get_policy_loss(cfg.policy_loss)(lp, old, ex["advantages"], acts, cfg)
    pg = aggregate(out.terms, acts.seq, cfg.loss_agg, counts.actions, counts.responses)
    loss = pg * float(train_actor)
    m = mask.float()
    if cfg.kl_coef > 0:
        kl = (kl_k3(lp, ex["ref_logprobs"]) * m).sum()
        loss = loss + cfg.kl_coef * kl / counts.tokens * float(train_actor)
        sums["kl"] += float(kl.detach()) * mc.weight
    if cfg.entropy_coef > 0:
        e = (ent * m).sum()
        loss = loss - cfg.entropy_coef * e / counts.tokens * float(train_actor)
        sums["entropy"] += float(e.detach()) * mc.weight
    if critic is not None:
        values = shift_values(critic.to_values(raw), plen, T)
        vf, vclip = clipped_value_loss(values, ex["values"], ex["returns"], starts, cfg.value_clip)
        loss = loss + vf / counts.actions
        sums["vf_loss"] += float(vf.detach()) * mc.weight
        sums["vf_clipped"] += float(vclip) * mc.weight
    w = mc.weight
    lr_ = out.log_ratio.detach()
    sums["pg_loss"] += float(out.terms.detach().sum()) * w
    sums["clipped"] += float(out.clipped.float().sum()) * w
    sums["dual_clipped"] += float(out.dual_clipped.float().sum()) * w
    sums["approx_kl"] += float((torch.exp(lr_) - 1 - lr_).sum()) * w
    sums["actions"] += acts.count * w
    sums["tokens"] += float(m.sum()) * w
    return loss if w == 1.0 else loss * w


def update(batch: RolloutBatch, run: TrainRun, models: StepModels, cfg: RLConfig, iteration: int) -> UpdateStats:
    """Iteration ``iteration``'s optimizer steps on a prepared batch: ``cfg.ppo_epochs`` passes, each a
    seeded shuffle cut into ``steps_per_iteration / ppo_epochs`` minibatches, one ``run.step``
    each over this process's micro-batches (every P-th, padded so every process takes as many);
    a minibatch with no rows only advances the schedule. The actor trains from iteration
    ``cfg.critic_warmup`` on. Sums over the processes are reduced before returning."""
    n = len(batch)
    n_mb = cfg.steps_per_iteration // cfg.ppo_epochs
    accelerator = run.accelerator
    P, rank = accelerator.num_processes, accelerator.process_index
    lengths = batch.lengths()
    sums = dict.fromkeys(SUM_KEYS, 0.0)
    gnorms: list[torch.Tensor] = []
    steps = 0
    train_actor = iteration >= cfg.critic_warmup
    for epoch in range(cfg.ppo_epochs):
        perm = np.random.default_rng([cfg.seed, iteration, epoch]).permutation(n) if n else np.zeros(0, int)
        for mb in np.array_split(perm, n_mb):
            mb = [int(r) for r in mb]
            steps += 1
            if not mb:  # nothing sampled that can teach (dynamic sampling found no signal)
                run.scheduler.step()
                continue
            counts = StepCounts(actions=sum(int(batch.starts[r].sum()) for r in mb),
                                tokens=sum(len(batch.response_ids[r]) for r in mb), responses=len(mb))
            groups = cut_by_budget(mb, lengths, cfg.tokens_per_batch)
            micro = [Micro(groups[m]) if m < len(groups) else Micro(groups[0], 0.0)
                     for m in range(rank, math.ceil(len(groups) / P) * P, P)]

            def loss_fn(mc: Micro, counts=counts) -> torch.Tensor:
                return micro_loss(batch, mc, counts, models, cfg, sums, train_actor)

            gnorms.append(run.step(micro, loss_fn, normaliser=1.0))  # terms are already means over the minibatch
    if P > 1:  # each process summed its own micro-batches' terms: the metrics are of all of them
        keys = sorted(sums)
        tot = accelerator.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=models.device),
                                 "sum")
        sums = dict(zip(keys, tot.tolist()))
    return UpdateStats(sums=sums, grad_norms=gnorms, steps=steps)


# -----------------------------------------------------------------------------
# seam 4: metrics


def rl_metrics(batch: RolloutBatch, upd: UpdateStats, cfg: RLConfig, *, lrs: Sequence[float],
               times: dict[str, float] | None = None) -> dict[str, Any]:
    """An iteration's metrics from its prepared batch (and its sampling ``stats``), the update's sums,
    the learning rates of the parameter groups (``lrs``: actor first, critic last) and the seconds
    of ``times`` (``generate_s``, ``prepare_s``, ``train_s``; omitted: no ``time/*`` keys)."""
    n, sstats, acc = len(batch), batch.stats, upd.sums
    gn = torch.stack([g.reshape(-1) for g in upd.grad_norms]).mean(0).tolist() if upd.grad_norms else [float("nan")]
    stds = sstats["group_std"]
    na = max(acc["actions"], 1)
    logs = {"reward/mean": float(np.mean(batch.rewards)) if n else float("nan"),
            "reward/task_mean": float(np.mean(sstats["reward_raw"])),
            "reward/correct": float(np.mean(sstats["correct"])),
            "response/length_mean": float(np.mean(sstats["lengths"])),
            "response/tokens": int(sum(len(r) for r in batch.response_ids)),  # trained on (kept groups)
            "response/truncated": sstats["truncated"] / max(len(sstats["lengths"]), 1),
            "response/actions_mean": float(np.mean([s.sum() for s in batch.starts])) if n else 0.0,
            "actor/pg_loss": acc["pg_loss"] / na,
            "actor/clip_frac": acc["clipped"] / na, "actor/dual_clip_frac": acc["dual_clipped"] / na,
            "actor/approx_kl": acc["approx_kl"] / na, "actor/grad_norm": gn[0], "charts/lr": lrs[0],
            "groups/sampled": sstats["sampled_prompts"], "groups/kept": sstats["kept_prompts"]}
    if times is not None:
        t_gen, t_prep, t_train = times["generate_s"], times["prepare_s"], times["train_s"]
        logs.update({"time/generate_s": round(t_gen, 3), "time/prepare_s": round(t_prep, 3),
                     "time/train_s": round(t_train, 3),
                     "time/samples_per_s": n / max(t_gen + t_prep + t_train, 1e-9)})
    if cfg.samples_per_prompt > 1:  # the reward std of each sampled group (GRPO's signal)
        logs.update({"groups/reward_std": stds, "groups/zero_std_frac": float(np.mean([s == 0 for s in stds]))})
    if cfg.uses_critic:
        ns = max(acc["actions"], 1)
        logs.update({"critic/vf_loss": acc["vf_loss"] / ns, "critic/vf_clip_frac": acc["vf_clipped"] / ns,
                     "critic/value_mean": float(np.mean(np.concatenate(
                         [v[s] for v, s in zip(batch.values, batch.starts)]))) if n else float("nan"),
                     "critic/grad_norm": gn[-1], "charts/critic_lr": lrs[-1]})
    if cfg.kl_coef > 0:
        logs["actor/kl_ref"] = acc["kl"] / max(acc["tokens"], 1)
    if cfg.entropy_coef > 0:
        logs["actor/entropy"] = acc["entropy"] / max(acc["tokens"], 1)
    return logs


# -----------------------------------------------------------------------------
# training: the seams in order


def train_rl(policy, tokenizer, task, problems: Sequence[dict], cfg: RLConfig, *, critic: nn.Module | None = None,
             make_generator: Callable[[nn.Module], Any] | None = None, callback: Callable[[int, dict], Any] | None = None,
             accelerator=None, progress: bool = True, prefixes: Sequence[str] | None = None) -> dict:
    """Train ``policy`` (in place) with ``cfg``'s algorithm on ``task``'s ``problems``.

    Args:
        policy: an HF causal LM (fp32); the initial policy, also the KL reference when ``kl_coef > 0``.
        tokenizer: its tokenizer (saved with the model; its newline tokens define the operations).
        critic: a scalar :class:`~searchrl.models.value.ValueModel` (needed when ``cfg.uses_critic``;
            initialise it from the same checkpoint, :meth:`ValueModel.from_policy` on a copy).
        make_generator: ``model -> Generator`` sampling from the live policy (default: our
            :class:`~searchrl.engine.Sampler`); after every update it gets ``update_weights(model)``.
        callback: ``callback(iteration, logs)`` after every iteration (and its checkpoint).
        prefixes: per problem, text every response starts with (ReST-GRPO's partial-solution
            prompts, ReST-RL eq. 3): graded with the completion, trained as prompt.

    Returns the summary (also stored in ``output_dir/final/train_state.json``); a finished run's
    stored summary with ``skipped=True``.
    """
    t_call = time.perf_counter()
    if cfg.uses_critic and critic is None:
        raise ValueError(f"adv_estimator={cfg.adv_estimator!r} trains a critic: pass critic=ValueModel(...)")
    if critic is not None and getattr(critic, "kind", "scalar") == "3class":
        raise ValueError("the critic needs a scalar value head")
    model = ActorCritic(policy, critic) if cfg.uses_critic else policy
    finished = load_finished(model, cfg.output_dir, "RL")
    if finished is not None:
        return {**finished, "wall_time_s": time.perf_counter() - t_call}
    if not problems:
        raise ValueError("no problems to sample")
    if make_generator is None:  # the default backend's generator (engine.backend=searchrl)
        from ..engine.factory import make_generator as make

        def make_generator(m):
            return make(None, m, tokenizer, cfg.batch_size)

    accelerator = make_accelerator(cfg, accelerator)
    P = accelerator.num_processes
    reference = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    newline = newline_table(tokenizer) if cfg.adv_estimator == "gae_action" else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    steps_per_it = cfg.steps_per_iteration
    total = cfg.iterations * steps_per_it
    if prefixes is not None and len(prefixes) != len(problems):
        raise ValueError(f"{len(prefixes)} prefixes for {len(problems)} problems")
    digest = hashlib.sha256(json.dumps([sorted(p.items()) for p in problems] + ([] if prefixes is None else
                                       [list(prefixes)]), default=str).encode()).hexdigest()
    run = TrainRun(model, cfg, accelerator, total_steps=total, tokenizer=tokenizer, name=cfg.adv_estimator,
                   trajectory={"problems_sha256": digest, "task": getattr(task, "name", str(task))})
    sampling_copy = copy.deepcopy(policy).requires_grad_(False) if cfg.fsdp else None
    state = run.state
    it0 = state.get("iteration", 0)
    cursor = state.get("cursor", 0)
    counters = {k: state.get(k, 0) for k in ("samples", "response_tokens")}
    stream = PromptStream(len(problems), cfg.seed)
    get_policy_loss(cfg.policy_loss)  # unknown names fail before anything is sampled
    get_adv_est(cfg.adv_estimator)
    device = accelerator.device
    last: dict = {}

    with run, run.progress_bar(f"{cfg.adv_estimator} ({cfg.policy_loss})", enabled=progress) as bar:
        unwrapped = run.unwrapped
        actor = unwrapped.policy if cfg.uses_critic else unwrapped
        if reference is not None:
            reference.to(device)
        # sharded (fsdp): sample from a plain whole copy, refreshed after every update (train/fsdp.py)
        sampling = actor
        if sampling_copy is not None:
            sampling = sampling_copy.to(device)
            fsdp.copy_weights(run.model, actor, sampling)  # the weights it resumed from
        models = StepModels(model=run.model, actor=actor, critic=unwrapped.critic if cfg.uses_critic else None,
                            reference=reference, sampling=sampling, device=device, pad_id=pad_id)
        generator = make_generator(sampling)
        step = run.start_step
        for it in range(it0, cfg.iterations):
            # ---- 1: collect
            t0 = time.perf_counter()
            sampling.eval()
            with torch.no_grad():
                batch, cursor, _ = collect_rollouts(generator, task, problems, stream, cursor, cfg, newline,
                                                    prefixes=prefixes)
            run.model.train()
            t_gen = time.perf_counter() - t0
            # ---- 2: prepare (values, old and reference logprobs, advantages)
            t1 = time.perf_counter()
            prepare(batch, models, cfg)
            t_prep = time.perf_counter() - t1
            # ---- 3: update, then the sampler samples the new weights
            t2 = time.perf_counter()
            upd = update(batch, run, models, cfg, it)
            step += upd.steps
            if upd.grad_norms:
                if sampling_copy is not None:
                    fsdp.copy_weights(run.model, actor, sampling_copy)
                # the live policy's new weights into the generator (vLLM: pushed into its running engine;
                # our sampler: re-read from the same module), never the checkpoint it started from
                generator.update_weights(sampling)
            t_train = time.perf_counter() - t2
            # ---- 4: metrics, checkpoint
            counters["samples"] += len(batch)
            counters["response_tokens"] += sum(len(r) for r in batch.response_ids)
            logs = {"step": step, "iteration": it + 1, "samples": counters["samples"],
                    **rl_metrics(batch, upd, cfg, lrs=run.scheduler.get_last_lr(),
                                 times={"generate_s": t_gen, "prepare_s": t_prep, "train_s": t_train})}
            last = logs
            if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iterations:
                run.log(logs)
            if run.main:
                bar.set_postfix(reward=f"{logs['reward/task_mean']:.3f}", kl=f"{logs['actor/approx_kl']:.2e}")
            bar.update(steps_per_it)
            if cfg.save_every > 0 and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iterations:
                run.save(step, {"iteration": it + 1, "cursor": cursor, **counters})
            if callback is not None:
                with run.clock.paused():
                    callback(it + 1, logs)

    summary = {"steps": total, "iterations": cfg.iterations, **counters, "final_reward": last.get("reward/task_mean"),
               "train_time_s": run.clock.elapsed(), "resumed_from_step": run.start_step, "num_processes": P,
               "algorithm": {"adv_estimator": cfg.adv_estimator, "policy_loss": cfg.policy_loss},
               "num_problems": len(problems), "config": asdict(cfg)}
    return run.finish(summary, started=t_call)


__all__ = ["train_rl", "ActorCritic", "RolloutBatch", "collect_rollouts", "prepare", "compute_advantages", "update",
           "micro_loss", "rl_metrics", "StepModels", "StepCounts", "UpdateStats", "overlong_penalty", "PromptStream",
           "CRITIC_DIR"]
