"""On-policy RL on the trainer core: PPO (operation- or token-level, with a critic), GRPO and DAPO.

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
2. **Rollouts** (:func:`searchrl.rollout.rollout`): ``samples_per_prompt`` responses per prompt
   from the sampler over the live policy, each with its own seed (a function of the stream
   position and the sample), graded by ``task.score``. A :class:`RolloutBatch` holds prompt ids,
   response ids, the sampler's per-token logprobs, rewards, the action-start mask and group ids.
   DAPO's soft overlong punishment is added to the reward; dynamic sampling drops groups whose
   rewards are all equal and samples more prompts (up to ``max_sample_rounds`` rounds).
3. **Advantages.** PPO: the critic's values of the batch (read at the token before each
   action's start), then GAE over actions (``gae_action``) or tokens (``gae``), whitened over
   action starts. GRPO/DAPO: group-normalised rewards.
4. **Updates.** ``ppo_epochs`` passes; each shuffles the batch (seeded by ``(seed, i, epoch)``)
   and cuts it into ``ceil(responses / minibatch_size)`` minibatches, one optimizer step each,
   computed in micro-batches of at most ``tokens_per_batch`` padded tokens. Each loss term is
   divided by its count over the whole minibatch (actions, responses or action starts), so
   accumulation is exact. The actor's loss is the policy loss (+ ``kl_coef`` * k3 KL to the
   initial policy, - ``entropy_coef`` * entropy, both token means); the critic's is the clipped
   value loss averaged over action starts. Actor and critic are one module with two parameter
   groups at their own learning rates (``lr``, ``critic_lr``), each clipped to ``grad_clip`` on
   its own, as two optimizers would.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import SamplingParams
from ..rollout import rollout
from ..seeding import stable_seed
from .advantages import action_starts, get_adv_est, group_reward_std, newline_table, shift_values
from .config import RLConfig
from . import fsdp
from .core import TrainRun, load_finished, load_weights, make_accelerator
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
# rollouts


@dataclass
class RolloutBatch:
    """One iteration's graded responses, as token ids (the one rollout format of every RL trainer)."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    logprobs: list[list[float]]  # the sampler's, one per response token
    rewards: list[float]  # task reward (+ overlong penalty)
    correct: list[bool]
    starts: list[np.ndarray]  # bool per response token: starts an action
    groups: list[int]  # stream position of the prompt (GRPO groups)
    finish: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.response_ids)

    def select(self, rows: Sequence[int]) -> RolloutBatch:
        return RolloutBatch(*([getattr(self, f)[i] for i in rows] for f in
                              ("prompt_ids", "response_ids", "logprobs", "rewards", "correct", "starts", "groups",
                               "finish")))


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
    sampling statistics (see module docs: dynamic sampling, overlong punishment).

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
    batch = RolloutBatch(*([x for p in parts for x in getattr(p, f)] for f in
                           ("prompt_ids", "response_ids", "logprobs", "rewards", "correct", "starts", "groups",
                            "finish")))
    stats.update(rounds=rounds, sampled_prompts=sampled, kept_prompts=kept_groups)
    return batch, cursor, stats


# -----------------------------------------------------------------------------
# tensors of a micro-batch


@dataclass
class Micro:
    rows: list[int]
    weight: float = 1.0


def _collate(batch: RolloutBatch, rows: Sequence[int], pad_id: int, extra: dict[str, list] | None = None):
    """Right-padded ``input_ids`` [b, L], prompt lengths [b], response mask / starts [b, T], the
    sampler's logprobs [b, T] and any per-token ``extra`` arrays [b, T]."""
    P = [len(batch.prompt_ids[r]) for r in rows]
    R = [len(batch.response_ids[r]) for r in rows]
    L, T = max(p + r for p, r in zip(P, R)), max(R)
    ids = np.full((len(rows), L), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=bool)
    starts = np.zeros((len(rows), T), dtype=bool)
    old = np.zeros((len(rows), T), dtype=np.float32)
    ext = {k: np.zeros((len(rows), T), dtype=np.float32) for k in (extra or {})}
    for i, r in enumerate(rows):
        seq = batch.prompt_ids[r] + batch.response_ids[r]
        ids[i, :len(seq)] = seq
        mask[i, :R[i]] = True
        starts[i, :R[i]] = batch.starts[r]
        old[i, :R[i]] = batch.logprobs[r]
        for k, v in (extra or {}).items():
            ext[k][i, :R[i]] = v[r]
    t = torch.from_numpy
    return (t(ids), torch.tensor(P, dtype=torch.long), t(mask), t(starts), t(old),
            {k: t(v) for k, v in ext.items()})


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
# training


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
            :class:`~searchrl.engine.Sampler`).
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
    if make_generator is None:
        from ..engine import Sampler

        def make_generator(m):
            return Sampler(m, tokenizer, max_batch_size=cfg.batch_size)

    accelerator = make_accelerator(cfg, accelerator)
    P = accelerator.num_processes
    reference = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    newline = newline_table(tokenizer) if cfg.adv_estimator == "gae_action" else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    steps_per_it = cfg.steps_per_iteration
    n_mb = steps_per_it // cfg.ppo_epochs
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
    loss_fn_pg = get_policy_loss(cfg.policy_loss)
    adv_fn = get_adv_est(cfg.adv_estimator)
    device = accelerator.device
    last: dict = {}

    with run, run.progress_bar(f"{cfg.adv_estimator} ({cfg.policy_loss})", enabled=progress) as bar:
        ddp = run.model
        unwrapped = run.unwrapped
        actor = unwrapped.policy if cfg.uses_critic else unwrapped
        critic_m = unwrapped.critic if cfg.uses_critic else None
        if reference is not None:
            reference.to(device)
        # sharded (fsdp): sample from a plain whole copy, refreshed after every update (train/fsdp.py)
        sampling = actor
        if sampling_copy is not None:
            sampling = sampling_copy.to(device)
            fsdp.copy_weights(ddp, actor, sampling)  # the weights it resumed from
        generator = make_generator(sampling)
        step = run.start_step
        for it in range(it0, cfg.iterations):
            t0 = time.perf_counter()
            # ---- 1-2: rollouts
            sampling.eval()
            with torch.no_grad():
                batch, cursor, sstats = collect_rollouts(generator, task, problems, stream, cursor, cfg, newline,
                                                         prefixes=prefixes)
            run.model.train()
            t_gen = time.perf_counter() - t0
            n = len(batch)
            if critic_m is not None and any(not 0.0 <= r <= 1.0 for r in batch.rewards):
                bad = next(r for r in batch.rewards if not 0.0 <= r <= 1.0)
                raise ValueError(f"a reward of {bad} is outside [0, 1], which the critic's sigmoid value head cannot "
                                 f"fit; scale the task's reward (or the overlong penalty) into [0, 1], or train "
                                 f"without a critic (grpo)")
            lengths = [len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)]

            # ---- 3: values, reference logprobs, advantages (no grad, the weights the batch was sampled with)
            t1 = time.perf_counter()
            old_values = [np.zeros(len(r), dtype=np.float32) for r in batch.response_ids]
            ref_lp = [np.zeros(len(r), dtype=np.float32) for r in batch.response_ids]
            advantages, returns = list(old_values), list(old_values)
            if n:
                with torch.no_grad():
                    for rows in cut_by_budget(range(n), lengths, cfg.tokens_per_batch):
                        ids, plen, mask, _, _, _ = _collate(batch, rows, pad_id)
                        ids, T = ids.to(device), mask.shape[1]
                        if critic_m is not None:
                            v = shift_values(critic_m.to_values(critic_m(ids)), plen, T).cpu().numpy()
                            for i, r in enumerate(rows):
                                old_values[r] = v[i, :len(batch.response_ids[r])]
                        for frozen, dest in ((reference, ref_lp), (sampling if cfg.recompute_old_logprobs else None,
                                                                    batch.logprobs)):
                            if frozen is None:
                                continue
                            lg = _response_logits(frozen(input_ids=ids, use_cache=False).logits, plen, T)
                            lp = token_logprobs_and_entropy(lg / cfg.temperature, _targets(ids, plen, T))[0]
                            lp = lp.cpu().numpy()
                            for i, r in enumerate(rows):
                                dest[r] = lp[i, :len(batch.response_ids[r])].tolist()
                # advantages over the whole batch (whitening and groups see every response)
                ids_all, plen_all, mask_all, starts_all, _, ext = _collate(
                    batch, list(range(n)), pad_id, {"values": old_values})
                adv, ret = adv_fn(torch.tensor(batch.rewards, dtype=torch.float32), ext["values"], mask_all,
                                  starts_all, gamma=cfg.gamma, lam=cfg.lam, whiten=cfg.whiten_advantages,
                                  groups=torch.tensor(batch.groups), std_normalize=cfg.grpo_std_normalize)
                advantages = [adv[i, :len(batch.response_ids[i])].numpy() for i in range(n)]
                returns = [ret[i, :len(batch.response_ids[i])].numpy() for i in range(n)]
            t_prep = time.perf_counter() - t1

            # ---- 4: updates
            t2 = time.perf_counter()
            acc = {k: 0.0 for k in ("pg_loss", "vf_loss", "clipped", "dual_clipped", "actions", "kl", "entropy",
                                    "tokens", "approx_kl", "vf_clipped", "starts")}
            gnorms: list[torch.Tensor] = []
            train_actor = it >= cfg.critic_warmup
            extra = {"adv": advantages, "ret": returns, "values": old_values, "ref": ref_lp}
            for epoch in range(cfg.ppo_epochs):
                perm = np.random.default_rng([cfg.seed, it, epoch]).permutation(n) if n else np.zeros(0, int)
                for mb in np.array_split(perm, n_mb):
                    mb = [int(r) for r in mb]
                    if not mb:  # nothing sampled that can teach (dynamic sampling found no signal)
                        run.scheduler.step()
                        step += 1
                        continue
                    n_act = sum(int(batch.starts[r].sum()) for r in mb)
                    n_tok = sum(len(batch.response_ids[r]) for r in mb)
                    groups = cut_by_budget(mb, lengths, cfg.tokens_per_batch)
                    rank = accelerator.process_index
                    micro = [Micro(groups[m]) if m < len(groups) else Micro(groups[0], 0.0)
                             for m in range(rank, math.ceil(len(groups) / P) * P, P)]

                    def loss_fn(mc: Micro) -> torch.Tensor:
                        ids, plen, mask, starts, old, ex = _collate(batch, mc.rows, pad_id, extra)
                        ids, mask, starts, old = ids.to(device), mask.to(device), starts.to(device), old.to(device)
                        ex = {k: v.to(device) for k, v in ex.items()}
                        T = mask.shape[1]
                        tgt = _targets(ids, plen, T)
                        if critic_m is not None:
                            logits, raw = ddp(ids)
                        else:
                            logits, raw = ddp(input_ids=ids, use_cache=False).logits, None
                        lg = _response_logits(logits, plen, T) / cfg.temperature
                        lp, ent = token_logprobs_and_entropy(lg, tgt, want_entropy=cfg.entropy_coef > 0)
                        acts = Actions.of(mask, starts)
                        out = loss_fn_pg(lp, old, ex["adv"], acts, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                         dual_clip=cfg.dual_clip, log_ratio_clamp=cfg.log_ratio_clamp)
                        pg = aggregate(out.terms, acts.seq, cfg.loss_agg, n_act, len(mb))
                        loss = pg * float(train_actor)
                        m = mask.float()
                        if cfg.kl_coef > 0:
                            kl = (kl_k3(lp, ex["ref"]) * m).sum()
                            loss = loss + cfg.kl_coef * kl / n_tok * float(train_actor)
                            acc["kl"] += float(kl.detach()) * mc.weight
                        if cfg.entropy_coef > 0:
                            e = (ent * m).sum()
                            loss = loss - cfg.entropy_coef * e / n_tok * float(train_actor)
                            acc["entropy"] += float(e.detach()) * mc.weight
                        if critic_m is not None:
                            values = shift_values(critic_m.to_values(raw), plen, T)
                            vf, vclip = clipped_value_loss(values, ex["values"], ex["ret"], starts, cfg.value_clip)
                            loss = loss + vf / n_act
                            acc["vf_loss"] += float(vf.detach()) * mc.weight
                            acc["vf_clipped"] += float(vclip) * mc.weight
                        w = mc.weight
                        lr_ = out.log_ratio.detach()
                        acc["pg_loss"] += float(out.terms.detach().sum()) * w
                        acc["clipped"] += float(out.clipped.float().sum()) * w
                        acc["dual_clipped"] += float(out.dual_clipped.float().sum()) * w
                        acc["approx_kl"] += float((torch.exp(lr_) - 1 - lr_).sum()) * w
                        acc["actions"] += acts.count * w
                        acc["tokens"] += float(m.sum()) * w
                        return loss if w == 1.0 else loss * w

                    gnorms.append(run.step(micro, loss_fn, normaliser=1.0))  # terms are already means over the minibatch
                    step += 1
            if gnorms:
                if sampling_copy is not None:
                    fsdp.copy_weights(ddp, actor, sampling_copy)
                generator.update_weights()  # the next rollouts sample the new weights
            if P > 1:  # each process summed its own micro-batches' terms: the metrics are of all of them
                keys = sorted(acc)
                tot = accelerator.reduce(torch.tensor([acc[k] for k in keys], dtype=torch.float64, device=device),
                                         "sum")
                acc = dict(zip(keys, tot.tolist()))
            t_train = time.perf_counter() - t2

            # ---- metrics, checkpoint
            counters["samples"] += n
            counters["response_tokens"] += sum(len(r) for r in batch.response_ids)
            gn = torch.stack([g.reshape(-1) for g in gnorms]).mean(0).tolist() if gnorms else [float("nan")]
            stds = sstats["group_std"]
            na = max(acc["actions"], 1)
            logs = {"step": step, "iteration": it + 1, "samples": counters["samples"],
                    "reward/mean": float(np.mean(batch.rewards)) if n else float("nan"),
                    "reward/task_mean": float(np.mean(sstats["reward_raw"])),
                    "reward/correct": float(np.mean(sstats["correct"])),
                    "response/length_mean": float(np.mean(sstats["lengths"])),
                    "response/tokens": int(sum(len(r) for r in batch.response_ids)),  # trained on (kept groups)
                    "response/truncated": sstats["truncated"] / max(len(sstats["lengths"]), 1),
                    "response/actions_mean": float(np.mean([s.sum() for s in batch.starts])) if n else 0.0,
                    "actor/pg_loss": acc["pg_loss"] / na,
                    "actor/clip_frac": acc["clipped"] / na, "actor/dual_clip_frac": acc["dual_clipped"] / na,
                    "actor/approx_kl": acc["approx_kl"] / na, "actor/grad_norm": gn[0], "charts/lr": run.lr,
                    "groups/sampled": sstats["sampled_prompts"], "groups/kept": sstats["kept_prompts"],
                    "time/generate_s": round(t_gen, 3), "time/prepare_s": round(t_prep, 3),
                    "time/train_s": round(t_train, 3), "time/samples_per_s": n / max(t_gen + t_prep + t_train, 1e-9)}
            if cfg.samples_per_prompt > 1:  # the reward std of each sampled group (GRPO's signal)
                logs.update({"groups/reward_std": stds,
                             "groups/zero_std_frac": float(np.mean([s == 0 for s in stds]))})
            if critic_m is not None:
                ns = max(acc["actions"], 1)
                logs.update({"critic/vf_loss": acc["vf_loss"] / ns, "critic/vf_clip_frac": acc["vf_clipped"] / ns,
                             "critic/value_mean": float(np.mean(np.concatenate(
                                 [v[s] for v, s in zip(old_values, batch.starts)]))) if n else float("nan"),
                             "critic/grad_norm": gn[-1], "charts/critic_lr": run.scheduler.get_last_lr()[-1]})
            if cfg.kl_coef > 0:
                logs["actor/kl_ref"] = acc["kl"] / max(acc["tokens"], 1)
            if cfg.entropy_coef > 0:
                logs["actor/entropy"] = acc["entropy"] / max(acc["tokens"], 1)
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


__all__ = ["train_rl", "ActorCritic", "RolloutBatch", "collect_rollouts", "overlong_penalty", "PromptStream",
           "CRITIC_DIR"]
