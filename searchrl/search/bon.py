"""Choosing a final response among sampled ones: best-of-N, majority vote, value-weighted majority vote.

* **Best-of-N** (ReST-RL Algorithm 3's last line, VGS ``best-of-N``, ReST-MCTS*'s ORM-BoN):
  the candidate with the highest score; the score is a value model's, an ORM's, or, as an
  *oracle* (an upper bound no real search has, marked as such in every table), the task's
  verifier.
* **Majority vote** (self-consistency): candidates are grouped by their final answer
  (:func:`answers_of`) under the task's equivalence (:func:`equivalence`: for math,
  ``math-verify``, the grader's own rule, so ``1/2`` and ``0.5`` vote together; equal strings
  elsewhere); the largest group wins. Candidates without an answer do not vote.
* **Value-weighted majority vote** (VGS ``weighted majority vote``, ReST-MCTS*'s
  value-weighted vote): each group's score is the *sum* of its members' scores; the best
  group wins.

The winning group is represented by its highest-scored member (its first member when
unscored). Ties go to the group whose first member came first, so results do not depend on
dictionary order. With no answer at all, the vote falls back to best-of-N (or the first
candidate when unscored).

As search methods (:mod:`.registry`)
------------------------------------
The comparison's **pool methods** choose among a problem's samples from one shared pool (at
budget B its first samples whose tokens add up to at most B; see :mod:`.registry`), so every pool
method at every budget reads the same samples:

* ``bon-oracle``: best-of-N by the task's verifier (the reward; the oracle);
* ``bon-value`` (alias ``bon``) / ``bon-orm``: best-of-N by the value model / the ORM;
* ``vote``: majority vote (self-consistency);
* ``weighted-vote``: value-weighted majority vote (ReST-MCTS*'s "SC + value");
* ``orm-vote``: ORM-weighted majority vote ("SC + ORM");
* ``prm-min``: best-of-N by the minimum step value of a process reward model (ReST-RL's PRM-BoN
  baseline; :func:`.vm_mcts.prm_min_scores`), the PRM trained independently of the value model,
  on Math-Shepherd step labels (``search.prm``);
* ``prm-vote``: majority vote weighted by the PRM's minimum step value (ReST-MCTS*'s "SC + MS",
  the Math-Shepherd PRM);
* ``mcts-star-vote``: majority vote weighted by the value model trained on MCTS* targets
  (``search.mcts_star_value``: ReST-MCTS*'s "SC + ReST-MCTS* value");
* ``bon-classifier`` / ``classifier-vote``: best-of-N / weighted majority vote by the VGS 3-class
  classifier (``search.classifier``): VGS's own baselines, scored by the same model as its beam
  search and DVTS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .registry import PoolMethod

SELECTIONS = ("best", "vote", "weighted-vote")


def answers_of(task, problem: dict, texts: Sequence[str]) -> list[str | None]:
    """Each response's final answer, as the task extracts it (``task.answer``); the stripped text
    when the task has no notion of an answer."""
    extract = getattr(task, "answer", None)
    if extract is None:
        return [t.strip() or None for t in texts]
    return [extract(problem, t) for t in texts]


def equivalence(task, answers: Sequence[str | None]) -> Callable[[str, str], bool] | None:
    """The task's equivalence of final answers over ``answers``, for :func:`group_answers`: None (equal
    strings) unless the task has ``equivalent_pairs(pairs) -> [bool]`` (math), which is asked once,
    for every ordered pair of distinct answers, in one batched call."""
    pairs_of = getattr(task, "equivalent_pairs", None)
    distinct = list(dict.fromkeys(a for a in answers if a is not None))
    if pairs_of is None or len(distinct) < 2:
        return None
    pairs = [(a, b) for a in distinct for b in distinct if a != b]
    same = dict(zip(pairs, pairs_of(pairs)))

    def equivalent(a: str, b: str) -> bool:
        return a == b or same[(a, b)]

    return equivalent


def select_for(task, problem: dict, how: str, texts: Sequence[str],
               scores: Sequence[float | None] | None = None) -> int | None:
    """:func:`select` over responses ``texts``: their answers (:func:`answers_of`) grouped by the task's
    :func:`equivalence`. What every search's final choice calls."""
    answers = answers_of(task, problem, texts)
    return select(how, answers, scores, equivalence(task, answers) if how != "best" else None)


def group_answers(answers: Sequence[str | None],
                  equivalent: Callable[[str, str], bool] | None = None) -> list[list[int]]:
    """Indices grouped by equivalent answers, groups in order of first appearance (``None`` answers left out).

    ``equivalent`` defaults to equality (hashing, linear time); a custom one is compared with
    each group's first answer.
    """
    groups: list[list[int]] = []
    if equivalent is None:
        by_key: dict[str, list[int]] = {}
        for i, a in enumerate(answers):
            if a is None:
                continue
            if a not in by_key:
                by_key[a] = []
                groups.append(by_key[a])
            by_key[a].append(i)
        return groups
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if equivalent(answers[g[0]], a):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def best_of_n(scores: Sequence[float | None]) -> int | None:
    """Index of the highest score (the first on ties; unscored candidates lose); None when empty."""
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    if best is None and len(scores):
        return 0
    return best


def _representative(group: list[int], scores: Sequence[float | None] | None) -> int:
    if scores is None:
        return group[0]
    return max(group, key=lambda i: (scores[i] if scores[i] is not None else float("-inf"), -i))


def majority_vote(answers: Sequence[str | None], scores: Sequence[float | None] | None = None,
                  equivalent: Callable[[str, str], bool] | None = None) -> int | None:
    """Index of a member of the largest answer group (see module docs for ties and representatives)."""
    groups = group_answers(answers, equivalent)
    if not groups:
        return best_of_n(scores) if scores is not None else (0 if len(answers) else None)
    top = max(range(len(groups)), key=lambda g: (len(groups[g]), -g))
    return _representative(groups[top], scores)


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float | None],
                  equivalent: Callable[[str, str], bool] | None = None) -> int | None:
    """Index of the highest-scored member of the group with the largest summed score."""
    if len(scores) != len(answers):
        raise ValueError(f"{len(scores)} scores for {len(answers)} answers")
    groups = group_answers(answers, equivalent)
    if not groups:
        return best_of_n(scores)
    totals = [sum(scores[i] or 0.0 for i in g) for g in groups]
    top = max(range(len(groups)), key=lambda g: (totals[g], -g))
    return _representative(groups[top], scores)


def select(how: str, answers: Sequence[str | None], scores: Sequence[float | None] | None = None,
           equivalent: Callable[[str, str], bool] | None = None) -> int | None:
    """The final response's index by ``how``: ``best`` (needs scores), ``vote`` or ``weighted-vote``."""
    if how == "best":
        if scores is None:
            raise ValueError("best-of-N needs scores")
        return best_of_n(scores)
    if how == "vote":
        return majority_vote(answers, scores, equivalent)
    if how == "weighted-vote":
        if scores is None:
            raise ValueError("a weighted vote needs scores")
        return weighted_vote(answers, scores, equivalent)
    raise ValueError(f"unknown selection {how!r}; known: {', '.join(SELECTIONS)}")


def by_verifier(task, problem: dict, samples: Sequence[dict], scores: Sequence[float] | None) -> int | None:
    """The oracle's choice: best-of-N by each sample's reward from the task's verifier."""
    return best_of_n([s["reward"] for s in samples])


def choose_by(how: str) -> Callable[[object, dict, Sequence[dict], Sequence[float] | None], int | None]:
    """A pool method's choice by :func:`select` ``how`` over the samples' answers and scores."""

    def choose(task, problem: dict, samples: Sequence[dict], scores: Sequence[float] | None) -> int | None:
        return select_for(task, problem, how, [s["response"] for s in samples], scores)

    choose.__qualname__ = f"choose_by({how!r})"
    return choose


#: the pool methods (see module docs), in the order the comparison lists them
SEARCH_METHODS = (
    PoolMethod(name="bon-oracle", label="BoN, verifier (oracle)", choose=by_verifier, oracle=True),
    PoolMethod(name="bon-value", label="BoN, value model", needs="value", choose=choose_by("best"), aliases=("bon",)),
    PoolMethod(name="bon-orm", label="BoN, ORM", needs="orm", choose=choose_by("best")),
    PoolMethod(name="vote", label="majority vote", choose=choose_by("vote")),
    PoolMethod(name="weighted-vote", label="value-weighted vote", needs="value", choose=choose_by("weighted-vote")),
    PoolMethod(name="orm-vote", label="ORM-weighted vote", needs="orm", choose=choose_by("weighted-vote")),
    PoolMethod(name="prm-min", label="BoN, PRM (min step)", needs="prm", choose=choose_by("best"), score="min"),
    PoolMethod(name="prm-vote", label="PRM-weighted vote (min step)", needs="prm", choose=choose_by("weighted-vote"),
               score="min"),
    PoolMethod(name="mcts-star-vote", label="MCTS*-value-weighted vote", needs="mcts_star_value",
               choose=choose_by("weighted-vote")),
    PoolMethod(name="bon-classifier", label="BoN, VGS classifier", needs="classifier", choose=choose_by("best")),
    PoolMethod(name="classifier-vote", label="classifier-weighted vote", needs="classifier",
               choose=choose_by("weighted-vote")),
)


__all__ = ["SELECTIONS", "SEARCH_METHODS", "by_verifier", "choose_by", "answers_of", "equivalence", "select_for",
           "group_answers", "best_of_n",
           "majority_vote", "weighted_vote", "select"]
