"""Code self-repair (Guided-ReST, seed 001): feedback on public tests, multi-turn episodes, guidance rounds."""

from __future__ import annotations

import pytest

from searchrl.engine.types import CompletionOutput, RequestOutput
from searchrl.episodes import GUIDANCE, PLACEHOLDER, episode_examples, run_episodes
from searchrl.tasks.code import CodeConfig, CodeTask
from searchrl.tasks.code.repair import (ELLIPSIS, FAILED_HEAD, NO_CODE, PASSED, Outcome, feedback,
                                        repair_demonstration, truncate)

WRONG = "```python\ndef f(x):\n    return 12345\n```"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("code")
    t = CodeTask(CodeConfig(n_train=40, n_selftrain=6, n_valid=2, n_valid_unseen=2, n_test=2, repair_demos=0.5), d)
    t.prepare(d, progress=False)
    return t


def test_truncate_keeps_150_characters_of_each_end():
    s = "a" * 150 + "b" * 100 + "c" * 150
    assert truncate(s) == "a" * 150 + ELLIPSIS + "c" * 150
    assert truncate("x" * 300) == "x" * 300


def test_feedback_messages():
    assert feedback(None).message == NO_CODE and not feedback(None).done
    ok = Outcome("1", "2", "2", None, True)
    assert feedback([ok, ok]) .message == PASSED and feedback([ok]).done
    bad = Outcome("[1, 2]", "3", "x" * 1000, "Wrong Answer", False)
    fb = feedback([ok, bad])
    assert not fb.done
    assert fb.message.startswith(FAILED_HEAD + "\n\n### Test 2 failed\nInput: [1, 2]\nExpected: 3\nOutput: ")
    assert "x" * 150 + ELLIPSIS + "x" * 150 + "\nError message: Wrong Answer\n\n" in fb.message
    assert "Test 1" not in fb.message  # only failed tests are shown


def test_sandbox_feedback_equals_the_demonstrations(task):
    """A demonstration's feedback is computed by our implementation of the steps; running its wrong
    attempt in the sandbox must give the same message, word for word."""
    problems = task.problems("train")
    demos = [(p, task.demonstration(p)) for p in problems]
    multi = [(p, d) for p, d in demos if isinstance(d, list)]
    assert 5 <= len(multi) < len(problems)
    got = task.feedback([p for p, _ in multi], [d[0]["content"] for _, d in multi])
    assert [g.message for g in got] == [d[1]["content"] for _, d in multi]
    assert all(d[2]["content"] == p["solution"] for p, d in multi)
    assert not any(g.done for g in got)


def test_feedback_on_crashes_and_missing_code(task):
    p = task.problems("train")[0]
    fbs = task.feedback([p] * 4, [task.reference(p), "no code here", "```python\ndef f(x):\n    return 1 / 0\n```",
                                  "```python\ndef f(x) oops\n```"])
    assert fbs[0].done and fbs[0].message == PASSED
    assert fbs[1].message == NO_CODE and not fbs[1].done
    assert "Error message: Runtime Error: ZeroDivisionError: division by zero" in fbs[2].message
    assert "Error message: Runtime Error: SyntaxError" in fbs[3].message


def test_repair_demonstration_needs_a_failing_mutation():
    import random

    p = {"family": "int", "steps": [["add", 1]], "public_tests": [{"input": 1, "output": 2}],
         "solution": "```python\ndef f(n):\n    n = n + 1\n    return n\n```"}
    demo = repair_demonstration(p, random.Random(0))
    assert demo[0]["role"] == "assistant" and demo[0]["content"] != p["solution"]
    assert "Expected: 2" in demo[1]["content"]
    assert repair_demonstration({**p, "public_tests": []}, random.Random(0)) is None


class RuleGenerator:
    """A generator that writes a wrong attempt unless the last user message shows the reference,
    then copies it; or always the reference when ``solve``."""

    def __init__(self, tokenizer, task, solve=False):
        self.tokenizer, self.task, self.solve = tokenizer, task, solve
        self.prompts: list[str] = []

    def generate(self, prompts, params, progress=None):
        out = []
        for i, (ids, sp) in enumerate(zip(prompts, params)):
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            self.prompts.append(text)
            last_user = text.rsplit("<|user|>", 1)[-1]
            if self.solve or GUIDANCE in last_user:
                ref = last_user.rsplit(GUIDANCE + "\n\n", 1)[-1].split("<|assistant|>")[0] if not self.solve else None
                response = ref if ref is not None else self._solution(text)
            else:
                response = WRONG
            tids = self.tokenizer(response, add_special_tokens=False)["input_ids"][: sp.max_tokens]
            out.append(RequestOutput(i, text, list(ids), [CompletionOutput(0, self.tokenizer.decode(tids), tids, 0.0,
                                                                            [0.0] * len(tids), "stop")]))
            if progress:
                progress(1)
        return out

    def _solution(self, text):
        for p in self.task.problems("selftrain"):
            if self.task.prompt(p) in text:
                return p["solution"]
        raise AssertionError("unknown prompt")


def test_episodes_without_guidance_run_every_turn(task):
    tok = task.tokenizer()
    problems = task.problems("selftrain")[:3]
    eps = run_episodes(RuleGenerator(tok, task), task, problems, n=2, turns=4, max_tokens=2000)
    for es in eps:
        assert len(es) == 2
        for e in es:
            assert [m["role"] for m in e.messages] == ["assistant", "user"] * 3 + ["assistant"]
            assert len(e.turns) == 4 and not e.correct and not e.done and e.round == 0
            assert e.messages[1]["content"].startswith(FAILED_HEAD)


def test_episode_is_done_when_the_public_tests_pass(task):
    tok = task.tokenizer()
    problems = task.problems("selftrain")[:2]
    eps = run_episodes(RuleGenerator(tok, task, solve=True), task, problems, turns=4, max_tokens=2000)
    assert all(len(e.turns) == 1 and e.correct and e.done and e.reward == 1.0 for es in eps for e in es)


def test_guidance_cuts_at_turn_s_shows_the_reference_and_stores_the_placeholder(task):
    tok = task.tokenizer()
    problems = task.problems("selftrain")[:2]
    gen = RuleGenerator(tok, task)
    eps = run_episodes(gen, task, problems, turns=4, max_tokens=2000, guidance_rounds=3)
    for p, [e] in zip(problems, eps):
        # round 1 cuts after turn 1; turn 2 sees the reference, copies it and passes: done
        assert len(e.turns) == 2 and e.correct and e.round == 1
        assert e.messages[0]["content"] == WRONG and e.messages[2]["content"] == p["solution"]
        user = e.messages[1]["content"]
        assert user.endswith(f"\n\n{GUIDANCE}\n\n{PLACEHOLDER}") and p["solution"] not in user
        assert user.startswith(e.turns[0]["feedback"])  # turn 1's own feedback
        ex = episode_examples(tok, task, p, e)
        assert [x["response"] for x in ex] == [WRONG, p["solution"]]
        assert PLACEHOLDER in ex[1]["prompt"] and p["solution"] not in ex[1]["prompt"]
    shown = [t for t in gen.prompts if GUIDANCE in t]
    assert shown and all(any(p["solution"] in t for p in problems) for t in shown)  # the model did see it


def test_budget_stops_an_episode(task):
    tok = task.tokenizer()
    [p] = task.problems("selftrain")[:1]
    [[e]] = run_episodes(RuleGenerator(tok, task), task, [p], turns=4, max_tokens=60)
    assert 1 <= len(e.turns) < 4 and e.num_tokens < 60


def test_selftrain_and_eval_commands_run_self_repair_episodes(tmp_path):
    import json

    from searchrl.cli import main

    run = tmp_path / "run"
    common = ["task.name=code", "task.n_train=60", "task.n_selftrain=6", "task.n_valid=2", "task.n_valid_unseen=2",
              "task.n_test=3", "task.repair_demos=0.5", "task.workers=1", "model.name=micro", "model.max_seq_len=512",
              "sft.max_steps=2", "sft.warmup_steps=1", "sft.max_seq_len=512", "sft.tokens_per_batch=4096",
              "selftrain.turns=3", "selftrain.guidance_rounds=2", "selftrain.iterations=1", "selftrain.n_problems=4",
              "selftrain.max_tokens=160", "selftrain.batch_size=8", "rest_sft.max_steps=2",
              "eval.turns=3", "eval.n_samples=2", "eval.ks=[1,2]", "eval.splits=[test_unseen]", "eval.n_problems=3",
              "eval.max_tokens=160", "eval.greedy=false", "eval.batch_size=8"]
    assert main(["sft", "--run-dir", str(run), "--quiet", *common]) == 0
    assert main(["selftrain", "--run-dir", str(run), "--quiet", "--eval", *common]) == 0
    stats = json.loads((run / "guided-rest" / "iter1" / "gen_stats.json").read_text())
    assert stats["problems"] == 4 and 1 <= stats["turns_mean"] <= 3 and len(stats["solved_by_round"]) == 3
    summary = json.loads((run / "guided-rest-eval" / "summary.json").read_text())
    assert summary["test_unseen"]["num_samples"] == 6
    ep = summary["episodes"]["test_unseen"]
    assert 0 <= ep["first_turn_accuracy"] <= ep["accuracy"] <= 1 and 1 <= ep["turns_mean"] <= 3
    assert "episodes of up to 3 turns" in (run / "guided-rest-eval" / "results.md").read_text()
    # a rerun resumes: nothing is generated again
    assert main(["selftrain", "--run-dir", str(run), "--quiet", *common]) == 0
    # the experiment script's table reads these files
    import importlib.util
    from pathlib import Path

    root = tmp_path / "root"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "repair-tiny").symlink_to(run)
    spec = importlib.util.spec_from_file_location(
        "code_self_repair", Path(__file__).resolve().parents[1] / "experiments" / "code_self_repair.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--root", str(root), "--ks", "1,2"]) == 0


def test_guided_repair_demonstrations_show_the_reference(tmp_path):
    from searchrl.tasks.base import guided_message

    plain = CodeTask(CodeConfig(n_train=40, n_selftrain=2, n_valid=2, n_valid_unseen=2, n_test=2, repair_demos=0.5),
                     tmp_path)
    plain.prepare(tmp_path, progress=False)
    guided = CodeTask(dataclasses_replace(plain.config, repair_guided=1.0), tmp_path)
    n = 0
    for p in plain.problems("train"):
        a, b = plain.demonstration(p), guided.demonstration(p)
        assert isinstance(a, list) == isinstance(b, list)  # the same problems get repairs
        if isinstance(a, list):
            n += 1
            assert b[0] == a[0] and b[2] == a[2] and b[1]["content"] == guided_message(a[1]["content"], p["solution"])
    assert n >= 5


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)
