"""Best-of-N, majority vote and value-weighted vote (searchrl.search.bon), counted by hand."""

from __future__ import annotations

import pytest
from search_fakes import EchoTask

from searchrl.search.bon import (
    answers_of,
    best_of_n,
    group_answers,
    majority_vote,
    select,
    weighted_vote,
)


def test_best_of_n_ties_and_unscored():
    assert best_of_n([0.2, 0.7, 0.7, 0.1]) == 1  # tie: the first
    assert best_of_n([None, 0.1, None]) == 1  # unscored candidates lose
    assert best_of_n([None, None]) == 0  # nothing scored: the first
    assert best_of_n([]) is None


def test_answers_of_task_or_stripped_text():
    assert answers_of(EchoTask(), {}, ["a\n42", "x\n\n7\n", ""]) == ["42", "7", None]
    assert answers_of(object(), {}, [" 42 ", "  "]) == ["42", None]  # no task.answer: the stripped text


def test_group_answers_in_order_of_first_appearance():
    assert group_answers(["b", None, "a", "b", None, "a", "c"]) == [[0, 3], [2, 5], [6]]
    assert group_answers([None, None]) == []


def test_majority_vote_ties_and_none_answers():
    # two None answers outnumber each real answer but do not vote: "y" (2) beats "x" (1)
    assert majority_vote(["x", None, None, "y", "y"]) == 3
    # tie 2 - 2: the group whose first member came first ("a"); unscored: its first member
    assert majority_vote(["b", "a", "a", "b"]) == 0
    # with scores: the winning group's highest-scored member
    assert majority_vote(["b", "a", "a", "b"], [0.1, 0.9, 0.8, 0.3]) == 3
    # no answer at all: best-of-N, or the first candidate when unscored; nothing: None
    assert majority_vote([None, None], [0.1, 0.4]) == 1
    assert majority_vote([None, None]) == 0
    assert majority_vote([]) is None


def test_weighted_vote_sums_scores():
    # "a": .9; "b": .5 + .6 = 1.1 wins although "a" has the best single score; represented by its best (.6)
    assert weighted_vote(["a", "b", "b"], [0.9, 0.5, 0.6]) == 2
    # majority vote picks differently on the same answers: "a" has 3 members
    answers, scores = ["a", "a", "a", "b"], [0.1, 0.1, 0.1, 0.9]
    assert majority_vote(answers, scores) == 0 and weighted_vote(answers, scores) == 3


def test_weighted_vote_ties():
    # sums tie at 1.0: the group that appeared first ("b") wins; inside it, scores tie at .5: the first member
    assert weighted_vote(["b", "a", "b"], [0.5, 1.0, 0.5]) == 0
    # None answers do not vote; None scores count 0 in a sum and lose as representatives
    assert weighted_vote([None, "a", "b", "b"], [5.0, 0.4, None, 0.3]) == 1
    assert weighted_vote(["a", "a"], [None, 0.2]) == 1
    assert weighted_vote([None, None], [0.2, 0.3]) == 1  # no answer: best-of-N


def test_custom_equivalence():
    def same_case(a: str, b: str) -> bool:
        return a.lower() == b.lower()

    answers = ["A", "b", "a", "B", "b"]
    assert group_answers(answers, same_case) == [[0, 2], [1, 3, 4]]
    assert majority_vote(answers, equivalent=same_case) == 1
    assert majority_vote(["b", "A", "a"]) == 0 and majority_vote(["b", "A", "a"], equivalent=same_case) == 1
    assert weighted_vote(["A", "b", "a"], [0.3, 0.5, 0.4], equivalent=same_case) == 2  # .7 > .5; "a" is best
    assert weighted_vote(["A", "b", "a"], [0.3, 0.5, 0.4]) == 1  # without it, "b" alone is best
    # compared with each group's first answer, in that order: "3" is near "2" but not near "1"
    assert group_answers(["1", "2", "3"], lambda a, b: abs(int(a) - int(b)) <= 1) == [[0, 1], [2]]
    calls = []
    assert group_answers(["x", "y", "z"], lambda a, b: calls.append((a, b)) or False) == [[0], [1], [2]]
    assert calls == [("x", "y"), ("x", "z"), ("y", "z")]


def test_select_dispatch_and_errors():
    answers, scores = ["a", "b", "b"], [0.9, 0.5, 0.6]
    assert select("best", answers, scores) == 0
    assert select("vote", answers) == 1 and select("vote", answers, scores) == 2
    assert select("weighted-vote", answers, scores) == 2
    assert select("vote", ["b", "A", "a"], equivalent=lambda a, b: a.lower() == b.lower()) == 1
    with pytest.raises(ValueError, match="best-of-N needs scores"):
        select("best", answers)
    with pytest.raises(ValueError, match="a weighted vote needs scores"):
        select("weighted-vote", answers)
    with pytest.raises(ValueError, match="unknown selection 'max'; known: best, vote, weighted-vote"):
        select("max", answers, scores)
    with pytest.raises(ValueError, match="2 scores for 3 answers"):
        select("weighted-vote", answers, scores[:2])


def test_math_votes_group_answers_by_math_verify_not_by_string(tmp_path):
    """ReST-MCTS*'s self-consistency: 1/2, 0.5 and \\frac{1}{2} are one answer (the grader's rule)."""
    from searchrl.search.bon import equivalence, select_for
    from searchrl.tasks.math import MathConfig, MathTask

    task = MathTask(MathConfig(), tmp_path / "data")
    texts = ["The answer is \\boxed{3}.", "The answer is \\boxed{3}.", "The answer is \\boxed{\\frac{1}{2}}.",
             "The answer is \\boxed{0.5}.", "The answer is \\boxed{1/2}."]
    answers = answers_of(task, {}, texts)
    assert group_answers(answers) == [[0, 1], [2], [3], [4]]  # by string: "3" wins
    same = equivalence(task, answers)
    assert group_answers(answers, same) == [[0, 1], [2, 3, 4]]
    assert select_for(task, {}, "vote", texts) == 2
    # weighted: 3 sums to 1.6 > 1/2's 0.3 + 0.3 + 0.3; best-of-N never groups
    assert select_for(task, {}, "weighted-vote", texts, [0.8, 0.8, 0.3, 0.3, 0.3]) == 0
    assert select_for(task, {}, "best", texts, [0.1, 0.1, 0.3, 0.9, 0.3]) == 3
    assert equivalence(EchoTask(), answers) is None  # a task without equivalent_pairs: equal strings
