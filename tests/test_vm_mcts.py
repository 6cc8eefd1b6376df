"""VM-MCTS (ReST-RL Algorithms 2 and 3) and PRM-min on a scripted policy over a small known tree.

The tree (1 char = 1 token, "$" = EOS; the prompt "Q:1\\n" is 4 tokens). With n = 3 and the
scripted policy taking option ``j % len(options)`` for sample j:

    ""      -> "a\\nx$", "b\\ny$", "a\\nz$"   children A = "a\\n" (2 traces), B = "b\\n" (1)
    "a\\n"  -> "x$", "y$", "x$"              children X = "a\\nx$" (2, end), Y = "a\\ny$" (1, end)
    "b\\n"  -> "z$"                          child "b\\nz$" (3, end)

EchoTask: reward 1 when the last line is the problem's answer ("x").
"""

from __future__ import annotations

import math

import pytest
from search_fakes import CharTokenizer, EchoTask, ScriptedGenerator, ScriptedScorer

from searchrl.search.common import ActionSplitter, TokenCounter, request_seed
from searchrl.search.vm_mcts import VMMCTSConfig, collect_value_targets, prm_min_scores, uct, vm_mcts

SCRIPT = {"": ["a\nx$", "b\ny$", "a\nz$"], "a\n": ["x$", "y$", "x$"], "b\n": ["z$"]}
PROBLEM = {"q": "1", "answer": "x"}
VALUES = {"a\n": 0.6, "b\n": 0.2, "a\nx$": 0.9, "a\ny$": 0.1, "a\nz$": 0.97, "b\ny$": 0.3, "b\nz$": 0.25}


class CountingGenerator(ScriptedGenerator):
    """Records the number of requests of every ``generate`` call."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[int] = []

    def generate(self, prompts, params=None, **kw):
        self.batches.append(len(prompts))
        return super().generate(prompts, params, **kw)


class CountingTask(EchoTask):
    def __init__(self):
        self.batches: list[int] = []

    def score(self, problems, responses):
        self.batches.append(len(responses))
        return super().score(problems, responses)


class CountingScorer(ScriptedScorer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[int] = []

    def score(self, prompt_ids, state_ids):
        self.batches.append(len(state_ids))
        return super().score(prompt_ids, state_ids)


def expanded(gen):
    return [text for text, _ in gen.calls]


def by_state(records):
    tok = CharTokenizer()
    return {tok.decode(r["state_ids"], skip_special_tokens=False): (r["target"], r["visits"], r["end"])
            for r in records}


def tree_of(result):
    tok = CharTokenizer()
    return {tok.decode(n["state_ids"], skip_special_tokens=False): (n["visits"], pytest.approx(n["total"]))
            for n in result.meta["tree"]}


def test_uct_reads_ln_n_plus_one_as_one_plus_ln_n():
    assert uct(0.5, 4, 2, 0.4, 0.1) == pytest.approx(0.5 + 0.4 * math.sqrt((1 + math.log(4)) / 2.1))
    assert uct(0.0, 1, 0, 0.1, 0.1) == pytest.approx(0.1 * math.sqrt(10))


def test_config_checks_settings():
    assert (VMMCTSConfig().c_collect, VMMCTSConfig().c_decode, VMMCTSConfig().iterations) == (0.4, 0.1, 30)
    with pytest.raises(ValueError, match="select"):
        VMMCTSConfig(select="best-of")
    with pytest.raises(ValueError, match="eps"):
        VMMCTSConfig(eps=0.0)


# --------------------------------------------------------------------------- Algorithm 2

SCRIPT2 = {"": ["a\nx$", "b\ny$"], "a\n": ["x$", "y$"], "b\n": ["z$"]}


def collect(iterations, c=0.4, script=SCRIPT2, n=2, **kw):
    gen = ScriptedGenerator(script)
    cfg = VMMCTSConfig(iterations=iterations, n=n, c_collect=c, **kw)
    return gen, collect_value_targets(gen, EchoTask(), [PROBLEM], cfg)[0]


def test_collect_credits_rollouts_to_the_expanded_node_only():
    # iteration 1 expands the root: A = "a\n" (r 1), B = "b\n" (r 0), both at v0 = 0, N = U = 0;
    # iteration 2: A and B tie at UCT 0 + c sqrt(1 + ln 2 / 0.1): A, the first; its traces x (1), y (0);
    # iteration 3: A = 0.5 + 0.4 sqrt((1 + ln 4) / 2.1) = 0.93 < B = 0 + 0.4 sqrt((1 + ln 4) / 0.1) = 1.95
    gen, recs = collect(3)
    assert expanded(gen) == ["", "a\n", "b\n"]
    got = by_state(recs)
    # B's own rollout reward from iteration 1 was credited to the root, not to B: B has N = 2 (its expansion)
    assert got["b\n"] == (0.0, 2, False)
    assert got["a\n"] == (0.5, 2, False)
    assert got[""] == (pytest.approx(2 / 6), 6, False)
    # end states: every trace sampled, one record per distinct state, visits = gradings
    assert got["a\nx$"] == (1.0, 2, True)  # sampled at the root and at A
    assert got["a\ny$"] == (0.0, 1, True)
    assert got["b\ny$"] == (0.0, 1, True)
    assert got["b\nz$"] == (0.0, 2, True)  # two identical traces: one child, one record
    assert len(recs) == 7
    assert all(r["index"] == 0 and r["prompt_ids"] == CharTokenizer().encode("Q:1\n") for r in recs)


def test_collect_selected_end_states_get_their_reward_once():
    # iteration 4: A = 0.5 + 0.4 sqrt((1 + ln 6) / 2.1) > B = 0 + same: A; its children tie at 0: X = "a\nx$",
    # an end state: (1, 1) to X, A, root. Iteration 5: in A (N 3): X = 1 + 0.4 sqrt((1 + ln 3) / 1.1) = 1.55
    # < Y = 0 + 0.4 sqrt((1 + ln 3) / 0.1) = 1.83: Y, an end state: (0, 1).
    gen, recs = collect(5)
    assert expanded(gen) == ["", "a\n", "b\n"]  # end states are not expanded
    got = by_state(recs)
    assert got["a\n"] == (0.5, 4, False)  # U = 1 (rollouts) + 1 (X) + 0 (Y)
    assert got[""] == (pytest.approx(3 / 8), 8, False)
    assert got["b\n"] == (0.0, 2, False)
    assert got["a\nx$"] == (1.0, 3, True)
    assert got["a\ny$"] == (0.0, 2, True)


def test_collect_exploits_with_a_small_c():
    # c = 0.01: iteration 3 picks A (0.5 + 0.004 > 0 + 0.02), then X (tie at 0): no third expansion
    gen, recs = collect(3, c=0.01)
    assert expanded(gen) == ["", "a\n"]
    assert by_state(recs)["a\n"] == (pytest.approx(2 / 3), 3, False)


def test_collect_samples_what_is_left_of_max_tokens_and_cut_traces_are_end_states():
    gen, recs = collect(3, script={"": ["abcdefgh$"]}, n=1, max_tokens=5)
    assert expanded(gen) == [""] and gen.calls[0][1].max_tokens == 5 and gen.calls[0][1].stop is None
    got = by_state(recs)
    assert got["abcde"] == (0.0, 3, True)  # sampled once, then selected twice: an end state
    assert got[""] == (0.0, 3, False)
    gen, _ = collect(2, script={"": ["ab\ncdef$"]}, n=1, max_tokens=6)
    assert [p.max_tokens for _, p in gen.calls] == [6, 3]


# --------------------------------------------------------------------------- Algorithm 3

def decode_run(iterations, budget=None, select="best", problems=(PROBLEM,), gen=None, scorer=None, task=None):
    gen = gen or CountingGenerator(SCRIPT)
    scorer = scorer or CountingScorer(VALUES)
    cfg = VMMCTSConfig(iterations=iterations, n=3, select=select, keep_tree=True)
    res = vm_mcts(gen, scorer, task or EchoTask(), list(problems), cfg, budget_tokens=budget)
    return gen, scorer, res


def test_decode_child_visits_and_values_eq10():
    # root expansion: A = "a\n" starts 2 traces: N 2, U 2 * 0.6; B: N 1, U 0.2; root: N 3, U 1.4
    _, _, [res] = decode_run(1)
    tree = tree_of(res)
    assert tree["a\n"] == (2, 1.2) and tree["b\n"] == (1, 0.2) and tree[""] == (3, 1.4)
    assert res.meta["nodes"] == 3


def test_decode_selection_and_end_state_credit():
    # iteration 2: A = 0.6 + 0.1 sqrt((1 + ln 3) / 2.1) = 0.70 > B = 0.2 + 0.1 sqrt((1 + ln 3) / 1.1) = 0.34:
    # A; X = "a\nx$" N 2, U 1.8, Y N 1, U 0.1; A: N 5, U 1.2 + 1.9; root N 6, U 3.3.
    # iteration 3: A (0.62 + 0.07) > B (0.2 + 0.16); in A: X = 0.9 + 0.1 sqrt((1 + ln 5) / 2.1) = 1.01 >
    # Y = 0.1 + 0.1 sqrt((1 + ln 5) / 1.1) = 0.25: X, an end state: (v_X = 0.9, 1) to X, A, root.
    gen, _, [res] = decode_run(3)
    assert expanded(gen) == ["", "a\n"]
    tree = tree_of(res)
    assert tree["a\nx$"] == (3, 2.7) and tree["a\ny$"] == (1, 0.1)
    assert tree["a\n"] == (6, 4.0) and tree["b\n"] == (1, 0.2) and tree[""] == (7, 4.2)
    assert res.meta["iterations"] == 3


def test_decode_best_of_n_over_every_sampled_trace():
    _, scorer, [res] = decode_run(3)
    texts = [c.text for c in res.candidates]
    assert texts == ["a\nx", "b\ny", "a\nz", "a\nx", "a\ny", "a\nx"]
    assert [c.score for c in res.candidates] == [0.9, 0.3, 0.97, 0.9, 0.1, 0.9]
    assert res.chosen == 2 and res.response == "a\nz"
    assert [c.meta["iteration"] for c in res.candidates] == [0, 0, 0, 1, 1, 1]
    # every state scored once: children and traces share V_phi values
    assert sorted(scorer.calls) == sorted(VALUES.keys() - {"b\nz$"})
    # the same tree, chosen by majority vote: "x" (3 traces) wins
    _, _, [voted] = decode_run(3, select="vote")
    assert voted.response == "a\nx"


def test_decode_token_accounting_and_budget():
    # iteration 1: 3 traces of 4 tokens; iteration 2: "x$", "y$", "x$"; iteration 3: an end state (no sampling)
    _, _, [res] = decode_run(3)
    assert res.generated_tokens == 12 + 6
    # value tokens: 6 states scored ("a\n", "b\n" and four 4-token traces), each after the 4-token prompt
    assert res.value_tokens == 6 * 4 + 2 + 2 + 4 * 4
    _, _, [cut] = decode_run(3, budget=12)
    assert cut.generated_tokens == 12 and cut.meta["iterations"] == 1 and len(cut.candidates) == 3
    # the budget holds: a problem searches while it can pay one token for each of the n = 3 traces
    _, _, [short] = decode_run(3, budget=14)
    assert short.generated_tokens == 12 and short.meta["iterations"] == 1  # 2 tokens left < 3 traces
    gen, _, [cut] = decode_run(3, budget=15)  # 3 left: iteration 2's traces get one token each
    assert gen.calls[-1][1].max_tokens == 1 and cut.generated_tokens == 15 and cut.meta["iterations"] == 2
    assert len(cut.candidates) == 3 and tree_of(cut)["a\n"] == (2, 1.2)  # "x", "y", "x" cut: no child, no candidate
    _, _, [fits] = decode_run(3, budget=18)  # 6 left: "x$", "y$", "x$" fit their 2-token shares whole
    assert fits.generated_tokens == 18 and fits.meta["iterations"] == 2 and len(fits.candidates) == 6
    assert [c.finish_reason for c in fits.candidates] == ["stop"] * 6
    # cut after a whole first action: the action is a child (not an end state), the trace no candidate
    gen, scorer, [first] = decode_run(3, budget=6)
    assert gen.calls[0][1].max_tokens == 2 and first.generated_tokens == 6 and first.candidates == []
    assert tree_of(first)["a\n"] == (2, 1.2) and tree_of(first)["b\n"] == (1, 0.2) and first.response == ""
    assert not any(n["end"] for n in first.meta["tree"]) and sorted(scorer.calls) == ["a\n", "b\n"]


def test_decode_batches_all_problems_in_one_call_per_iteration():
    gen, scorer, task = CountingGenerator(SCRIPT), CountingScorer(VALUES), CountingTask()
    problems = [PROBLEM, {"q": "2", "answer": "z"}]
    cfg = VMMCTSConfig(iterations=3, n=3)
    res = vm_mcts(gen, scorer, task, problems, cfg, indices=[7, 9])
    assert gen.batches == [2, 2]  # iteration 3 selects end states only
    assert scorer.batches == [5, 5, 1, 1]  # per problem: 5 new states, then "a\ny$"
    assert task.batches == []  # decoding never asks the verifier
    assert [p.seed for _, p in gen.calls[:2]] == [request_seed(0, 7, 0, 0), request_seed(0, 9, 0, 0)]
    assert [r.index for r in res] == [7, 9] and [r.generated_tokens for r in res] == [18, 18]
    # a problem that spent its budget drops out; the other goes on
    gen = CountingGenerator(SCRIPT)
    vm_mcts(gen, CountingScorer(VALUES), EchoTask(), problems, cfg, budget_tokens=12)
    assert gen.batches == [2]


def test_collect_batches_all_problems_in_one_call_per_iteration():
    gen, task = CountingGenerator(SCRIPT), CountingTask()
    recs = collect_value_targets(gen, task, [PROBLEM, {"q": "2", "answer": "z"}], VMMCTSConfig(iterations=2, n=3))
    assert gen.batches == [2, 2] and task.batches == [6, 6]
    # the second problem's answer is "z": its root got reward 1 from "a\nz$" only
    assert by_state(recs[1])[""] == (pytest.approx(1 / 6), 6, False)
    assert by_state(recs[0])[""] == (pytest.approx(3 / 6), 6, False)


# --------------------------------------------------------------------------- PRM-min

def test_prm_min_scores_the_worst_step_in_one_call():
    tok = CharTokenizer()
    scorer = CountingScorer({"a\n": 0.8, "a\nb\n": 0.3, "a\nb\nc$": 0.9, "d$": 0.4}, default=-1.0)
    prompt = tok.encode("Q:1\n")
    counter = TokenCounter.zeros(2)
    got = prm_min_scores(scorer, ActionSplitter(tok, "\n"), [prompt, prompt],
                         [tok.encode("a\nb\nc$"), tok.encode("d$")], counter=counter, owners=[1, 0])
    assert got == [0.3, 0.4]
    assert scorer.batches == [3, 1] and scorer.calls == ["a\n", "a\nb\n", "a\nb\nc$", "d$"]
    assert counter.value == [4 + 2, 3 * 4 + 2 + 4 + 6]
    with pytest.raises(ValueError, match="prompts"):
        prm_min_scores(scorer, ActionSplitter(tok, "\n"), [prompt], [])
