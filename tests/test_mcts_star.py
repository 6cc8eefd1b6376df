"""MCTS* (ReST-MCTS*) on a scripted policy over a small known tree; every number is computed by hand.

The tree (responses; "$" = EOS; the chat prompt "Q:q\\n" is 4 tokens, 1 char = 1 token):

    ""  --expand-->  "A\\n" (.45)   "x$" (.1, end)   "C\\n" (.6)
    "A\\n"  --expand-->  "A\\nx\\n" (.7)  "A\\ny\\n" (.2)  "A\\nx\\n" (duplicate, merged)
    "A\\ny\\n"  --expand-->  "A\\ny\\nw$" (.95, end) three times (merged)
    greedy rollouts: "C\\n" -> "C\\nD\\n" (.2) -> "C\\nD\\nE\\n" (.4);  "A\\nx\\n" -> "A\\nx\\n$" (.9, end)

Iteration 1 expands the root and rolls out "C\\n" (highest V): V = .5 * .6 + .5 * max(.2, .4) = .5.
Iteration 2: at the root (N = 1) UCT is A .45 + .8, x .1 + .8, C .5 + .4 sqrt(2 ln 1 / 1) = .5: A.
A's rollout from "A\\nx\\n": .5 * .7 + .5 * .9 = .8; root V = (.8 + .5) / 2 = .65.
Iteration 3: root (N = 2): A .8 + .4 sqrt(2 ln 2) = 1.271 > x .9, C .971; at A (N = 1): Ax .8, Ay .2 + .8 = 1.0:
Ay. Its child "A\\ny\\nw$" is an end state (no rollout, V .95, one visit). Ay = .95, A = (.8 + .95) / 2 = .875,
root = (.875 * 2 + .5) / 3 = .75. Iteration 4 reaches "A\\ny\\nw$" (V .95 >= .9): the end gate stops.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from search_fakes import CharTokenizer, EchoTask, ScriptedGenerator, ScriptedScorer

from searchrl.search.common import request_seed
from searchrl.search.mcts_star import (
    MCTSStarConfig,
    Node,
    Tree,
    best_child,
    best_leaf,
    collect_value_targets,
    infer_value_targets,
    mcts_star,
    uct,
)

SCRIPT = {"": ["A\nx\ny\n$", "x$", "C\n$"], "A\n": ["x\n$", "y\n$", "x\n$"], "A\nx\n": ["$"], "A\ny\n": ["w$"],
          "C\n": ["D\nE\nF\n$"], "C\nD\n": ["E\nF\n$"], "C\nD\nE\n": ["F\n$"]}
VALUES = {"A\n": 0.45, "x$": 0.1, "C\n": 0.6, "C\nD\n": 0.2, "C\nD\nE\n": 0.4, "A\nx\n": 0.7, "A\ny\n": 0.2,
          "A\nx\n$": 0.9, "A\ny\nw$": 0.95, "C\nD\nE\nF\n$": 0.3}
# a second problem over the same script: C is worth .9 and its rollout reaches 1.0, so C passes the gate
VALUES_2 = {"A\n": 0.05, "x$": 0.05, "C\n": 0.9, "C\nD\n": 0.9, "C\nD\nE\n": 1.0, "C\nD\nE\nF\n$": 0.8}
PROBLEM = {"q": "q", "answer": "w"}
TOK = CharTokenizer()


def text(ids) -> str:
    return TOK.decode(ids, skip_special_tokens=False)


def nodes(result) -> dict[str, Node]:
    return {text(n.ids): n for n in result.meta["tree"].nodes}


def run(cfg: MCTSStarConfig | None = None, **kw):
    gen, scorer = ScriptedGenerator(SCRIPT), ScriptedScorer(VALUES)
    [res] = mcts_star(gen, scorer, EchoTask(), [PROBLEM], cfg or MCTSStarConfig(), **kw)
    return res, gen, scorer


class PromptScorer:
    """Values per problem (read from the prompt "Q:<q>\\n") and response text; records its batch sizes."""

    def __init__(self, tables: dict[str, dict[str, float]]):
        self.tables, self.batches = tables, []

    def score(self, prompt_ids, state_ids):
        self.batches.append(len(state_ids))
        return [self.tables[text(p)[2:-1]].get(text(s), 0.0) for p, s in zip(prompt_ids, state_ids)]


class CountingGenerator(ScriptedGenerator):
    def __init__(self, script):
        super().__init__(script)
        self.batches: list[int] = []

    def generate(self, prompts, params=None, use_tqdm=False, progress=None):
        self.batches.append(len(prompts))
        return super().generate(prompts, params)


def test_uct_by_hand_and_unvisited_bonus():
    cfg = MCTSStarConfig()
    tree = Tree(0, [])
    parent = tree.root
    parent.visits = 3
    a = tree.add(parent, [1], V=0.5)
    b = tree.add(parent, [2], V=0.875)
    c = tree.add(parent, [3], V=0.1)
    a.visits, b.visits = 1, 2
    assert uct(a, 3, cfg) == pytest.approx(0.5 + 0.4 * math.sqrt(2 * math.log(3) / 1))  # 1.09292
    assert uct(b, 3, cfg) == pytest.approx(0.875 + 0.4 * math.sqrt(2 * math.log(3) / 2))  # 1.29426
    assert uct(c, 3, cfg) == pytest.approx(0.1 + 0.8)  # never visited: V + inf
    assert best_child(parent, cfg) is b
    c.V = 0.6  # 1.4 beats 1.294
    assert best_child(parent, cfg) is c
    assert best_child(parent, dataclasses.replace(cfg, inf=0.5)) is b  # 1.1 loses


def test_first_iteration_rolls_out_best_child_without_its_own_value():
    res, gen, _ = run(MCTSStarConfig(iterations=1))
    n = nodes(res)
    assert set(n) == {"", "A\n", "x$", "C\n"}
    # best V seen = max(.2, .4) over the rollout states only (with the child's own .6 it would be .6)
    assert n["C\n"].V == pytest.approx(0.5 * 0.6 + 0.5 * 0.4)
    assert (n["C\n"].visits, n["A\n"].visits, n["x$"].visits) == (1, 0, 0)
    assert (n["A\n"].V, n["x$"].V) == (0.45, 0.1)  # not rolled out: scored only
    assert n[""].V == pytest.approx(0.5) and n[""].visits == 1
    assert n["x$"].finished and not n["C\n"].finished
    (t0, p0), (t1, p1), (t2, p2), (t3, p3) = gen.calls
    assert (t0, p0.n, p0.temperature, p0.stop, p0.max_tokens) == ("", 3, 0.7, ["\n"], 64)
    assert p0.seed == request_seed(0, 0, 0, 0)
    assert (t1, p1.n, p1.temperature, t2, p2.temperature) == ("C\n", 1, 0.7, "C\nD\n", 0.7)  # sampled, as the code
    assert p1.max_tokens == 64 and p1.seed == request_seed(0, 0, n["C\n"].id, 0, "roll", 0, 0)
    assert (t3, p3.stop) == ("C\n", None)  # the final answer: best leaf C (.5 > .45), completed


def test_steps_of_several_lines():
    """step_lines=2: each sampled first line is continued by one more sampled line (one batched call for
    all children); a rollout step is two greedy lines, stopping at an end."""
    res, gen, _ = run(MCTSStarConfig(iterations=1, step_lines=2))
    n = nodes(res)
    assert set(n) == {"", "A\nx\n", "x$", "C\nD\n"}  # "x$" ended after one line
    assert n["A\nx\n"].V == pytest.approx(0.5 * 0.7 + 0.5 * 0.9)  # rolled out (highest V): reaches "A\nx\n$"
    assert n["C\nD\n"].V == 0.2 and n["C\nD\n"].visits == 0
    (t0, p0), (t1a, p1a), (t1b, p1b), (t2, p2) = gen.calls[:4]
    assert (t0, p0.n) == ("", 3) and (t1a, t1b, p1a.n, p1a.temperature) == ("A\n", "C\n", 1, 0.7)
    assert p1a.seed == request_seed(0, 0, 0, 0, "line", 0, 0) and p1b.seed == request_seed(0, 0, 0, 0, "line", 2, 0)
    assert (t2, p2.temperature) == ("A\nx\n", 0.7)  # the rollout ended at EOS after one line
    _, greedy, _ = run(MCTSStarConfig(iterations=1, step_lines=2, rollout_greedy=True))
    assert greedy.calls[3][1].temperature == 0.0 and greedy.calls[3][0] == "A\nx\n"
    assert [(t, p.stop) for t, p in gen.calls[4:]] == [("A\nx\n", None)]  # the best leaf, completed
    assert res.response == "A\nx\n" and res.candidates[res.chosen].score == 0.9


def test_selection_expansion_and_backpropagation_by_hand():
    res, gen, _ = run(MCTSStarConfig(iterations=3))
    expanded = [t for t, p in gen.calls if p.n == 3]
    rolled = [t for t, p in gen.calls if p.n == 1]
    assert expanded == ["", "A\n", "A\ny\n"]  # iteration 2 takes unvisited A (.45 + .8) over visited C (.5)
    assert rolled == ["C\n", "C\nD\n", "A\nx\n"]  # "A\nx\n$" is an end state: the rollout stops there
    n = nodes(res)
    assert [text(c.ids) for c in n["A\n"].children] == ["A\nx\n", "A\ny\n"]  # duplicate line merged
    assert [text(c.ids) for c in n["A\ny\n"].children] == ["A\ny\nw$"]
    expect = {"": (0.75, 3), "A\n": (0.875, 2), "x$": (0.1, 0), "C\n": (0.5, 1), "A\nx\n": (0.8, 1),
              "A\ny\n": (0.95, 1), "A\ny\nw$": (0.95, 1)}
    assert {k: (pytest.approx(v.V), v.visits) for k, v in n.items()} == expect


def test_end_gate_stops_and_returns_the_gated_node():
    res, gen, scorer = run()
    assert res.meta["gated"] and res.meta["iterations"] == 4
    assert nodes(res)[""].visits == 3  # iteration 4 stopped at selection, before backpropagation
    assert [(c.text, c.score, c.meta["source"]) for c in res.candidates] == [
        ("x", 0.1, "tree"), ("A\nx\n", 0.9, "rollout"), ("A\ny\nw", 0.95, "tree")]
    assert res.response == "A\ny\nw" and text(res.candidates[res.chosen].response_ids) == "A\ny\nw$"
    assert res.meta["final_node"] == nodes(res)["A\ny\nw$"].id
    assert len(gen.calls) == 6  # the gated node is an end state: no completion
    # generated: it 1: 3 lines of 2 + rollout 2 + 2; it 2: 3 x 2 + "$"; it 3: 3 x "w$" (duplicates count)
    assert res.generated_tokens == (6 + 2 + 2) + (6 + 1) + 6 == 23
    # value: 4 prompt tokens + state tokens per scored state
    assert res.value_tokens == (3 * 4 + 6 + 8 + 10) + (8 + 8 + 9) + 10 == 71
    assert len(scorer.calls) == 3 + 2 + 2 + 1 + 1


def test_collect_runs_every_iteration_past_the_gate():
    res, _, _ = run(MCTSStarConfig(iterations=6), collect=True)
    assert not res.meta["gated"] and res.meta["iterations"] == 6
    n = nodes(res)
    # it 4 selects the end state .95 (visits only); it 5: root A 1.2845 > C 1.1660, then Ax 1.3929 > Ay 1.3693:
    # Ax is expanded to its end state (.9); it 6: A again, then Ay 1.4210 > Ax 1.3710: end state, visits only
    assert n[""].visits == 6 and n["A\nx\n$"].parent is n["A\nx\n"]
    assert (n["A\nx\n"].V, n["A\ny\n"].visits) == (pytest.approx(0.9), 3)
    assert n["A\n"].V == pytest.approx((0.9 * 2 + 0.95 * 3) / 5)
    assert n[""].V == pytest.approx((0.93 * 5 + 0.5) / 6)
    # "A\nx\n$" was found by a rollout first, then became a node: one candidate
    assert [c.text for c in res.candidates] == ["x", "A\nx\n", "A\ny\nw"]
    assert res.response == "A\ny\nw"  # no gate: the best leaf (.95)


def test_budget_holds_and_a_cut_completion_gives_the_best_response_found():
    res, gen, _ = run(budget_tokens=10)  # iteration 1 generates exactly 10
    assert res.meta["iterations"] == 1 and not res.meta["gated"]
    # leaves: A .45, x .1, C .5 -> C, not an end state; its completion cannot be paid: not sent
    assert res.meta["final_node"] == nodes(res)["C\n"].id and len(gen.calls) == 3
    assert res.generated_tokens == 10 and res.value_tokens == 36
    assert res.response == "x" and res.candidates[res.chosen].score == 0.1  # the one finished response found
    res, gen, _ = run(budget_tokens=11)  # 1 left: no iteration 2 (3 lines), the completion gets "D": cut
    assert res.meta["iterations"] == 1 and gen.calls[-1][1].max_tokens == 1 and res.generated_tokens == 11
    assert res.response == "x" and len(res.candidates) == 1
    # iteration 2 expands A with 2-token shares (its lines fit), the rollout gets the last token ("$"): 17
    res, gen, _ = run(budget_tokens=17)
    assert res.meta["iterations"] == 2 and res.generated_tokens == 17
    assert [p.max_tokens for _, p in gen.calls[3:]] == [2, 1]
    assert res.response == "A\nx\n" and res.candidates[res.chosen].meta["source"] == "rollout"  # .9
    one = MCTSStarConfig(iterations=1)
    res, gen, _ = run(one, budget_tokens=17)  # 7 left: the completion "D\nE\nF\n$" fits whole
    t, p = gen.calls[-1]
    assert (t, p.temperature, p.stop, p.max_tokens) == ("C\n", 0.0, None, 7)
    c = res.candidates[res.chosen]
    assert (c.text, c.score, c.meta["source"], c.finish_reason) == ("C\nD\nE\nF\n", 0.3, "completion", "stop")
    assert res.generated_tokens == 17 and res.value_tokens == 36 + (4 + 9)
    res, _, _ = run(one, budget_tokens=16)  # one token short: cut, the best finished response instead
    assert res.generated_tokens == 16 and res.response == "x"
    for budget in range(0, 40, 3):  # never past the budget
        res, _, _ = run(budget_tokens=budget)
        assert res.generated_tokens <= budget


def test_weighted_vote_over_all_finished_responses():
    res, _, _ = run(MCTSStarConfig(select="weighted-vote"))
    # answers (last line): "x" .1, "x" .9, "w" .95: "x" sums to 1.0 and wins; its best member is "A\nx\n"
    assert res.response == "A\nx\n"
    assert run()[0].response == "A\ny\nw"


def test_max_length_state_is_an_end_state():
    gen, scorer = ScriptedGenerator({"": ["abcdef\n$"]}), ScriptedScorer({"abcd": 0.3})
    [res] = mcts_star(gen, scorer, EchoTask(), [PROBLEM], MCTSStarConfig(iterations=3, max_tokens=4))
    n = nodes(res)
    assert set(n) == {"", "abcd"} and n["abcd"].finished
    assert gen.calls[0][1].max_tokens == 4 and len(gen.calls) == 1  # no rollout, no completion
    assert n[""].visits == 3 and n["abcd"].visits == 3  # an end state selected: visits only
    assert [(c.text, c.finish_reason, c.score) for c in res.candidates] == [("abcd", "length", 0.3)]
    assert res.response == "abcd"


def test_rollout_all_children_option():
    gen = CountingGenerator(SCRIPT)
    [res] = mcts_star(gen, ScriptedScorer(VALUES), EchoTask(), [PROBLEM],
                      MCTSStarConfig(iterations=1, rollout_children="all"))
    n = nodes(res)
    assert n["A\n"].V == pytest.approx(0.5 * 0.45 + 0.5 * 0.9)  # "A\nx\n" .7 then "A\nx\n$" .9
    assert (n["x$"].V, n["C\n"].V) == (0.1, pytest.approx(0.5))
    assert all(c.visits == 1 for c in n[""].children)
    assert n[""].V == pytest.approx((0.675 + 0.1 + 0.5) / 3)
    assert gen.batches == [1, 2, 2, 1]  # expansion; 2 rollout steps for A and C together; completion of A


def test_two_problems_advance_in_lockstep_with_batched_calls():
    tables = {"q": VALUES, "r": VALUES_2}
    problems = [{"q": "q", "answer": "w"}, {"q": "r", "answer": "F"}]
    gen, scorer = CountingGenerator(SCRIPT), PromptScorer(tables)
    both = mcts_star(gen, scorer, EchoTask(), problems, MCTSStarConfig(), indices=[5, 9])
    # it 1: expansion, 2 rollout steps for both; it 2: problem "r" gated (C .95), "q" expands A and rolls out once;
    # it 3: "q" expands Ay; it 4: "q" gated; then one completion ("r"'s C)
    assert gen.batches == [2, 2, 2, 1, 1, 1, 1]
    assert scorer.batches == [3, 3, 1, 1, 1, 1, 2, 1, 1, 1]  # one value call per problem
    assert [p.seed for t, p in gen.calls[:2]] == [request_seed(0, 5, 0, 0), request_seed(0, 9, 0, 0)]
    assert [r.index for r in both] == [5, 9]
    assert both[1].meta["gated"] and both[1].meta["iterations"] == 2 and both[1].response == "C\nD\nE\nF\n"
    assert (both[1].generated_tokens, both[1].value_tokens) == (10 + 7, 36 + 13)
    assert (both[0].generated_tokens, both[0].value_tokens) == (23, 71)
    for k, r in enumerate(both):  # batching changes nothing
        [alone] = mcts_star(ScriptedGenerator(SCRIPT), PromptScorer(tables), EchoTask(), [problems[k]],
                            MCTSStarConfig(), indices=[r.index])
        assert [(n.ids, n.V, n.visits) for n in alone.meta["tree"].nodes] == \
            [(n.ids, n.V, n.visits) for n in r.meta["tree"].nodes]
        assert (alone.response, alone.generated_tokens, alone.value_tokens) == \
            (r.response, r.generated_tokens, r.value_tokens)


def hand_tree() -> tuple[Tree, dict[str, Node]]:
    """root -> a -> a1 -> a11 (correct end), a12 -> a121 (wrong end), a122 (unfinished);
    a -> a2 (wrong end); root -> b -> b1 (wrong end); root -> c (unfinished leaf)."""
    t = Tree(3, [7, 7])
    n: dict[str, Node] = {}
    for name, parent, end in [("a", None, False), ("a1", "a", False), ("a11", "a1", True), ("a12", "a1", False),
                              ("a121", "a12", True), ("a122", "a12", False), ("a2", "a", True),
                              ("b", None, False), ("b1", "b", True), ("c", None, False)]:
        p = t.root if parent is None else n[parent]
        n[name] = t.add(p, p.ids + [len(t.nodes)], finished=end)
    return t, n


def test_value_targets_by_hand():
    t, n = hand_tree()
    recs = infer_value_targets(t, lambda node: node is n["a11"])
    by_node = {name: r["target"] for name, node in n.items() for r in recs if r["state_ids"] == node.ids}
    # m: a11 1, a1 2, a 3, root 4; off the path a12, a121 take a1's 2, a2 a's 3, b, b1 the root's 4
    # V: a = 0 + 1/3; a1 = 1/3 + (2/3)/2; a11 = 2/3 + (1/3)/1; a12 = 2/3 - (1/3)/2; a121 = 1/2 - (1/2)/2;
    # a2 = 1/3 - (2/3)/3; b = max(0, 0 - 1/4); b1 = 0
    expect = {"a": 1 / 3, "a1": 2 / 3, "a11": 1.0, "a12": 0.5, "a121": 0.25, "a2": 1 / 9, "b": 0.0, "b1": 0.0}
    assert by_node == pytest.approx(expect)
    assert len(recs) == len(expect)  # no root, no a122 or c (nothing below them ever ended)
    assert [r["state_ids"] for r in recs] == [n[k].ids for k in ["a", "a1", "a11", "a12", "a121", "a2", "b", "b1"]]
    assert all(r["index"] == 3 and r["prompt_ids"] == [7, 7] for r in recs)
    assert infer_value_targets(t, lambda node: False) == []  # no correct end state: no targets


def test_value_targets_take_the_nearest_correct_leaf():
    t, n = hand_tree()
    deep = t.add(n["a122"], n["a122"].ids + [99], finished=True)  # a second correct end, deeper than a11
    recs = infer_value_targets(t, lambda node: node in (n["a11"], deep))
    got = {tuple(r["state_ids"]): r["target"] for r in recs}
    # a12 is now on a correct path, 2 steps above deep: m = 3, V = 2/3 + (1/3)/3 = 7/9; a122: m = 2
    assert got[tuple(n["a12"].ids)] == pytest.approx(7 / 9)
    assert got[tuple(n["a122"].ids)] == pytest.approx(7 / 9 + (2 / 9) / 2)
    assert got[tuple(deep.ids)] == pytest.approx(1.0)
    assert got[tuple(n["a121"].ids)] == pytest.approx(7 / 9 - (2 / 9) / 3)  # off path: a12's m = 3
    assert got[tuple(n["a1"].ids)] == pytest.approx(2 / 3)  # min over children: still 2


def test_collect_value_targets_end_to_end():
    problems = [PROBLEM, {"q": "q", "answer": "none"}]
    out = collect_value_targets(ScriptedGenerator(SCRIPT), ScriptedScorer(VALUES), EchoTask(), problems,
                                MCTSStarConfig(iterations=6))
    # the tree of test_collect_runs_every_iteration_past_the_gate; "A\ny\nw$" is correct (answer "w")
    # m: Ayw 1, Ay 2, A 3, root 4; Ax, Ax$ take A's 3; x$ the root's; C never reaches an end
    got = [(text(r["state_ids"]), r["target"]) for r in out[0]]
    assert got == [("A\n", pytest.approx(1 / 3)), ("A\nx\n", pytest.approx(1 / 9)), ("A\nx\n$", 0.0),
                   ("A\ny\n", pytest.approx(2 / 3)), ("A\ny\nw$", pytest.approx(1.0)), ("x$", 0.0)]
    assert all(r["prompt_ids"] == TOK.encode("Q:q\n") and r["index"] == 0 for r in out[0])
    assert out[1] == []  # no correct end state for the second problem


def test_config_help_and_checks():
    assert all(f.metadata.get("help") for f in dataclasses.fields(MCTSStarConfig))
    cfg = MCTSStarConfig()
    assert (cfg.iterations, cfg.branch, cfg.c, cfg.inf, cfg.end_gate, cfg.roll_forward_steps, cfg.alpha,
            cfg.temperature, cfg.max_tokens, cfg.max_line_tokens) == (100, 3, 0.4, 0.8, 0.9, 2, 0.5, 0.7, 512, 64)
    with pytest.raises(ValueError):
        MCTSStarConfig(select="majority")
    with pytest.raises(ValueError):
        MCTSStarConfig(rollout_children="some")


def test_best_leaf_prefers_the_first_on_ties():
    t = Tree(0, [])
    a = t.add(t.root, [1], V=0.5)
    t.add(t.root, [2], V=0.5)
    assert best_leaf(t) is a
