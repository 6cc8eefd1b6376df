"""Records read from a user's files: every error names that file, its 1-based line and the field, and says
what was expected; a bad record leaves the data directory unprepared (issue 25, item 5). Fast: no model
is trained."""

from __future__ import annotations

import json

import pytest

from searchrl.cli import main
from searchrl.data import InputError, RecordError
from searchrl.tasks import make_task
from searchrl.tasks.code import CodeConfig
from searchrl.tasks.countdown import read_problems
from searchrl.tasks.math import MathConfig

OK_CODE = {"statement": "Print the sum of two numbers.", "tests": [{"input": "1 2\n", "output": "3\n"}],
           "solution": "a, b = map(int, input().split())\nprint(a + b)"}
OK_MATH = {"content": "What is 1 + 1?", "answer": "2", "solution": "1 + 1 = 2\nThe answer is \\boxed{2}."}
APPS_IO = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})


def _lines(*recs) -> str:
    """JSON Lines text; a str item is written as it is (a broken or blank line)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs)


# (case, file content, line, expected message after "<file>:<line>: ")
CODE_CASES = [
    ("the user's report: a number for a solution", _lines(OK_CODE, {**OK_CODE, "solution": 12345}), 2,
     "field 'solution': expected a string, got int"),
    ("an empty solution", _lines({**OK_CODE, "solution": "  "}), 1, "field 'solution': an empty reference solution"),
    ("a statement that is no string", _lines(OK_CODE, OK_CODE, {**OK_CODE, "statement": ["x"]}), 3,
     "field 'statement': expected a string, got list"),
    ("an empty statement", _lines({**OK_CODE, "statement": " "}), 1, "field 'statement': empty"),
    ("no tests", _lines({"statement": "x"}), 1, "field 'tests': missing (expected a list of tests)"),
    ("tests that are no list", _lines({"statement": "x", "tests": "1 2"}), 1,
     "field 'tests': expected a list of tests, got str"),
    ("an empty list of tests", _lines({"statement": "x", "tests": []}), 1, "field 'tests': no tests"),
    ("a test input that is a number", _lines({**OK_CODE, "tests": [{"input": 1, "output": "1"}]}), 1,
     "field 'tests[0]': input: expected a string, got int"),
    ("a test input that is a list of lines", _lines({**OK_CODE, "tests": [{"input": ["1"], "output": "1"}]}), 1,
     "field 'tests[0]': input: expected a string, got list"),
    ("APPS: an input that is a list of lines",
     _lines({"question": "q", "input_output": {"inputs": [["1"]], "outputs": ["1\n"]}}), 1,
     "field 'input_output[0]': input: expected a string, got list"),
    ("a test without its output", _lines({**OK_CODE, "tests": [{"input": "1"}]}), 1,
     "field 'tests[0]': output: missing (expected a string)"),
    ("n_public as text", _lines({**OK_CODE, "n_public": "1"}), 1, "field 'n_public': expected an integer, got str"),
    ("n_public as true", _lines({**OK_CODE, "n_public": True}), 1, "field 'n_public': expected an integer, got bool"),
    ("n_public past the tests", _lines({**OK_CODE, "n_public": 5}), 1, "field 'n_public': expected an integer in 0..1"),
    ("a blank line still counts", _lines(OK_CODE, "", {**OK_CODE, "solution": None, "statement": 3}), 3,
     "field 'statement': expected a string, got int"),
    ("broken JSON", _lines(OK_CODE, '{"statement": "x", tests'), 2, "invalid JSON"),
    ("no problem at all", _lines(OK_CODE, {"title": "?"}), 2, "not a stdin/stdout problem"),
    ("APPS: solutions that are no list", _lines({"question": "q", "input_output": APPS_IO, "solutions": {"a": 1}}),
     1, "field 'solutions': expected a list of strings, got dict"),
    ("APPS: a solution that is a number", _lines({"question": "q", "input_output": APPS_IO, "solutions": [7]}), 1,
     "field 'solutions[0]': expected a string, got int"),
    ("APPS: a question that is a number", _lines({"question": 5, "input_output": APPS_IO}), 1,
     "field 'question': expected a string, got int"),
    ("APPS: no input_output", _lines({"question": "q"}), 1, "field 'input_output': missing"),
    ("APPS: an output list holding a number",
     _lines({"question": "q", "input_output": {"inputs": ["1\n"], "outputs": [["1", 2]]}}), 1,
     "field 'input_output[0]': output: expected a string or a list of lines (strings), got a list holding int"),
    ("APPS: unequal inputs and outputs",
     _lines({"question": "q", "input_output": {"inputs": ["1\n", "2\n"], "outputs": ["1\n"]}}), 1,
     "field 'input_output': 2 inputs but 1 outputs"),
    ("APPS: a call-based problem",
     _lines({"question": "q", "input_output": {"fn_name": "f", "inputs": [[1]], "outputs": [1]}}), 1,
     "field 'input_output': a call-based problem"),
    ("CodeContests: no description", _lines({"public_tests": {"input": ["1"], "output": ["1"]}}), 1,
     "field 'description': missing (expected a string)"),
    ("CodeContests: a solution that is a number",
     _lines({"description": "d", "public_tests": {"input": ["1"], "output": ["1"]},
             "solutions": {"language": [3], "solution": [12345]}}), 1,
     "field 'solutions.solution[0]': expected a string, got int"),
    ("CodeContests: tests that are a list",
     _lines({"description": "d", "public_tests": [{"input": "1", "output": "1"}]}), 1,
     "field 'public_tests': expected an object with 'input' and 'output' lists, got list"),
    ("prepared layout: public tests that are not the first tests",
     _lines({**OK_CODE, "public_tests": [{"input": "9\n", "output": "9\n"}]}), 1,
     "field 'public_tests': expected the first tests of 'tests'"),
]

MATH_CASES = [
    ("a number for a solution", _lines(OK_MATH, {**OK_MATH, "solution": 5}), 2,
     "field 'solution': expected a string, got int"),
    ("no answer", _lines({"content": "1+1?"}), 1, "field 'answer': missing (expected a string or a number)"),
    ("an answer that is true", _lines({"content": "1+1?", "answer": True}), 1,
     "field 'answer': expected a string or a number, got bool"),
    ("an empty answer", _lines({"content": "1+1?", "answer": ""}), 1, "field 'answer': empty"),
    ("a question that is a list", _lines({"content": ["1+1?"], "answer": "2"}), 1,
     "field 'content': expected a string, got list"),
    ("an empty solution", _lines({**OK_MATH, "solution": ""}), 1, "field 'solution': an empty solution"),
    ("GSM8K: no '####'", _lines({"question": "q", "answer": "it is 4"}), 1,
     "field 'answer': a GSM8K answer ends with '#### <answer>'"),
    ("GSM8K: an answer that is a number", _lines({"question": "q", "answer": 4}), 1,
     "field 'answer': expected a string, got int"),
    ("GSM8K: a question that is null", _lines({"question": None, "answer": "#### 4"}), 1,
     "field 'question': expected a string, got null"),
    ("MATH: an answer that is a list", _lines({"problem": "p", "solution": "\\boxed{1}", "answer": [1]}), 1,
     "field 'answer': expected a string or a number, got list"),
    ("MATH: no solution", _lines({"problem": "p"}), 1, "field 'solution': missing (expected a string)"),
    ("MATH: no boxed answer", _lines({"problem": "p", "solution": "it is one"}), 1,
     "field 'solution': no \\boxed{} answer in it"),
    ("a line that is a list", _lines(OK_MATH, [1, 2]), 2, "expected a JSON object, got list"),
    ("no problem at all", _lines({"title": "?"}), 1, "not a math problem"),
]


def _code(path):
    return CodeConfig(source="stdio", path=str(path))


def _math(path):
    return MathConfig(source="jsonl", path=str(path))


@pytest.mark.parametrize("case,content,line,message", CODE_CASES, ids=[c[0] for c in CODE_CASES])
def test_a_bad_code_record_names_the_users_file_line_and_field_and_prepares_nothing(tmp_path, case, content, line,
                                                                                    message):
    _check_bad_file(tmp_path, "train.jsonl", content, line, message, _code)


@pytest.mark.parametrize("case,content,line,message", MATH_CASES, ids=[c[0] for c in MATH_CASES])
def test_a_bad_math_record_names_the_users_file_line_and_field_and_prepares_nothing(tmp_path, case, content, line,
                                                                                    message):
    _check_bad_file(tmp_path, "train.jsonl", content, line, message, _math)


def _check_bad_file(tmp_path, name, content, line, message, config):
    user = tmp_path / "user"
    user.mkdir()
    good = _lines(OK_CODE if config is _code else OK_MATH)
    (user / "test.jsonl").write_text(good)  # a good split beside the bad one: still nothing is written
    (user / name).write_text(content)
    out = tmp_path / "data"
    task = make_task(config(user), out)
    with pytest.raises(RecordError) as e:
        task.prepare(out, progress=False)
    assert isinstance(e.value, InputError)  # the CLI prints it as one line, exit status 2
    assert str(e.value).startswith(f"{user / name}:{line}: {message}"), str(e.value)
    assert (e.value.path, e.value.line) == (str(user / name), line)
    assert not out.exists() and not task.is_prepared()  # nothing written, so nothing marked prepared


def test_a_json_list_of_math_problems_names_the_line_its_item_starts_on(tmp_path):
    user = tmp_path / "problems.json"
    user.write_text('[\n  {"content": "1+1?", "answer": 2},\n  {"content": "2+2?",\n   "answer": null}\n]\n')
    out = tmp_path / "data"
    with pytest.raises(RecordError, match=rf"^{user}:3: field 'answer': expected a string or a number, got null$"):
        make_task(_math(user), out).prepare(out, progress=False)
    assert not out.exists()
    user.write_text('{"content": "1+1?", "answer": 2}')
    with pytest.raises(InputError, match="expected a JSON list of problems, got dict"):
        make_task(_math(user), out).prepare(out, progress=False)


def test_two_files_for_one_split_are_refused(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "test.jsonl").write_text(_lines(OK_MATH))
    (user / "test.json").write_text(json.dumps([OK_MATH]))
    with pytest.raises(InputError, match="two files for split 'test'"):
        make_task(_math(user), tmp_path / "data").prepare(progress=False)


def test_good_records_are_kept_whole_and_later_errors_name_the_users_file(tmp_path):
    from searchrl.pipelines.commands import sft_examples

    user = tmp_path / "user"
    user.mkdir()
    no_solution = {k: v for k, v in OK_CODE.items() if k != "solution"}
    (user / "train.jsonl").write_text(_lines(OK_CODE, "", {**no_solution, "solution": None}, OK_CODE))
    out = tmp_path / "data"
    task = make_task(_code(user), out)
    assert task.prepare(out, progress=False)["train"] == 3 and task.is_prepared()
    got = task.problems("train")
    assert [p.get("solution") for p in got] == [OK_CODE["solution"], None, OK_CODE["solution"]]
    assert task.where("train", 2) == (str(user / "train.jsonl"), 4)
    # SFT needs the reference the second problem lacks: the error names the user's line, not the copy's
    with pytest.raises(RecordError, match=rf"^{user / 'train.jsonl'}:3: field 'solution': missing"):
        sft_examples(task)

    math_user = tmp_path / "gsm8k.jsonl"
    math_user.write_text(_lines({"question": "Tom has 1,000 and gets 5.", "answer": "1000 + 5 = 1005\n#### 1,005"},
                                {"content": "1+1?", "answer": 2},
                                {"problem": "p", "solution": "\\boxed{x}", "answer": 0.5}))
    t = make_task(_math(math_user), tmp_path / "math")
    t.prepare(progress=False)
    assert [(p["answer"], p.get("solution")) for p in t.problems("test")] == \
        [("1005", "1000 + 5 = 1005"), ("2", None), ("0.5", "\\boxed{x}")]


@pytest.mark.parametrize("line,message", [
    ('{"target": "12", "nums": [3, 4]}', "field 'target': expected an integer, got str '12'"),
    ('{"target": 12, "nums": [3, true]}',
     "field 'nums': expected a list of at least 2 non-negative integers, got list [3, True]"),
    ('{"extra_info": {"target": 12, "nums": [3, 4], "solution": "3*4=12"}}',
     "field 'extra_info.solution': expected a list of operation strings"),
    ('{"target": 12, "nums": [3, 4], "trace": null}',
     "field 'trace': expected a Stream-of-Search trace (a string), got null"),
])
def test_countdown_records_of_a_users_data_dir_name_its_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "test_seen.jsonl"
    path.write_text('{"target": 12, "nums": [3, 4], "solution": null}\n\n' + line + "\n")
    with pytest.raises(RecordError) as e:
        read_problems(path)
    assert str(e.value).startswith(f"{path}:3: {message}"), str(e.value)
    path.write_text('{"target": 12, "nums": [3, 4], "solution": null}\n')
    assert read_problems(path) == [{"target": 12, "nums": [3, 4]}]  # null: no solution, not a null one


def test_the_cli_prints_one_line_naming_the_users_file_and_marks_no_stage_done(tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "train.jsonl").write_text(_lines(OK_CODE, {**OK_CODE, "solution": 12345}))
    task = ["task.name=code", "task.source=stdio", f"task.path={user}"]
    out = tmp_path / "x"
    assert main(["data", "--quiet", "--out", str(out), *task]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {user / 'train.jsonl'}:2: field 'solution': expected a string, got int\n"
    assert not out.exists()

    run = tmp_path / "run"
    assert main(["sft", "--quiet", "--run-dir", str(run), *task, "model.name=micro", "sft.max_steps=1"]) == 2
    assert capsys.readouterr().err == err
    stage = json.loads((run / "data" / "stage.json").read_text())
    assert stage["done"] is False and not (run / "data" / "stats.json").exists()
    assert not (run / "sft").exists() or not (run / "sft" / "stage.json").exists()
