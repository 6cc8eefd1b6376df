"""Fast checks of searchrl.eval: the pass@k estimator (Chen et al. 2021, eq. 1), budgets, the report."""

from __future__ import annotations

import json
import math

import pytest

from searchrl.eval import (
    accuracy_vs_budget,
    default_budgets,
    markdown_table,
    pass_at_k,
    pass_at_k_table,
    pass_at_k_vs_budget,
    summarize,
    write_report,
)
from searchrl.eval.metrics import DEFAULT_KS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- pass_at_k

def test_pass_at_k_matches_closed_form_on_grid():
    for n in range(1, 41):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable():
    # math.comb(1000, 500) overflows a float; the product form does not.
    expected = 1.0 - math.comb(900, 500) / math.comb(1000, 500)
    assert pass_at_k(1000, 100, 500) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= pass_at_k(10_000, 1, 1) <= 1.0


@pytest.mark.parametrize("n", [1, 5, 32])
def test_pass_at_k_edge_cases(n):
    for k in range(1, n + 1):
        assert pass_at_k(n, 0, k) == 0.0
        assert pass_at_k(n, n, k) == 1.0
    for c in range(n + 1):
        assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
        for k in range(n - c + 1, n + 1):  # n - c < k: every k-subset holds a correct sample
            assert pass_at_k(n, c, k) == 1.0


@pytest.mark.parametrize("n,c,k", [(3, 1, 4), (0, 0, 1), (4, 5, 1), (-1, 0, 1), (4, -1, 1), (4, 1, -1), (4, 1, 0)])
def test_pass_at_k_rejects_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_rejects_non_integers():
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)


# --------------------------------------------------------------------------- tables

def test_pass_at_k_table_averages_and_skips_k_above_n():
    correct = [[True, False, False, False],  # n=4, c=1
               [False, False],               # n=2, c=0
               [True, True, False, True, False, False, False, False]]  # n=8, c=3
    table = pass_at_k_table(correct, ks=(1, 2, 4, 8, 16))
    assert list(table) == [1, 2, 4, 8]  # 16 > every n: absent
    assert table[1] == pytest.approx((1 / 4 + 0 + 3 / 8) / 3)
    assert table[2] == pytest.approx((pass_at_k(4, 1, 2) + 0 + pass_at_k(8, 3, 2)) / 3)
    assert table[4] == pytest.approx((pass_at_k(4, 1, 4) + pass_at_k(8, 3, 4)) / 2)  # n=2 problem skipped
    assert table[8] == pytest.approx(pass_at_k(8, 3, 8))
    assert all(0.0 <= v <= 1.0 for v in table.values())
    assert pass_at_k_table([]) == {}
    # pass@k is non-decreasing in k
    values = list(pass_at_k_table([[i % 3 == 0 for i in range(32)]] * 3, DEFAULT_KS).values())
    assert values == sorted(values) and len(values) == len(DEFAULT_KS)


def test_accuracy_vs_budget_counts_only_correct_within_budget():
    samples = [
        [(True, 10), (True, 50), (False, 5), (False, 100)],  # problem 0: 4 samples
        [(True, 20), (False, 20)],                            # problem 1: 2 samples
    ]
    acc = accuracy_vs_budget(samples, [5, 10, 20, 49, 50, 1000])
    assert list(acc) == [5, 10, 20, 49, 50, 1000]
    assert acc[5] == 0.0  # the 5-token sample is wrong
    assert acc[10] == pytest.approx((1 / 4 + 0) / 2)  # num_tokens <= B is inclusive
    assert acc[20] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert acc[49] == pytest.approx(acc[20])
    assert acc[50] == pytest.approx((2 / 4 + 1 / 2) / 2)
    # A budget admitting every sample gives pass@1.
    assert acc[1000] == pytest.approx(pass_at_k_table([[ok for ok, _ in p] for p in samples], ks=(1,))[1])
    assert accuracy_vs_budget([], [10]) == {}
    assert accuracy_vs_budget([[]], [10]) == {}
    with pytest.raises(ValueError):
        accuracy_vs_budget([[(True, -1)]], [10])


def test_pass_at_k_vs_budget_and_default_budgets():
    samples = [[(True, 10), (False, 3), (True, 300)], [(False, 7), (True, 64), (False, 2)]]
    budgets = default_budgets(samples)
    assert budgets[0] <= 2 and budgets[-1] >= 300
    assert all(b2 == 2 * b1 for b1, b2 in zip(budgets, budgets[1:]))
    p1 = pass_at_k_vs_budget(samples, 1, budgets)
    assert p1 == pytest.approx(accuracy_vs_budget(samples, budgets))
    p2 = pass_at_k_vs_budget(samples, 2, [9, 10, 64, 300])
    assert p2[9] == 0.0
    assert p2[10] == pytest.approx((pass_at_k(3, 1, 2) + 0) / 2)
    assert p2[300] == pytest.approx(pass_at_k_table([[ok for ok, _ in p] for p in samples], ks=(2,))[2])
    assert pass_at_k_vs_budget(samples, 4, [100]) == {}
    assert default_budgets([]) == []


def test_summarize_fields():
    split_samples = {"test_seen": [[(True, 10), (False, 30)], [(True, 20), (True, 40)]], "test_unseen": []}
    s = summarize(split_samples, ks=(1, 2, 4), budgets=[15, 40], greedy={"test_seen": [True, False]})
    seen = s["test_seen"]
    assert seen["pass@k"] == pytest.approx({1: 0.75, 2: 1.0})
    assert seen["accuracy_vs_budget"] == pytest.approx({15: 0.25, 40: 0.75})
    assert (seen["num_problems"], seen["num_samples"]) == (2, 4)
    assert seen["mean_tokens"] == pytest.approx(25.0)
    assert seen["mean_tokens_correct"] == pytest.approx(70 / 3)
    assert seen["greedy"] == 0.5
    unseen = s["test_unseen"]
    assert unseen["pass@k"] == {} and unseen["num_samples"] == 0 and unseen["mean_tokens"] is None
    assert "greedy" not in unseen
    json.dumps(s, allow_nan=False)  # valid JSON


# --------------------------------------------------------------------------- report

def test_markdown_table_percent_and_dashes():
    results = {
        "ReST": {"test_seen": {1: 0.4126, 2: 0.6}, "test_unseen": {1: 0.3}},
        "Guided-ReST": {"test_seen": {"1": 0.5, "32": 1.0}},  # string keys, as read back from JSON
    }
    md = markdown_table(results, greedy={"ReST": {"test_seen": 0.25}})
    lines = md.strip().splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert "Seen target k=1" in header and "Unseen target k=1" in header and "greedy" in header
    n_cols = header.count("|") - 1
    assert n_cols == 1 + 2 * (len(DEFAULT_KS) + 1)
    rest = next(line for line in lines if line.startswith("| ReST"))
    guided = next(line for line in lines if line.startswith("| Guided-ReST"))
    assert rest.count("|") - 1 == n_cols and guided.count("|") - 1 == n_cols
    cells = [c.strip() for c in rest.strip("|").split("|")]
    assert cells[1:3] == ["41.3", "60.0"]
    assert cells[3] == "–" and cells[7] == "25.0" and cells[8] == "30.0" and cells[-1] == "–"
    gcells = [c.strip() for c in guided.strip("|").split("|")]
    assert gcells[1] == "50.0" and gcells[6] == "100.0" and gcells[2] == "–"
    # Without greedy: no greedy column.
    assert "greedy" not in markdown_table(results).splitlines()[2]


def test_write_report_writes_four_files(tmp_path):
    rng_samples = {
        "test_seen": [[(i % (p + 2) == 0, 50 + 37 * i) for i in range(8)] for p in range(6)],
        "test_unseen": [[(i % (p + 3) == 0, 80 + 41 * i) for i in range(8)] for p in range(6)],
    }
    results_json = {"methods": {"ReST": summarize(rng_samples), "Guided-ReST": summarize(rng_samples, budgets=[64, 256])},
                    "meta": {"seed": 0}}
    paths = write_report(tmp_path / "report", results_json, title="test")
    assert set(paths) == {"json", "markdown", "passk_png", "budget_png"}
    names = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert names == ["accuracy_vs_budget.png", "passk.png", "results.json", "results.md"]  # no temp files left
    back = json.loads((tmp_path / "report" / "results.json").read_text())
    assert back["meta"] == {"seed": 0} and "ReST" in back["methods"]
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| ReST |" in md and "Seen target k=1" in md
    for key in ("passk_png", "budget_png"):
        data = open(paths[key], "rb").read()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    # Reading results.json back (string keys) renders the same table.
    again = write_report(tmp_path / "again", back, title="test")
    assert open(again["markdown"]).read() == md
    with pytest.raises(ValueError):
        write_report(tmp_path / "bad", {"methods": {"x": 3}})


def test_bootstrap_interval_on_known_cases():
    from searchrl.eval.metrics import bootstrap_ci

    assert bootstrap_ci([1.0] * 40) == (1.0, 1.0)  # all correct: zero width
    assert bootstrap_ci([]) is None
    n = 400
    lo, hi = bootstrap_ci([1.0, 0.0] * (n // 2))  # a fixed 50/50 split
    expected = 2 * 1.96 * (0.25 / n) ** 0.5  # normal approximation of the mean's 95% interval
    assert lo < 0.5 < hi and abs((hi - lo) - expected) < 0.1 * expected
    assert bootstrap_ci([1.0, 0.0] * 50, seed=3) == bootstrap_ci([1.0, 0.0] * 50, seed=3)  # seeded


def test_paired_difference_cancels_shared_difficulty():
    from searchrl.eval.metrics import bootstrap_ci, paired_difference

    a = [0.0, 1.0] * 50
    same = paired_difference(a, a)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["problems"] == 100
    # b solves every problem a solves, plus 10 more: a sure difference of 0.1 ...
    b = list(a)
    for i in range(0, 20, 2):
        b[i] = 1.0
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.1) and 0 < d["ci"][0] <= 0.1 <= d["ci"][1]
    # ... which unpaired intervals would not show (they overlap)
    assert bootstrap_ci(b)[0] < bootstrap_ci(a)[1]
    with pytest.raises(ValueError, match="same ones"):
        paired_difference(a, b[:-1])


def test_summary_and_report_carry_intervals(tmp_path):
    import json

    from searchrl.eval.metrics import compare_methods

    samples = {"test_seen": [[(True, 10), (False, 20)], [(False, 5), (False, 5)], [(True, 3), (True, 4)]]}
    s = summarize(samples, ks=[1, 2], budgets=[8, 32], greedy={"test_seen": [True, False, True]})["test_seen"]
    assert s["per_problem"] == {"n": [2, 2, 2], "correct": [1, 0, 2], "greedy": [True, False, True]}
    lo, hi = s["pass@k_ci"][1]
    assert lo <= s["pass@k"][1] <= hi and 0.0 <= lo < hi <= 1.0
    assert s["greedy_ci"][0] <= s["greedy"] <= s["greedy_ci"][1]
    better = summarize({"test_seen": [[(True, 1), (True, 1)]] * 3}, ks=[1, 2], budgets=[8],
                       greedy={"test_seen": [True] * 3})["test_seen"]
    [c] = [c for c in compare_methods({"A": {"test_seen": s}, "B": {"test_seen": better}}, ["test_seen"],
                                      ["pass@1"])]
    assert c["a"] == "A" and c["b"] == "B" and c["diff"] == pytest.approx(1 - 0.5)
    write_report(tmp_path, {"methods": {"A": {"test_seen": s}, "B": {"test_seen": better}}}, splits=["test_seen"],
                 ks=[1, 2], sampling="temperature 1, 2 samples x 3 problems")
    md = (tmp_path / "results.md").read_text()
    lo, hi = s["pass@k_ci"][1]
    assert f"50.0 ({100 * lo:.1f}..{100 * hi:.1f})" in md and "bootstrap interval over problems" in md
    assert "## Paired differences" in md and "| B − A | Seen target | pass@1 | +50.0" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {c["metric"] for c in saved["comparisons"]} == {"pass@1", "pass@2", "greedy"}
    # a results.json read back (string keys) renders the same report; one without intervals claims none
    write_report(tmp_path / "again", saved, splits=["test_seen"], ks=[1, 2], sampling="temperature 1, 2 samples x 3 problems")
    assert (tmp_path / "again" / "results.md").read_text() == md
    bare = {m: {"test_seen": {k: v for k, v in saved["methods"][m]["test_seen"].items()
                              if k not in ("pass@k_ci", "greedy_ci", "per_problem")}} for m in ("A", "B")}
    write_report(tmp_path / "bare", {"methods": bare}, splits=["test_seen"], ks=[1, 2])
    assert "interval" not in (tmp_path / "bare" / "results.md").read_text()


def test_comparisons_pair_the_same_problems_and_the_largest_common_k():
    from searchrl.eval.metrics import compare_methods

    # A has 1 sample on problem 0 and 2 on problem 1; B the other way round: pass@2 exists for
    # neither on both problems, so it must not pair A's problem 1 with B's problem 0
    a = {"s": {"per_problem": {"n": [1, 2], "correct": [0, 2]}}}
    b = {"s": {"per_problem": {"n": [2, 1], "correct": [0, 0]}}}
    assert compare_methods({"A": a, "B": b}, ["s"], ["pass@2"]) == []
    [c] = compare_methods({"A": a, "B": b}, ["s"], ["pass@1"])
    assert c["problems"] == 2 and c["diff"] == pytest.approx(0.0 - 0.5)
