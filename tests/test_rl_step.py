"""The RL step's seams, each alone: collect -> prepare (values, old and reference logprobs, advantages)
-> update -> metrics, each a function over one RolloutBatch (searchrl.train.rl), and the batch itself."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from searchrl.tasks import Score
from searchrl.tasks.countdown import build_countdown_tokenizer
from searchrl.train import policy_losses as pl
from searchrl.train.advantages import get_adv_est, newline_table
from searchrl.train.batch import RolloutBatch
from searchrl.train.config import RLConfig
from searchrl.train.policy_losses import Actions, PolicyLossOut, loss_settings, ppo_clip_loss
from searchrl.train.rl import (PromptStream, StepModels, UpdateStats, collect_rollouts, compute_advantages, prepare,
                               rl_metrics, update)


@pytest.fixture(scope="module")
def tok():
    return build_countdown_tokenizer()


def _batch(rewards=(1.0, 0.0, 0.5, 0.5), groups=(0, 0, 1, 1)):
    """Four responses to two prompts; actions start at the tokens after a newline (id 39)."""
    prompts = [[1, 18], [1, 18], [1, 19, 20], [1, 19, 20]]
    responses = [[18, 39, 18], [17], [18, 39, 17, 39], [20, 21]]
    nl = np.zeros(113, dtype=bool)
    nl[39] = True
    from searchrl.train.advantages import action_starts

    return RolloutBatch(prompt_ids=prompts, response_ids=responses,
                        logprobs=[[-0.5] * len(r) for r in responses], rewards=list(rewards),
                        correct=[r == 1.0 for r in rewards], starts=[action_starts(r, nl) for r in responses],
                        groups=list(groups), finish=["stop"] * 4)


# ----------------------------------------------------------------------------- the batch


def test_batch_collate_select_concat():
    b = _batch()
    pad = b.collate([0, 1], pad_id=0)
    assert pad.ids.tolist() == [[1, 18, 18, 39, 18], [1, 18, 17, 0, 0]]
    assert pad.prompt_lens.tolist() == [2, 2] and pad.T == 3
    assert pad.mask.tolist() == [[True, True, True], [True, False, False]]
    assert pad.starts.tolist() == [[True, False, True], [True, False, False]]
    assert pad.old_logprobs.tolist() == [[-0.5] * 3, [-0.5, 0.0, 0.0]]
    assert b.lengths() == [5, 3, 7, 5]
    b.advantages = [np.full(len(r), float(i), dtype=np.float32) for i, r in enumerate(b.response_ids)]
    assert b.collate([1, 0], 0, ("advantages",)).extra["advantages"].tolist() == [[1, 0, 0], [0, 0, 0]]
    s = b.select([2, 0])
    assert s.response_ids == [b.response_ids[2], b.response_ids[0]] and s.groups == [1, 0]
    assert [a[0] for a in s.advantages] == [2.0, 0.0] and s.values is None
    both = RolloutBatch.concat([b.select([0]), b.select([3])])
    assert len(both) == 2 and both.rewards == [1.0, 0.5] and both.finish == ["stop", "stop"]


# ----------------------------------------------------------------------------- collect


class _Task:
    """Reward = the problem's reward for the sample the response names (its first character)."""

    name = "toy"

    def prompt(self, problem):
        return str(problem["id"])

    def score(self, problems, responses):
        return [Score(reward=p["rewards"][int(r[0])], correct=p["rewards"][int(r[0])] == 1.0)
                for p, r in zip(problems, responses)]


class _Generator:
    """Sample k of every prompt is the text "k\\nk" (3 tokens), with logprob -1 per token."""

    def __init__(self, tok):
        self.tokenizer = tok

    def generate(self, inputs, params, progress=None):
        outs = []
        for p in params:
            comps = []
            for k in range(p.n):
                ids = self.tokenizer(f"{k}\n{k}", add_special_tokens=False)["input_ids"]
                comps.append(SimpleNamespace(index=k, text=f"{k}\n{k}", token_ids=ids, logprobs=[-1.0] * len(ids),
                                             finish_reason="stop"))
            outs.append(SimpleNamespace(outputs=comps))
        return outs


def test_collect_drops_groups_without_signal_and_penalises_overlong(tok):
    problems = [{"id": 0, "rewards": [1.0, 1.0]}, {"id": 1, "rewards": [1.0, 0.0]},
                {"id": 2, "rewards": [0.0, 0.0]}, {"id": 3, "rewards": [0.0, 1.0]}]
    cfg = RLConfig(output_dir="x", adv_estimator="grpo", samples_per_prompt=2, prompts_per_step=2, max_tokens=4,
                   dynamic_sampling=True, max_sample_rounds=2, overlong_buffer=2, overlong_penalty=1.0)
    stream = PromptStream(len(problems), 0)
    batch, cursor, stats = collect_rollouts(_Generator(tok), _Task(), problems, stream, 0, cfg, newline_table(tok))
    assert batch.stats is stats and stats["rounds"] == 2 and cursor == 4 and stats["sampled_prompts"] == 4
    kept = [problems[stream[j]]["id"] for j in sorted(set(batch.groups))]
    assert sorted(kept) == [1, 3] and stats["kept_prompts"] == 2  # all-equal groups dropped
    assert len(stats["group_std"]) == 4 and sorted(stats["group_std"])[:2] == [0.0, 0.0]
    # 3 tokens with a budget of 4 and a buffer of 2: (2 - 3) / 2 = -0.5 added to the task reward
    assert sorted(batch.rewards) == [-0.5, -0.5, 0.5, 0.5] and sorted(stats["reward_raw"]).count(1.0) == 4
    for r, s, lp in zip(batch.response_ids, batch.starts, batch.logprobs):
        assert s.tolist() == [True, False, True] and lp == [-1.0] * 3 and len(r) == 3


# ----------------------------------------------------------------------------- prepare


def test_compute_advantages_are_the_registered_estimators():
    b = _batch()
    cfg = RLConfig(output_dir="x", adv_estimator="grpo", samples_per_prompt=2)
    compute_advantages(b, cfg)
    pad = b.collate(range(4), 0)
    want, _ = get_adv_est("grpo")(torch.tensor(b.rewards), None, pad.mask, pad.starts, groups=torch.tensor(b.groups))
    for i, a in enumerate(b.advantages):
        assert a.tolist() == want[i, :len(a)].tolist()
    s = 1 / math.sqrt(0.5)  # group 0: rewards 1, 0 -> +-0.5 / std; group 1: equal rewards -> 0
    assert b.advantages[0].tolist() == pytest.approx([0.5 * s] * 3, rel=1e-5) and b.advantages[2].tolist() == [0] * 4
    # GAE over actions with gamma = lambda = 1: A = R - V at each action start, returns A + V = R
    b = _batch()
    b.values = [np.full(len(r), 0.25, dtype=np.float32) for r in b.response_ids]
    compute_advantages(b, RLConfig(output_dir="x", whiten_advantages=False))
    assert b.advantages[0].tolist() == [0.75, 0.0, 0.75] and b.returns[0].tolist() == [1.0, 0.0, 1.0]
    assert b.advantages[1].tolist() == [-0.25]


class _Critic(nn.Module):
    """Raw head output = the token id; value = id / 100."""

    def forward(self, ids):
        return ids.float()

    def to_values(self, raw):
        return raw / 100


class _Uniform(nn.Module):
    """A policy whose every next-token distribution is uniform over ``V`` tokens."""

    def __init__(self, V=64):
        super().__init__()
        self.V = V

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.V))


def test_prepare_reads_values_before_each_token_reference_and_recomputed_logprobs():
    b = _batch()
    cfg = RLConfig(output_dir="x", kl_coef=0.1, recompute_old_logprobs=True, whiten_advantages=False,
                   tokens_per_batch=8)  # several forward micro-batches
    models = StepModels(model=None, actor=None, critic=_Critic(), reference=_Uniform(), sampling=_Uniform(),
                        device=torch.device("cpu"), pad_id=0)
    assert prepare(b, models, cfg) is b
    # response token t's value is read at sequence position P + t - 1: the token before it
    assert b.values[0].tolist() == pytest.approx([0.18, 0.18, 0.39])
    assert b.values[2].tolist() == pytest.approx([0.20, 0.18, 0.39, 0.17])
    for r, ref, old in zip(b.response_ids, b.ref_logprobs, b.logprobs):
        assert ref == pytest.approx([-math.log(64)] * len(r)) and old == pytest.approx([-math.log(64)] * len(r))
    # the advantages are the estimator's on these values: A = R - V at the starts
    assert b.advantages[0].tolist() == pytest.approx([1 - 0.18, 0.0, 1 - 0.39])
    with pytest.raises(ValueError, match="reward of 2.0 is outside"):
        prepare(_batch(rewards=(2.0, 0.0, 0.5, 0.5)), models, cfg)


# ----------------------------------------------------------------------------- update


def test_loss_settings_come_from_the_config_then_keywords():
    cfg = RLConfig(output_dir="x", clip_low=0.1, dual_clip=None)
    assert loss_settings(cfg, {}, clip_low=0.2, dual_clip=3.0, mine=7) == {"clip_low": 0.1, "dual_clip": None,
                                                                            "mine": 7}
    assert loss_settings(cfg, {"clip_low": 0.3}, clip_low=0.2)["clip_low"] == 0.3
    with pytest.raises(TypeError, match="unknown policy-loss setting"):
        loss_settings(cfg, {"clip_lo": 0.3}, clip_low=0.2)
    # a registered loss given the config reads its settings there: the same as passing them by hand
    mask = torch.ones(1, 3, dtype=torch.bool)
    acts = Actions.of(mask, mask)
    lp, adv = torch.log(torch.tensor([[1.5, 0.5, 5.0]])), torch.tensor([[1.0, 1.0, -1.0]])
    a = ppo_clip_loss(lp, torch.zeros(1, 3), adv, acts, cfg)
    b = ppo_clip_loss(lp, torch.zeros(1, 3), adv, acts, clip_low=0.1, dual_clip=None)
    assert a.terms.tolist() == b.terms.tolist() == pytest.approx([-1.1, -0.5, 5.0])


def _seq_logprob(model, prompt, response):
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logp[len(prompt) + t - 1, tok_id] for t, tok_id in enumerate(response)))


def test_update_with_a_registered_toy_loss_moves_the_policy_toward_the_advantage(tok, tmp_path, monkeypatch):
    from searchrl.models import load_policy
    from searchrl.train.accel import make_accelerator
    from searchrl.train.core import TrainRun

    seen = []

    def toy_pg(logprobs, old_logprobs, advantages, actions, cfg=None, **settings):
        """REINFORCE on actions: -A * log pi(action), scaled by a setting it reads from the config."""
        s = loss_settings(cfg, settings, toy_scale=1.0)
        seen.append((cfg, s["toy_scale"]))
        terms = -advantages.float()[actions.starts] * actions.sum_tokens(logprobs) * s["toy_scale"]
        no = torch.zeros_like(terms, dtype=torch.bool)
        return PolicyLossOut(terms=terms, log_ratio=actions.sum_tokens(logprobs - old_logprobs).detach(),
                             clipped=no, dual_clipped=no)

    monkeypatch.setitem(pl._POLICY_LOSSES._fns, "toy_pg", toy_pg)  # registered for this test only
    model, _ = load_policy("micro", tok, max_seq_len=64, seed=0)
    cfg = RLConfig(output_dir=str(tmp_path / "run"), adv_estimator="grpo", samples_per_prompt=2, prompts_per_step=1,
                   minibatch_size=2, lr=1e-2, save_every=0)
    # a new loss is a registered name and its settings are config attributes (config.py lists the
    # names; this toy is set after validation), nothing passed through the trainer
    cfg.policy_loss, cfg.toy_scale = "toy_pg", 2.0
    b = _batch().select([0, 1])  # one group: rewards 1 (response A) and 0 (response B)
    compute_advantages(b, cfg)
    before = [_seq_logprob(model, p, r) for p, r in zip(b.prompt_ids, b.response_ids)]
    run = TrainRun(model, cfg, make_accelerator(cfg), total_steps=cfg.steps_per_iteration)
    with run:
        models = StepModels(model=run.model, actor=run.unwrapped, critic=None, reference=None,
                            sampling=run.unwrapped, device=torch.device("cpu"), pad_id=0)
        upd = update(b, run, models, cfg, iteration=0)
    assert isinstance(upd, UpdateStats) and upd.steps == 1 and len(upd.grad_norms) == 1
    assert seen and all(c is cfg and scale == 2.0 for c, scale in seen)
    assert upd.sums["actions"] == 3 and upd.sums["tokens"] == 4  # response A: 2 actions, B: 1
    after = [_seq_logprob(model, p, r) for p, r in zip(b.prompt_ids, b.response_ids)]
    # the positive-advantage response became likelier relative to the negative one
    assert after[0] - after[1] > before[0] - before[1] + 1e-3, (before, after)


# ----------------------------------------------------------------------------- metrics


def test_metrics_keys_follow_the_algorithm():
    b = _batch()
    b.stats = {"reward_raw": [1.0, 0.0, 0.5, 0.5], "correct": [True, False, False, False], "lengths": [3, 1, 4, 2],
               "group_std": [0.7, 0.0], "truncated": 1, "rounds": 1, "sampled_prompts": 2, "kept_prompts": 2}
    b.values = [np.full(len(r), 0.5, dtype=np.float32) for r in b.response_ids]
    sums = dict.fromkeys(("pg_loss", "vf_loss", "clipped", "dual_clipped", "kl", "entropy", "approx_kl",
                          "vf_clipped", "starts"), 1.0)
    sums.update(actions=4.0, tokens=10.0)
    upd = UpdateStats(sums=sums, grad_norms=[torch.tensor([0.5, 0.25])], steps=1)
    grpo = rl_metrics(b, upd, RLConfig(output_dir="x", adv_estimator="grpo", samples_per_prompt=2), lrs=[0.1])
    assert set(grpo) == {"reward/mean", "reward/task_mean", "reward/correct", "response/length_mean",
                         "response/tokens", "response/truncated", "response/actions_mean", "actor/pg_loss",
                         "actor/clip_frac", "actor/dual_clip_frac", "actor/approx_kl", "actor/grad_norm",
                         "charts/lr", "groups/sampled", "groups/kept", "groups/reward_std", "groups/zero_std_frac"}
    assert grpo["actor/pg_loss"] == 0.25 and grpo["response/truncated"] == 0.25 and grpo["groups/zero_std_frac"] == 0.5
    assert grpo["response/tokens"] == 10 and grpo["actor/grad_norm"] == 0.5
    ppo = rl_metrics(b, upd, RLConfig(output_dir="x", kl_coef=0.1, entropy_coef=0.01), lrs=[0.1, 0.2],
                     times={"generate_s": 1.0, "prepare_s": 0.5, "train_s": 0.5})
    assert {"critic/vf_loss", "critic/vf_clip_frac", "critic/value_mean", "critic/grad_norm", "charts/critic_lr",
            "actor/kl_ref", "actor/entropy", "time/generate_s", "time/samples_per_s"} <= set(ppo)
    assert "groups/reward_std" not in ppo and ppo["charts/critic_lr"] == 0.2 and ppo["critic/grad_norm"] == 0.25
    assert ppo["time/samples_per_s"] == 2.0 and ppo["actor/kl_ref"] == 0.1
