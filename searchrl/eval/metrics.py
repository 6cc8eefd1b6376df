"""Metrics over graded samples: pass@k and accuracy under a token budget.

Why these metrics
-----------------
The Guided-ReST paper reports, for every method, *pass@k* for k = 1, 2, 4, ..., 32
on a "Seen target" and an "Unseen target" split, and accuracy as a function of the
number of tokens a model is allowed to spend. Both are computed here from the same
input: for each problem, the list of sampled attempts, each graded as correct or
not, with the number of tokens it used.

pass@k is the probability that at least one of k samples drawn (without
replacement) from a model's attempts at a problem is correct. Drawing exactly k
samples and checking them has high variance, so we draw n >= k samples, count the
c correct ones and use the unbiased estimator of Chen et al. (2021), "Evaluating
Large Language Models Trained on Code" (HumanEval), eq. 1::

    pass@k = E_problems[ 1 - C(n - c, k) / C(n, k) ]

The binomial coefficients overflow floats for realistic n, so :func:`pass_at_k`
uses the equivalent product (the same one as the numpy reference code in that
paper)::

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)

Accuracy under a token budget B treats a sample as correct only if it is correct
*and* finished within B tokens (``num_tokens <= B``), i.e. what one would get by
truncating generation at B tokens and grading the truncated output as wrong when
the sample had not finished. See :func:`accuracy_vs_budget` for the averaging.

Confidence intervals are percentile bootstrap intervals over problems (Efron & Tibshirani
1993): the problems are resampled with replacement, the metric recomputed on each
resample, and the 2.5th and 97.5th percentiles of those reported (:func:`bootstrap_ci`).
The sampling noise *within* a problem is already averaged by the estimator; what the
interval captures is which problems happened to be drawn, the dominant noise with 50-200
problems. Two methods evaluated on the same problems are compared by resampling the same
problems for both (:func:`paired_difference`), which cancels the problems' shared
difficulty. Resampling is seeded, so the intervals are deterministic.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_KS",
    "pass_at_k",
    "pass_at_k_table",
    "accuracy_vs_budget",
    "pass_at_k_vs_budget",
    "default_budgets",
    "summarize",
    "bootstrap_ci",
    "paired_difference",
    "per_problem_values",
    "compare_methods",
]

#: Bootstrap resamples and confidence level of every interval in a report.
BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95

#: The k values reported in the Guided-ReST pass@k table.
DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)

Sample = tuple[bool, int]  # (correct, num_tokens)


def _as_int(name: str, value: Any) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem from ``n`` samples of which ``c`` are correct.

    Chen et al. (2021), HumanEval, eq. 1: ``1 - C(n - c, k) / C(n, k)``, computed in the
    numerically stable product form ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``.

    Returns 1.0 when ``n - c < k`` (every size-k subset contains a correct sample) and
    0.0 when ``c == 0``; for ``k == 1`` it equals ``c / n``.

    Raises ``ValueError`` if any argument is negative, ``k < 1``, ``c > n`` or
    ``n < k`` (pass@k cannot be estimated without replacement from fewer than k samples).
    """
    n, c, k = _as_int("n", n), _as_int("c", c), _as_int("k", k)
    if n < 0 or c < 0 or k < 0:
        raise ValueError(f"pass_at_k: n, c, k must be non-negative, got n={n}, c={c}, k={k}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got k={k}")
    if c > n:
        raise ValueError(f"pass_at_k: c={c} correct samples exceeds n={n} samples")
    if n < k:
        raise ValueError(f"pass_at_k: need at least k={k} samples, got n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def pass_at_k_table(correct: Sequence[Sequence[bool]], ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """pass@k for several k: the per-problem estimator (Chen et al. 2021, eq. 1) averaged over problems.

    ``correct[p]`` holds the grades of the samples drawn for problem ``p``; problems may
    have different numbers of samples. For each k, problems with fewer than k samples
    are left out of that k's average (rather than counted as failures, which would bias
    the estimate down); a k that no problem has enough samples for is absent from the
    result. Values are in [0, 1]; keys keep the order of ``ks``.
    """
    ks = [_as_int("k", k) for k in ks]
    counts = [(len(samples), sum(1 for s in samples if s)) for samples in correct]
    table: dict[int, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"pass_at_k_table: k must be >= 1, got {k}")
        values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
        if values:
            table[k] = math.fsum(values) / len(values)
    return table


def _check_samples(samples: Sequence[Sequence[Sample]]) -> None:
    for p, problem in enumerate(samples):
        for j, sample in enumerate(problem):
            try:
                ok, tokens = sample
            except (TypeError, ValueError):
                raise TypeError(f"samples[{p}][{j}]: expected (correct, num_tokens), got {sample!r:.80}") from None
            tokens = _as_int(f"samples[{p}][{j}] num_tokens", tokens)
            if tokens < 0:
                raise ValueError(f"samples[{p}][{j}]: num_tokens must be >= 0, got {tokens}")


def _budgets(budgets: Iterable[int]) -> list[int]:
    out = [_as_int("budget", b) for b in budgets]
    for b in out:
        if b < 0:
            raise ValueError(f"token budget must be >= 0, got {b}")
    return out


def accuracy_vs_budget(samples: Sequence[Sequence[Sample]], budgets: Iterable[int]) -> dict[int, float]:
    """Per-sample accuracy when each sample may use at most B tokens, for each budget B.

    ``samples[p]`` is a list of ``(correct, num_tokens)`` for the samples of problem ``p``.
    A sample counts as correct at budget B only if ``correct and num_tokens <= B``.

    Averaging: first the fraction of problem p's samples that are correct within B, then
    the mean of that over problems (a macro average). Every problem therefore weighs the
    same however many samples it has, and for B >= every sample's length the value equals
    pass@1 from :func:`pass_at_k_table` (Chen et al. 2021, eq. 1 with k = 1 is c/n).
    With an equal number of samples per problem this is also the plain mean over all
    samples. Problems without samples are skipped; if none has samples the result is ``{}``.
    Values are in [0, 1]; keys keep the order of ``budgets``.
    """
    budgets = _budgets(budgets)
    _check_samples(samples)
    problems = [problem for problem in samples if len(problem) > 0]
    if not problems:
        return {}
    result: dict[int, float] = {}
    for b in budgets:
        per_problem = [sum(1 for ok, t in problem if ok and t <= b) / len(problem) for problem in problems]
        result[b] = math.fsum(per_problem) / len(per_problem)
    return result


def pass_at_k_vs_budget(samples: Sequence[Sequence[Sample]], k: int, budgets: Iterable[int]) -> dict[int, float]:
    """pass@k (Chen et al. 2021, eq. 1) when each sample may use at most B tokens, for each budget B.

    A sample counts as correct at budget B only if it is correct and used ``<= B``
    tokens; the estimator is then applied to all n samples of each problem and averaged
    over problems, exactly as in :func:`pass_at_k_table` (problems with n < k skipped;
    ``{}`` if none has k samples). With k = 1 this equals :func:`accuracy_vs_budget`.
    """
    k = _as_int("k", k)
    budgets = _budgets(budgets)
    _check_samples(samples)
    result: dict[int, float] = {}
    for b in budgets:
        table = pass_at_k_table([[bool(ok) and t <= b for ok, t in problem] for problem in samples], ks=(k,))
        if k in table:
            result[b] = table[k]
    return result


def default_budgets(samples: Sequence[Sequence[Sample]]) -> list[int]:
    """Powers of two spanning the observed sample lengths, for an accuracy-vs-budget curve.

    From the largest power of two not above the shortest sample to the smallest power
    of two not below the longest one, so the last budget admits every sample (and the
    curve ends at pass@1). ``[]`` when there are no samples.
    """
    lengths = [int(t) for problem in samples for _, t in problem]
    if not lengths:
        return []
    lo, hi = max(min(lengths), 1), max(max(lengths), 1)
    start = 1 << (lo.bit_length() - 1)
    stop = 1 << (hi - 1).bit_length()
    budgets, b = [], start
    while b <= stop:
        budgets.append(b)
        b *= 2
    return budgets


def per_problem_values(per_problem: Mapping[str, Any], metric: str) -> list[float]:
    """The per-problem values whose mean is ``metric`` (``"pass@K"`` or ``"greedy"``), from the
    ``per_problem`` record of :func:`summarize` (problems with fewer than K samples are left out,
    as in :func:`pass_at_k_table`)."""
    if metric == "greedy":
        return [float(g) for g in per_problem.get("greedy") or []]
    if not metric.startswith("pass@"):
        raise ValueError(f"metric must be 'pass@K' or 'greedy', got {metric!r}")
    k = int(metric[5:])
    return [pass_at_k(n, c, k) for n, c in zip(per_problem["n"], per_problem["correct"]) if n >= k]


def bootstrap_ci(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem).

    All values equal gives a zero-width interval; ``None`` when there are no values.
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0, level: float = CI_LEVEL) -> dict[str, Any]:
    """``mean(b) - mean(a)`` over the same problems, with its paired bootstrap interval.

    ``a[i]`` and ``b[i]`` are the two methods' values on problem ``i``; each resample draws
    the same problems for both. Returns ``{"diff", "ci": [lo, hi], "problems"}``.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} vs {len(b)} problems; a paired comparison needs the same ones")
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    ci = bootstrap_ci(d, resamples, seed, level)
    return {"diff": float(d.mean()) if d.size else None, "ci": list(ci) if ci else None, "problems": int(d.size)}


def _paired_values(pa: Mapping[str, Any], pb: Mapping[str, Any], metric: str) -> tuple[list[float], list[float]]:
    """Both methods' per-problem values of ``metric`` on the problems both have them for (same index)."""
    if metric == "greedy":
        ga, gb = pa.get("greedy") or [], pb.get("greedy") or []
        return ([float(x) for x in ga], [float(x) for x in gb]) if len(ga) == len(gb) else ([], [])
    k = int(metric[5:])
    keep = [i for i, (na, nb) in enumerate(zip(pa["n"], pb["n"])) if na >= k and nb >= k]
    return ([pass_at_k(pa["n"][i], pa["correct"][i], k) for i in keep],
            [pass_at_k(pb["n"][i], pb["correct"][i], k) for i in keep])


def compare_methods(methods: Mapping[str, Mapping[str, Any]], splits: Sequence[str],
                    metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Paired differences for every pair of methods (later minus earlier, in the order given),
    split and metric, where both were evaluated on the same problems (``per_problem`` of
    :func:`summarize` with equal problem counts). Each entry: ``{"a", "b", "split", "metric",
    "diff", "ci", "problems"}`` with ``diff = b - a`` in [−1, 1]."""
    names = list(methods)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for split in splits:
                pa = (methods[a].get(split) or {}).get("per_problem")
                pb = (methods[b].get(split) or {}).get("per_problem")
                if not pa or not pb or len(pa["n"]) != len(pb["n"]):
                    continue
                for metric in metrics:
                    va, vb = _paired_values(pa, pb, metric)
                    if va:
                        out.append({"a": a, "b": b, "split": split, "metric": metric, **paired_difference(va, vb)})
    return out


def summarize(
    split_samples: Mapping[str, Sequence[Sequence[Sample]]],
    ks: Iterable[int] = DEFAULT_KS,
    budgets: Iterable[int] | None = None,
    greedy: Mapping[str, Sequence[bool]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every number the report needs, per split (e.g. ``"test_seen"``, ``"test_unseen"``).

    ``split_samples[split][p]`` lists ``(correct, num_tokens)`` for the sampled attempts
    at problem ``p``. Returns, per split::

        {"pass@k": {k: float},               # Chen et al. 2021, eq. 1, see pass_at_k_table
         "accuracy_vs_budget": {B: float},   # see accuracy_vs_budget
         "num_problems": int, "num_samples": int,
         "mean_tokens": float | None,          # over all samples
         "mean_tokens_correct": float | None,  # over correct samples only
         "greedy": float,                      # only if greedy[split] was given
         "pass@k_ci": {k: [lo, hi]}, "greedy_ci": [lo, hi],  # 95% bootstrap over problems
         "per_problem": {"n": [...], "correct": [...], "greedy": [...]}}  # for paired comparisons

    ``budgets=None`` picks :func:`default_budgets` per split. ``greedy[split]`` holds one
    grade per problem for greedy (temperature 0) decoding; its mean is reported as
    "greedy" accuracy. All rates are in [0, 1]; ``None`` stands for "no data" so the
    result stays valid JSON (note that JSON turns the integer keys into strings; the
    functions in :mod:`searchrl.eval.report` accept either).
    """
    ks = tuple(ks)
    fixed_budgets = None if budgets is None else _budgets(budgets)
    out: dict[str, dict[str, Any]] = {}
    for split, samples in split_samples.items():
        _check_samples(samples)
        tokens = [int(t) for problem in samples for _, t in problem]
        tokens_ok = [int(t) for problem in samples for ok, t in problem if ok]
        split_budgets = default_budgets(samples) if fixed_budgets is None else fixed_budgets
        summary: dict[str, Any] = {
            "pass@k": pass_at_k_table([[bool(ok) for ok, _ in problem] for problem in samples], ks),
            "accuracy_vs_budget": accuracy_vs_budget(samples, split_budgets),
            "num_problems": len(samples),
            "num_samples": len(tokens),
            "mean_tokens": math.fsum(tokens) / len(tokens) if tokens else None,
            "mean_tokens_correct": math.fsum(tokens_ok) / len(tokens_ok) if tokens_ok else None,
        }
        per_problem: dict[str, list] = {"n": [len(problem) for problem in samples],
                                        "correct": [sum(1 for ok, _ in problem if ok) for problem in samples]}
        if greedy is not None and split in greedy:
            grades = list(greedy[split])
            summary["greedy"] = sum(1 for g in grades if g) / len(grades) if grades else None
            per_problem["greedy"] = [bool(g) for g in grades]
        summary["pass@k_ci"] = {k: list(ci) for k in summary["pass@k"]
                                if (ci := bootstrap_ci(per_problem_values(per_problem, f"pass@{k}"))) is not None}
        if "greedy" in summary:
            ci = bootstrap_ci(per_problem_values(per_problem, "greedy"))
            summary["greedy_ci"] = list(ci) if ci else None
        summary["per_problem"] = per_problem
        out[split] = summary
    return out
