"""Task interface v2, the task registry, and rollouts (trajectories keep token ids and logprobs)."""

from __future__ import annotations

import pytest
import torch

from searchrl.engine import Sampler, SamplingParams
from searchrl.models import load_policy
from searchrl.rollout import Trajectory, chat_prompt, rollout, sft_example
from searchrl.tasks import Score, Task, make_task, task_class
from searchrl.tasks.countdown import CountdownConfig, CountdownTask, optimal_trace


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    t = make_task(CountdownConfig(n_train=12, n_selftrain=3, n_valid=3, n_valid_unseen=2, n_test=3, max_target=30, workers=1),
                  tmp_path_factory.mktemp("cd"))
    t.prepare(progress=False)
    return t


@pytest.fixture(scope="module")
def sampler(task):
    model, tok = load_policy("micro", task.tokenizer(), max_seq_len=512, seed=0)
    return Sampler(model, tok, max_batch_size=8)


class PartialCredit(CountdownTask):
    """Reward 0.5 for any response that mentions the target: partial credit, never correct."""

    def score(self, problems, responses):
        return [Score(reward=0.5 if str(p["target"]) in r else 0.0, correct=False, info={"partial": True})
                for p, r in zip(problems, responses)]


def test_registry_and_protocol(task):
    assert isinstance(task, Task) and task_class("countdown") is CountdownTask
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: code, countdown, math"):
        task_class("nope")
    from searchrl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="task.name: unknown task 'nope'"):
        load_config(None, ["task.name=nope"])
    cfg = load_config(None, ["task.n_train=7", "task.number_digits=2"])
    assert cfg.task.n_train == 7 and len(make_task(cfg.task, ".").tokenizer()) > 100


def test_rollout_keeps_what_was_sampled(task, sampler):
    problems = task.problems("valid")
    trajs = rollout(sampler, task, problems, SamplingParams(n=2, temperature=1.0, max_tokens=40, seed=3),
                    indices=[10, 11, 12])
    tok = sampler.tokenizer
    assert [len(ts) for ts in trajs] == [2, 2, 2]
    for p, ts in zip(problems, trajs):
        for t in ts:
            assert t.prompt_ids == tok(chat_prompt(tok, task, p), add_special_tokens=False)["input_ids"]
            assert len(t.logprobs) == len(t.response_ids) > 0 and t.prefix_len == 0
            assert all(lp <= 0 for lp in t.logprobs)
            assert t.response == tok.decode(t.response_ids, skip_special_tokens=True)
            assert t.correct == task.score([p], [t.response])[0].correct
            assert Trajectory.from_record(t.to_record()) == t
    assert [t.index for ts in trajs for t in ts] == [10, 10, 11, 11, 12, 12]
    # the sampled logprobs are the model's own: recompute them with a plain forward pass
    t = trajs[0][0]
    ids = torch.tensor([t.prompt_ids + t.response_ids])
    with torch.no_grad():
        logp = sampler.model(ids).logits.float().log_softmax(-1)[0]
    n = len(t.prompt_ids)
    ref = [logp[n - 1 + i, tok_id].item() for i, tok_id in enumerate(t.response_ids)]
    assert t.logprobs == pytest.approx(ref, abs=1e-4)


def test_guided_prefix_is_part_of_the_response(task, sampler):
    p = task.problems("valid")[0]
    prefix = optimal_trace(p["target"], p["nums"], p["solution"]).split("\n")[0] + "\n"
    [[t]] = rollout(sampler, task, [p], SamplingParams(n=1, temperature=0.0, max_tokens=20), prefixes=[prefix])
    tok = sampler.tokenizer
    full = tok(chat_prompt(tok, task, p) + prefix, add_special_tokens=False)["input_ids"]
    assert t.response.startswith(prefix)
    assert (t.prompt_ids + t.response_ids)[: len(full)] == full
    assert t.prefix_len == len(full) - len(t.prompt_ids) and len(t.logprobs) == len(t.response_ids) - t.prefix_len
    # the SFT example is exactly these ids, EOS appended when missing
    ex = sft_example(t, tok.eos_token_id)
    assert ex["prompt_ids"] == t.prompt_ids and ex["response_ids"][-1] == tok.eos_token_id
    assert ex["response_ids"][: len(t.response_ids)] == t.response_ids


def test_partial_credit_is_not_correct(task, sampler):
    """A positive reward does not make a response correct (unit-test fractions in code tasks)."""
    partial = PartialCredit(task.config, task.data_dir)
    problems = task.problems("valid")
    trajs = rollout(sampler, partial, problems, [SamplingParams(n=1, temperature=0.0, max_tokens=5)] * 3)
    ts = [t for t_ in trajs for t in t_]
    assert all(not t.correct and t.meta["score"] == {"partial": True} for t in ts)
    # an optimal trace mentions the target: reward 0.5, still not correct
    p = problems[0]
    [s] = partial.score([p], [optimal_trace(p["target"], p["nums"], p["solution"])])
    assert s.reward == 0.5 and not s.correct


def test_progress_counts_every_sample(task, sampler):
    counted = []
    problems = task.problems("valid")
    rollout(sampler, task, problems, SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=1),
            advance=counted.append)
    assert counted and set(counted) == {1} and sum(counted) == 3 * len(problems)
    hf = Sampler(sampler.model, sampler.tokenizer, max_batch_size=4, backend="hf")
    counted.clear()
    rollout(hf, task, problems, SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=1), advance=counted.append)
    assert sum(counted) == 2 * len(problems)
