"""Task boundaries: a task migrates its own old settings, code grading and feedback share one loop and one harness."""

from __future__ import annotations

import pytest

from searchrl import tasks
from searchrl.config import _migrate, _migrate_recorded, load_config, to_dict
from searchrl.tasks.code.harness import (cases_program, grade_cases, outcome_rows, passed_cases, run_responses)
from searchrl.tasks.code.sandbox import Program
from searchrl.tasks.countdown import CountdownConfig


def test_countdown_moves_its_old_number_digits_and_leaves_the_raw_config_as_it_was():
    raw = {"model": {"name": "tiny-1m", "number_digits": 2}, "task": {"n_train": 5}}
    new = CountdownConfig.migrate(raw)
    assert new == {"model": {"name": "tiny-1m"}, "task": {"n_train": 5, "number_digits": 2}}
    assert raw == {"model": {"name": "tiny-1m", "number_digits": 2}, "task": {"n_train": 5}}
    assert CountdownConfig.migrate({"model": {"number_digits": 2}, "task": {"number_digits": 3}})["task"] == \
        {"number_digits": 3}  # a value already in task wins
    assert CountdownConfig.migrate(raw := {"model": {"name": "x"}}) is raw


def test_old_settings_load_from_the_command_line_a_recipe_layer_and_a_recorded_config(tmp_path):
    assert load_config(None, ["model.number_digits=2"]).task.number_digits == 2
    recipe = tmp_path / "old.yaml"
    recipe.write_text("data:\n  n_train: 7\nmodel:\n  number_digits: 3\n")
    cfg = load_config(recipe)
    assert (cfg.task.name, cfg.task.n_train, cfg.task.number_digits) == ("countdown", 7, 3)
    old = to_dict(load_config(None, []))
    old["data"] = old.pop("task")
    old["data"].pop("name")
    old["model"]["number_digits"] = old["data"].pop("number_digits") + 1
    cfg = load_config(None, [], base=old)
    assert cfg.task.name == "countdown" and cfg.task.number_digits == 1
    assert _migrate_recorded(old)["task"]["number_digits"] == 1 and "number_digits" in old["model"]


def test_the_config_loader_calls_the_hook_of_the_task_a_layer_names(monkeypatch):
    """config.py names no task setting: the hook of the named task (the default one when none is named) does it."""
    class FakeConfig:
        @classmethod
        def migrate(cls, raw):
            return {**raw, "task": {**raw["task"], "new": raw["task"].get("old")}}

    real = tasks.task_config_class
    monkeypatch.setitem(tasks.TASKS, "fake", "nowhere:Fake")
    monkeypatch.setattr(tasks, "task_config_class", lambda name: FakeConfig if name == "fake" else real(name))
    assert _migrate({"task": {"name": "fake", "old": 1}})["task"] == {"name": "fake", "old": 1, "new": 1}
    # another task's old setting is that task's business: the code task has no hook, nothing moves
    assert _migrate({"task": {"name": "code"}, "model": {"number_digits": 2}})["model"] == {"number_digits": 2}
    assert _migrate({"model": {"number_digits": 2}})["task"] == {"number_digits": 2}  # the default task: Countdown
    assert _migrate({"task": {"name": "nope"}}) == {"task": {"name": "nope"}}  # load_config names the unknown task


def test_run_responses_runs_one_batch_and_hands_each_response_its_own_results():
    problems = [{"k": 0}, {"k": 1}, {"k": 2}, {"k": 3}]
    codes = ["print('a')", None, "", "print('b')"]

    def programs(p, code):
        return [Program(f"print({p['k']}{i})") for i in range(p["k"])]  # 0, 1, 2, 3 programs

    got = run_responses(problems, codes, programs, lambda p, c, rs: (p["k"], [r.stdout.strip() for r in rs]),
                        lambda p: ("no code", p["k"]), timeout=10.0)
    assert got == [(0, []), ("no code", 1), (2, ["20", "21"]), (3, ["30", "31", "32"])]


def test_one_harness_grading_and_feedback_agree_on_every_test():
    tests = [{"input": i, "output": i * 2} for i in range(4)] + [{"input": "x", "output": 0}]
    code = "def f(n):\n    if n == 3:\n        raise ValueError('three')\n    return n * 2 if n else 1\n"
    passed = cases_program(code, "f", tests, "MARK")
    outcomes = cases_program(code, "f", tests, "MARK", report="outcomes")
    assert "def __searchrl_check" in passed and outcomes.startswith(code)
    from searchrl.tasks.code.sandbox import run_batch

    a, b = run_batch([Program(passed), Program(outcomes)], timeout=10.0)
    rows = outcome_rows(b.stdout, "MARK", len(tests))
    assert [r[0] for r in rows] == [False, True, True, False, False]
    assert passed_cases(a.stdout, "MARK", len(tests)) == sum(r[0] for r in rows) == 2
    assert rows[3] == [False, None, "Runtime Error: ValueError: three"] and rows[0][1] == "1"
    [g, none] = grade_cases([{"entry_point": "f", "tests": tests}] * 2, [code, None], timeout=10.0)
    assert (g.passed, g.total, g.statuses) == (2, 5, "ok") and (none.passed, none.statuses) == (0, "no-code")


@pytest.mark.parametrize("report", ["passed", "outcomes"])
def test_a_report_cut_short_or_missing_is_not_trusted(report):
    if report == "passed":
        assert passed_cases("MARK10", "MARK", 3) == 0 and passed_cases("x", "MARK", 3) == 0
    else:
        assert outcome_rows('MARK[[true, "1", null]]', "MARK", 2) is None
        assert outcome_rows("MARK[[true", "MARK", 1) is None and outcome_rows("x", "MARK", 1) is None
