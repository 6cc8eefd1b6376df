"""The math task (ReST-MCTS*, seed 002): answer extraction, math-verify equivalence, the synthetic problems,
the published datasets' layouts."""

from __future__ import annotations

import json
import threading

import pytest

from searchrl.data import RecordError
from searchrl.tasks.math import MathConfig, MathTask, are_equivalent, extract_answer, is_equivalent, load_problems
from searchrl.tasks.math.synthetic import KINDS, held_out_pairs


def test_extract_answer_takes_the_last_boxed_with_nested_braces():
    assert extract_answer("first \\boxed{1}, then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("\\boxed{x^{2}+\\sqrt{y_{1}}}") == "x^{2}+\\sqrt{y_{1}}"
    assert extract_answer("12 + 3 = 15\nThe answer is 15.") == "15"
    assert extract_answer("The answer is $\\pi$.") == "\\pi"
    assert extract_answer("no answer here") is None
    assert extract_answer("\\boxed{unclosed") is None
    assert extract_answer(None) is None


def test_equivalence_by_math_verify_never_raises():
    assert is_equivalent("\\frac{1}{2}", "0.5") and is_equivalent("2\\sqrt{2}", "\\sqrt{8}")
    assert not is_equivalent("3", "4") and not is_equivalent(None, "1") and not is_equivalent("{{{", "1")
    assert are_equivalent([("108", "108"), ("1/4", "0.25"), ("", "1"), ("x", "y")]) == [True, True, False, False]
    got = []
    t = threading.Thread(target=lambda: got.append(is_equivalent("0.50", "\\frac12")))  # outside the main thread
    t.start()
    t.join()
    assert got == [True]


def test_an_answer_past_its_timeout_is_not_equivalent_and_the_helper_recovers():
    # 9^(9^9) never finishes in sympy: that answer overruns, the helper is replaced, the next is graded
    # by the new one, within a timeout that does not count the helper's start-up
    assert are_equivalent([("9^{9^{9}}", "1"), ("\\frac{3}{6}", "0.5")], timeout=2.0) == [False, True]
    assert is_equivalent("\\frac{3}{6}", "0.5")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("math")
    t = MathTask(MathConfig(n_train=400, n_selftrain=50, n_valid=30, n_valid_unseen=30, n_test=40), d)
    t.prepare(d, progress=False)
    return t


def test_synthetic_problems_have_checked_step_solutions_and_held_out_compositions(task):
    held = held_out_pairs(0, 0.15)
    seen = set()
    for split in ("train", "selftrain", "valid", "valid_unseen", "test_seen", "test_unseen"):
        for p in task.problems(split):
            assert p["content"] not in seen
            seen.add(p["content"])
            kinds = [k for k, _ in p["steps"]]
            assert 3 <= len(kinds) <= 6 and set(kinds) <= set(KINDS)
            lines = p["solution"].split("\n")
            assert len(lines) == len(kinds) + 1 and extract_answer(lines[-1]) == p["answer"]
            assert lines[-2].endswith(f"= {p['answer']}")
            pairs = set(zip(kinds, kinds[1:]))
            assert bool(pairs & held) == split.endswith("unseen")
    demos = [task.demonstration(p) for p in task.problems("test_seen")]
    assert all(s.correct and s.reward == 1.0 for s in task.score(task.problems("test_seen"), demos))
    wrong = [d.replace("\\boxed{", "\\boxed{1") for d in demos]
    assert not any(s.correct for s in task.score(task.problems("test_seen"), wrong))


def test_the_tokenizer_round_trips_and_numbers_are_single_tokens(task):
    tok = task.tokenizer()
    p = task.problems("train")[0]
    text = task.prompt(p) + p["solution"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok("123 + 45 = 168", add_special_tokens=False)["input_ids"]) == 5


def test_published_layouts_and_bad_records(tmp_path):
    f = tmp_path / "mixed.jsonl"
    rows = [{"content": "1+1?", "answer": "2"},  # ReST-MCTS*
            {"question": "Tom has 3 and gets 4,000.", "answer": "3 + 4000 = 4003\n#### 4,003"},  # GSM8K
            {"problem": "Half of 1?", "solution": "It is $\\boxed{\\frac{1}{2}}$."}]  # MATH
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = load_problems(f)
    assert [g["answer"] for g in got] == ["2", "4003", "\\frac{1}{2}"]
    assert got[1]["solution"] == "3 + 4000 = 4003" and "solution" not in got[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2.*answer"):
        load_problems(bad)
    t = MathTask(MathConfig(source="jsonl", path=str(f)), tmp_path / "data")
    t.prepare(progress=False)
    ps = t.problems("test")
    assert len(ps) == 3 and "\\boxed{}" in t.prompt(ps[0])
    assert [s.correct for s in t.score(ps, ["\\boxed{2}", "The answer is 4003", "\\boxed{0.5}"])] == [True] * 3
