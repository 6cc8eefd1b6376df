"""searchrl tasks as TRL reward functions (searchrl.tasks.reward), and one GRPOTrainer step with one."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from searchrl.tasks.countdown import CountdownConfig, CountdownTask, optimal_trace
from searchrl.tasks.reward import TRL_KWARGS, TaskReward, response_text, trl_reward


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    t = CountdownTask(CountdownConfig(n_train=12, n_selftrain=3, n_valid=4, n_valid_unseen=2, n_test=3, max_target=30,
                                      workers=1), tmp_path_factory.mktemp("cd"))
    t.prepare(progress=False)
    return t


def _columns(problems, repeat=1):
    """TRL's keywords for ``problems``: one list per column, each row repeated ``repeat`` times."""
    rows = [p for p in problems for _ in range(repeat)]
    return {k: [r[k] for r in rows] for k in problems[0]}


def _right(p):
    return optimal_trace(p["target"], p["nums"], p["solution"])


def _wrong(p):
    return f"Current State: {p['target']}:{p['nums']}, Operations: []\n"


def test_correct_trace_scores_one_and_wrong_zero(task):
    problems = task.problems("train")[:3]
    reward = trl_reward(task)
    assert reward.__name__ == "countdown_reward"
    completions = [_right(p) for p in problems] + [_wrong(p) for p in problems]
    out = reward(prompts=[task.prompt(p) for p in problems * 2], completions=completions,
                 **_columns(problems * 2))
    assert out == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0] and all(type(r) is float for r in out)
    # the stored Stream-of-Search trace is graded exactly as task.score grades it
    [s] = task.score([problems[0]], [task.demonstration(problems[0])])
    assert reward(["x"], [task.demonstration(problems[0])], **_columns(problems[:1])) == [s.reward]


def test_problem_of_each_completion_comes_from_its_own_row(task):
    a, b = task.problems("valid")[:2]
    # a's solution graded against b's numbers fails, against its own row passes
    cols = _columns([a, b, a, b])
    assert trl_reward(task)(["p"] * 4, [_right(a), _right(a), _right(b), _right(b)], **cols) == [1.0, 0.0, 0.0, 1.0]


def test_conversational_completions(task):
    p = task.problems("valid")[0]
    conv = [[{"role": "assistant", "content": _right(p)}],
            [{"role": "assistant", "content": _wrong(p)}],
            [{"role": "user", "content": "ignored"}, {"role": "assistant", "content": "nope"},
             {"role": "assistant", "content": _right(p)}],
            [{"role": "assistant", "content": [{"type": "text", "text": _right(p)}]}]]
    prompts = [[{"role": "user", "content": task.prompt(p)}]] * 4
    assert trl_reward(task)(prompts, conv, **_columns([p], 4)) == [1.0, 0.0, 1.0, 1.0]
    assert response_text([{"role": "user", "content": "only a user turn"}]) == ""
    with pytest.raises(TypeError, match="string or a list of messages"):
        response_text(42)


def test_trl_extras_and_non_list_values_are_not_problem_fields(task, monkeypatch):
    p = task.problems("valid")[0]
    seen = []
    original = task.score
    monkeypatch.setattr(task, "score", lambda ps, rs: seen.append(ps) or original(ps, rs))
    out = trl_reward(task)(["p", "p"], [_right(p), _wrong(p)], **_columns([p], 2),
                           completion_ids=[[1, 2], [3]], environments=[object(), object()],
                           trainer_state=object(), log_extra=print, log_metric=print, some_scalar=3)
    assert out == [1.0, 0.0]
    assert [set(q) for q in seen[0]] == [set(p)] * 2 and set(p).isdisjoint(TRL_KWARGS)
    # `fields` picks the columns; a missing one is named
    assert trl_reward(task, fields=["target", "nums"])(["p"], [_right(p)], **_columns([p])) == [1.0]
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['nums'\]"):
        trl_reward(task, fields=["target", "nums"])(["p"], [_right(p)], target=[p["target"]])
    with pytest.raises(ValueError, match="no problem fields"):
        trl_reward(task)(["p"], [_right(p)], trainer_state=object(), completion_ids=[[1]])
    with pytest.raises(ValueError, match="column 'target' has 1 entries for 2 completions"):
        trl_reward(task)(["p", "p"], ["a", "b"], target=[1], nums=[[1, 2], [3, 4]])


def test_one_score_call_per_batch(task, monkeypatch):
    problems = task.problems("train")[:4]
    calls = []
    original = task.score
    monkeypatch.setattr(task, "score", lambda ps, rs: calls.append(len(rs)) or original(ps, rs))
    reward = trl_reward(task)
    reward(["p"] * 8, [_right(p) for p in problems] * 2, **_columns(problems * 2))
    reward(["p"] * 4, [_wrong(p) for p in problems], **_columns(problems))
    assert calls == [8, 4]


def test_reward_pickles_and_has_a_name(task):
    reward = pickle.loads(pickle.dumps(trl_reward(task)))
    p = task.problems("valid")[0]
    assert reward.__name__ == "countdown_reward" and reward(["p"], [_right(p)], **_columns([p])) == [1.0]


def test_one_grpo_step_with_the_countdown_reward(task, tmp_path, monkeypatch):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from searchrl.models import load_policy, resolve_model_path
    from searchrl.rollout import chat_prompt

    model, tok = load_policy(str(resolve_model_path("builtin:sos-tiny-base")))
    problems = task.problems("valid")[:4]
    rows = [{"prompt": chat_prompt(tok, task, p), **p} for p in problems]
    dataset = Dataset.from_list(rows)

    reward = trl_reward(task)
    calls = []
    original = task.score

    def recording(problems, responses):
        calls.append((problems, responses))
        return original(problems, responses)

    monkeypatch.setattr(task, "score", recording)
    trl_calls = []
    call = TaskReward.__call__

    def recorded(self, prompts, completions, **kwargs):  # what TRL passes, on to the adapter
        trl_calls.append({"prompts": prompts, "completions": completions, **kwargs})
        return call(self, prompts, completions, **kwargs)

    monkeypatch.setattr(TaskReward, "__call__", recorded)
    # TRL turns gradient checkpointing on by default (pointless for 1M parameters); transformers 5.24 renamed it
    # activation_checkpointing and warns about the old name
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    no_ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=2,
                      max_completion_length=32, report_to=[], use_cpu=True, logging_steps=1, save_strategy="no",
                      bf16=False, disable_tqdm=True, seed=0, dataloader_num_workers=0, **{no_ckpt: False})
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tok)
    trainer.train()

    assert trainer.state.global_step == 1
    assert len(calls) == 1  # one task.score call for the whole generation batch
    graded, responses = calls[0]
    assert len(graded) == len(responses) == 8
    by_prompt = {r["prompt"]: r for r in rows}
    [kw] = trl_calls
    # TRL 1.16 passes, besides the columns: completion_ids (a list!), trainer_state, log_extra, log_metric
    assert {"prompts", "completions", "target", "nums"} <= set(kw) and "prompt" not in kw
    assert len(kw["completions"]) == 8 and all(isinstance(c, str) for c in kw["completions"])
    for prompt, completion, problem, response in zip(kw["prompts"], kw["completions"], graded, responses):
        row = by_prompt[prompt]  # the prompt TRL generated from, and the problem graded, are one row
        assert problem == {k: v for k, v in row.items() if k != "prompt"}
        assert response == completion
    assert {chat_prompt(tok, task, p) for p in graded} == set(by_prompt)  # all 4 rows, 2 generations each
    logged = [entry for entry in trainer.state.log_history if "rewards/countdown_reward/mean" in entry]
    assert logged and 0.0 <= logged[0]["rewards/countdown_reward/mean"] <= 1.0
