"""ReST-GRPO (ReST-RL Algorithm 1, eq. 3): partial states, the filter and assembly, prefix prompts in
the RL loop, and the resumable outer loop."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from searchrl.config import RestGRPOConfig
from searchrl.models.policy import load_policy
from searchrl.selftrain import Context
from searchrl.selftrain.rest_grpo import assemble, partial_states, preference_pairs, reward_std_by_step, run_rest_grpo
from searchrl.tasks import Score
from searchrl.tasks.countdown import CountdownConfig, CountdownTask
from searchrl.train.config import RLConfig
from searchrl.train.rl import PromptStream, collect_rollouts


def test_partial_states_follow_eq3():
    response = "a\nb\nc\nd"  # |A| = 4 actions
    rng = random.Random(0)
    draws = partial_states(response, 40000, 0.5, rng)
    assert all(s.endswith("\n") for s in draws)
    counts = Counter(s.count("\n") for s in draws)
    assert set(counts) == {1, 2, 3, 4}  # the whole solution can be drawn
    z = sum(0.5 ** (j - 1) for j in range(1, 5))
    for j in range(1, 5):
        assert counts[j] / 40000 == pytest.approx(0.5 ** (j - 1) / z, abs=0.01)
    assert partial_states("a\nb\n", 3, 1.0, rng) and all(s in ("a\n", "a\nb\n") for s in
                                                        partial_states("a\nb\n", 50, 1.0, rng))
    assert partial_states("", 3, 0.9, rng) == []


def test_assemble_filters_by_std_and_adds_states_of_good_solutions():
    cfg = RestGRPOConfig(sigma0=0.05, r0=0.9, beta=0.5, alpha=0.95)
    best = "l1\nl2\nl3\nl4\nl5"  # 5 actions: ceil(0.5 * 5) = 3 states
    groups = [
        [{"response": "x", "reward": 1.0}] * 4,  # all equal: dropped
        [{"response": "x", "reward": 0.0}, {"response": best, "reward": 1.0}],  # kept, best >= r0: + 3 states
        [{"response": "x", "reward": 0.0}, {"response": "y", "reward": 0.5}],  # kept, best < r0: bare only
        [{"response": "x", "reward": 0.5}, {"response": "y", "reward": 0.54}],  # std 0.02 < sigma0: dropped
    ]
    prompts, stats = assemble(groups, cfg, seed=0)
    assert [p["problem"] for p in prompts] == [1, 1, 1, 1, 2]
    assert [p["prefix"] for p in prompts if p["problem"] == 2] == [""]
    states = [p["prefix"] for p in prompts if p["problem"] == 1 and p["prefix"]]
    assert len(states) == math.ceil(0.5 * 5) and all(best.startswith(s[:-1]) and s.endswith("\n") for s in states)
    assert stats["kept"] == 2 and stats["with_partial_states"] == 1 and stats["prompts"] == 5
    assert stats["below_sigma0"] == 0.5
    assert assemble(groups, cfg, seed=0) == (prompts, stats)  # seeded


def test_preference_pairs_best_against_worst():
    groups = [[{"response": "a", "reward": 0.5}, {"response": "b", "reward": 1.0}, {"response": "c", "reward": 0.0},
               {"response": "d", "reward": 1.0}],
              [{"response": "e", "reward": 0.3}] * 3]
    assert preference_pairs(groups) == [{"problem": 0, "chosen": "b", "rejected": "c"}]


class StartsWithDigit(CountdownTask):
    """Reward 1 when the response (prefix included) starts with a digit."""

    def score(self, problems, responses):
        return [Score(reward=float(r[:1].isdigit()), correct=r[:1].isdigit()) for r in responses]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    t = StartsWithDigit(CountdownConfig(n_train=12, n_selftrain=24, n_valid=3, n_valid_unseen=2, n_test=3,
                                        max_target=30, workers=1), tmp_path_factory.mktemp("cd"))
    t.prepare(progress=False)
    return t


def test_a_prefix_is_graded_with_the_completion_and_trained_as_prompt(task):
    from searchrl.engine import Sampler
    from searchrl.train.advantages import newline_table

    model, tok = load_policy("micro", task.tokenizer(), max_seq_len=512, seed=0)
    problems = task.problems("selftrain")[:2]
    cfg = RLConfig(output_dir="x", adv_estimator="grpo", samples_per_prompt=3, prompts_per_step=2, max_tokens=5,
                   dual_clip=None)
    batch, _, _ = collect_rollouts(Sampler(model, tok, max_batch_size=8), task, problems, PromptStream(2, 0), 0, cfg,
                                   newline_table(tok), prefixes=["7\n", ""])
    prefix_ids = tok("7\n", add_special_tokens=False)["input_ids"]
    for prompt, response, logprobs, starts in zip(batch.prompt_ids, batch.response_ids, batch.logprobs, batch.starts):
        assert len(response) == len(logprobs) == len(starts) and starts[0]
    stream = PromptStream(2, 0)
    rows = {stream[0]: batch.rewards[:3], stream[1]: batch.rewards[3:]}
    assert rows[0] == [1.0, 1.0, 1.0]  # "7\n..." always starts with a digit
    with_prefix = [p for p, g in zip(batch.prompt_ids, batch.groups) if stream[g] == 0]
    assert all(p[-len(prefix_ids):] == prefix_ids for p in with_prefix)


def test_rest_grpo_loop_runs_resumes_and_logs_reward_std(task, tmp_path):
    def load(path):
        return load_policy(str(path), task.tokenizer(), max_seq_len=512, seed=0)

    from searchrl.engine import Sampler

    def make_gen(model, tok, batch_size):
        return Sampler(model, tok, max_batch_size=batch_size)

    ctx = Context(task, load, make_gen, progress=False)

    model, tok = load_policy("micro", task.tokenizer(), max_seq_len=512, seed=0)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    grpo = RLConfig(output_dir="", adv_estimator="grpo", samples_per_prompt=4, prompts_per_step=4, max_tokens=4,
                    minibatch_size=16, iterations=3, lr=2e-2, loss_agg="seq-mean-action-mean", dual_clip=None,
                    save_every=0, batch_size=16)
    cfg = RestGRPOConfig(iterations=2, samples=4, r0=0.9, sigma0=0.05)
    problems = task.problems("selftrain")[:12]
    final = run_rest_grpo(ctx, cfg=cfg, grpo_cfg=grpo, problems=problems,
                  method_dir=tmp_path / "rg", policy=tmp_path / "base")
    assert final == tmp_path / "rg" / "iter2" / "grpo" / "final" and (final / "config.json").exists()
    from searchrl.data import read_json, read_jsonl

    stats = read_json(tmp_path / "rg" / "iter1" / "assembly.json")
    prompts = read_jsonl(tmp_path / "rg" / "iter1" / "prompts.jsonl")
    assert stats["prompts"] == len(prompts) and stats["kept"] <= 12
    assert len(stats["reward_std"]) == 12
    steps = reward_std_by_step(tmp_path / "rg")
    # each iteration trains on all of its assembled prompts: ceil(|P_Q+| / 4) GRPO iterations (Algorithm 1 line 19)
    passes = [-(-len(read_jsonl(tmp_path / "rg" / f"iter{i}" / "prompts.jsonl")) // 4) for i in (1, 2)]
    assert [s for s, _ in steps] == sorted(s for s, _ in steps) and len(steps) == sum(passes) > 0
    # the same call again is done; other settings into the same directory are refused
    mtime = (final / "model.safetensors").stat().st_mtime_ns
    assert run_rest_grpo(ctx, cfg=cfg, grpo_cfg=grpo, problems=problems,
                  method_dir=tmp_path / "rg", policy=tmp_path / "base") == final
    assert (final / "model.safetensors").stat().st_mtime_ns == mtime
    from searchrl.rundir import RunDirError

    with pytest.raises(RunDirError, match="sigma0"):
        run_rest_grpo(ctx, cfg=replace(cfg, sigma0=0.1), grpo_cfg=grpo, problems=problems,
                  method_dir=tmp_path / "rg", policy=tmp_path / "base")
    # plain GRPO on the same loop: every question, no sampling stage
    final_g = run_rest_grpo(ctx, cfg=replace(cfg, method="grpo"), grpo_cfg=grpo, problems=problems,
                  method_dir=tmp_path / "g", policy=tmp_path / "base")
    assert (final_g / "config.json").exists() and not (tmp_path / "g" / "iter1" / "prompts.jsonl").exists()
    assert np.isfinite(read_json(final_g / "train_state.json").get("steps", 0))
    # ReST-DPO on the same loop: pairs from the samples, DPO from the previous policy
    from searchrl.train.config import DPOConfig

    final_d = run_rest_grpo(ctx, cfg=replace(cfg, method="rest-dpo", iterations=1), grpo_cfg=grpo, problems=problems,
                            method_dir=tmp_path / "d", policy=tmp_path / "base",
                            dpo_cfg=DPOConfig(output_dir="", max_steps=2, lr=1e-3, warmup_steps=0))
    pairs = read_jsonl(tmp_path / "d" / "iter1" / "prompts.jsonl")
    assert all(p["chosen"][:1].isdigit() and not p["rejected"][:1].isdigit() for p in pairs)
    assert (final_d / "config.json").exists() if pairs else final_d == tmp_path / "base"


def test_the_command_log_names_what_each_iteration_trains():
    from searchrl.config import load_config
    from searchrl.pipelines.selftrain import training_per_iteration

    def said(*overrides):
        return training_per_iteration(load_config([], list(overrides)))

    assert said() == "one GRPO pass over its assembled prompts (P_Q+)"  # the default: all of P_Q+
    assert said("rest_grpo.grpo_iterations=5", "grpo.iterations=20") == "5 GRPO steps"
    assert said("rest_grpo.method=grpo", "grpo.iterations=20") == "20 GRPO steps"
    assert said("rest_grpo.method=rest-dpo", "dpo.epochs=1") == "1 DPO epoch(s) on its pairs"
