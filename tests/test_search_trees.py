"""What a search did, kept: each search method's tree as node dicts (``TreeMethod.tree``), and the
``trees-<method>-<budget>.jsonl`` files the comparison writes from them (``search.keep_trees``).

The searches run on the scripted policies of their own tests (one character per token, "$" = EOS), so
every node below is known by hand; the smoke comparison's files are checked in ``test_search_pipeline``.
"""

from __future__ import annotations

import json

import pytest
from search_fakes import CharTokenizer, EchoTask, ScriptedGenerator, ScriptedScorer
from test_mcts_star import PROBLEM as STAR_PROBLEM
from test_mcts_star import SCRIPT as STAR_SCRIPT
from test_mcts_star import VALUES as STAR_VALUES
from test_vm_mcts import PROBLEM as VM_PROBLEM
from test_vm_mcts import SCRIPT as VM_SCRIPT
from test_vm_mcts import VALUES as VM_VALUES

from searchrl.search import registry
from searchrl.search.beam import BeamConfig, beam_search
from searchrl.search.beam import search_tree as beam_tree
from searchrl.search.common import action_texts, mark_chosen, tree_node
from searchrl.search.mcts_star import MCTSStarConfig, mcts_star
from searchrl.search.mcts_star import search_tree as star_tree
from searchrl.search.vm_mcts import VMMCTSConfig, vm_mcts
from searchrl.search.vm_mcts import search_tree as vm_tree

TOK = CharTokenizer()


def check_tree(nodes: list[dict], response: str) -> list[int]:
    """The invariants every kept tree holds; returns the chosen path's ids, root first."""
    assert [n["id"] for n in nodes] == list(range(len(nodes)))
    assert nodes[0]["parent"] is None and nodes[0]["action"] == ""
    assert all(n["parent"] is not None and 0 <= n["parent"] < n["id"] for n in nodes[1:])
    assert all(set(n) >= {"id", "parent", "action", "value", "visits", "terminal", "reward", "chosen"} for n in nodes)
    chosen = [n for n in nodes if n["chosen"]]
    leaves = [n for n in chosen if n["id"] not in {m["parent"] for m in chosen}]
    assert len(leaves) == 1 and leaves[0]["terminal"]
    path, node = [], leaves[0]
    while node is not None:
        path.append(node["id"])
        node = None if node["parent"] is None else nodes[node["parent"]]
    assert sorted(path) == [n["id"] for n in chosen]  # one path, from the root
    assert "".join(nodes[i]["action"] for i in reversed(path)) == response
    return path[::-1]


def brief(nodes: list[dict], *extra: str) -> list[tuple]:
    return [(n["parent"], n["action"], n["value"] if n["value"] is None else pytest.approx(n["value"]),
             n["visits"], n["terminal"], n["chosen"], *(n.get(k) for k in extra)) for n in nodes]


def test_every_tree_method_declares_a_tree():
    assert {m.name for m in registry.methods() if isinstance(m, registry.TreeMethod) and m.tree is not None} == {
        "vm-mcts", "orm-mcts", "mcts-star", "beam", "dvts"}


def test_vm_mcts_tree_holds_its_nodes_and_every_sampled_trace():
    # test_vm_mcts's decode_run(3): root N 7 U 4.2; A "a\n" N 6 U 4.0; B "b\n" N 1 U .2; X "a\nx$" N 3 U 2.7 and
    # Y "a\ny$" N 1 U .1 (end states). Traces: iteration 0 from the root "a\nx$" (via A), "b\ny$" (via B),
    # "a\nz$" (via A, V .97: best-of-N's choice); iteration 1 from A: "a\nx$", "a\ny$", "a\nx$" = X, Y, X.
    gen, scorer = ScriptedGenerator(VM_SCRIPT), ScriptedScorer(VM_VALUES)
    [res] = vm_mcts(gen, scorer, EchoTask(), [VM_PROBLEM], VMMCTSConfig(iterations=3, n=3))
    before = ([c.text for c in res.candidates], res.chosen)
    nodes = vm_tree(res, TOK)
    assert brief(nodes, "kind") == [
        (None, "", 0.6, 7, False, True, "tree"),
        (0, "a\n", 4.0 / 6, 6, False, True, "tree"),
        (0, "b\n", 0.2, 1, False, False, "tree"),
        (1, "x", 0.9, 3, True, False, "tree"),
        (1, "y", 0.1, 1, True, False, "tree"),
        (1, "x", 0.9, None, True, False, "trace"),  # iteration 0's "a\nx$": a trace of its own, through A
        (2, "y", 0.3, None, True, False, "trace"),
        (1, "z", 0.97, None, True, True, "trace"),
    ]
    assert check_tree(nodes, res.response) == [0, 1, 7] and res.response == "a\nz"
    assert ([c.text for c in res.candidates], res.chosen) == before  # reading the tree changes nothing


def test_mcts_star_tree_with_a_rollout_leaf():
    # test_mcts_star's tree (module docs there): the end gate passes at "A\ny\nw$"; the rollout that reached
    # "A\nx\n$" is a leaf under "A\nx\n" (its action: only EOS, no text)
    gen, scorer = ScriptedGenerator(STAR_SCRIPT), ScriptedScorer(STAR_VALUES)
    [res] = mcts_star(gen, scorer, EchoTask(), [STAR_PROBLEM], MCTSStarConfig())
    nodes = star_tree(res, TOK)
    assert brief(nodes, "kind") == [
        (None, "", 0.75, 3, False, True, "tree"),
        (0, "A\n", 0.875, 2, False, True, "tree"),
        (0, "x", 0.1, 0, True, False, "tree"),
        (0, "C\n", 0.5, 1, False, False, "tree"),
        (1, "x\n", 0.8, 1, False, False, "tree"),
        (1, "y\n", 0.95, 1, False, True, "tree"),
        (5, "w", 0.95, 1, True, True, "tree"),
        (4, "", 0.9, None, True, False, "rollout"),
    ]
    assert check_tree(nodes, res.response) == [0, 1, 5, 6]
    # two iterations: the best leaf "A\nx\n" is completed to "A\nx\n$", which the rollout found first
    gen, scorer = ScriptedGenerator(STAR_SCRIPT), ScriptedScorer(STAR_VALUES)
    [res] = mcts_star(gen, scorer, EchoTask(), [STAR_PROBLEM], MCTSStarConfig(iterations=2))
    assert check_tree(star_tree(res, TOK), res.response) == [0, 1, 4, 6] and res.response == "A\nx\n"


def test_beam_tree_holds_every_block_and_which_survived():
    # test_beam's first case: step 0 samples "ab" .9, "cd" .8 (beam 0), "ef" .1, "gh" .2 (beam 1); the top-2
    # keeps both children of beam 0. Step 1: "ab" -> "1$" .5, "2$" .3; "cd" -> "3$" .7, "4$" .6: cd3, cd4 kept.
    from test_beam import run

    script = {"": ["ab$", "cd$", "ef$", "gh$"], "ab": ["1$", "2$"], "cd": ["3$", "4$"]}
    values = {"ab": 0.9, "cd": 0.8, "ef": 0.1, "gh": 0.2, "ab1$": 0.5, "ab2$": 0.3, "cd3$": 0.7, "cd4$": 0.6}
    [res], _, _ = run(script, values, BeamConfig(num_blocks=4, width=2, block_size=2, select="best"))
    nodes = beam_tree(res, TOK)
    assert brief(nodes, "kept", "step", "finish_reason") == [
        (None, "", None, None, False, True, None, None, None),
        (0, "ab", 0.9, None, False, False, True, 0, None),
        (0, "cd", 0.8, None, False, True, True, 0, None),
        (0, "ef", 0.1, None, False, False, False, 0, None),
        (0, "gh", 0.2, None, False, False, False, 0, None),
        (1, "1", 0.5, None, True, False, False, 1, "stop"),
        (1, "2", 0.3, None, True, False, False, 1, "stop"),
        (2, "3", 0.7, None, True, True, True, 1, "stop"),
        (2, "4", 0.6, None, True, False, True, 1, "stop"),
    ]
    assert check_tree(nodes, res.response) == [0, 2, 7] and res.response == "cd3"


def test_dvts_repetitions_start_at_the_one_root():
    from test_beam import run

    script = {"": ["a$", "b$"]}
    cfg = BeamConfig(num_blocks=2, width=2, block_size=4, reps=2, select="best")
    [res], _, _ = run(script, {"a$": 0.3, "b$": 0.6}, cfg)
    nodes = beam_tree(res, TOK)
    assert [(n["parent"], n["rep"]) for n in nodes[1:]] == [(0, 0), (0, 0), (0, 1), (0, 1)]
    check_tree(nodes, res.response)


class SpaceTokenizer:
    """Decodes like SentencePiece: a leading space of the decoded text is dropped (token 1 = " x", 2 = "y")."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join({1: " x", 2: "y"}[i] for i in ids).lstrip(" ")


def test_actions_add_up_to_the_response_where_a_piece_decodes_differently_alone():
    tok = SpaceTokenizer()
    states, parents = [[], [2], [2, 1], [2, 1, 1]], [None, 0, 1, 2]
    assert action_texts(tok, states, parents) == ["", "y", " x", " x"]  # alone, " x" would decode as "x"
    assert "".join(action_texts(tok, states, parents)) == tok.decode(states[-1]) == "y x x"


def test_mark_chosen_marks_the_path_only():
    nodes = [tree_node(0, None, ""), tree_node(1, 0, "a"), tree_node(2, 0, "b"), tree_node(3, 2, "c")]
    assert [n["chosen"] for n in mark_chosen(nodes, 3)] == [True, False, True, True]
    assert tree_node(4, 3, "d", value=1, visits=2.0)["value"] == 1.0 and isinstance(nodes[0]["visits"], type(None))


def test_tree_files_are_json_lines_bounded_by_keep_trees(tmp_path):
    from searchrl.pipelines.search import grade_chosen, keeps, trees_current, write_trees

    nasty = 'say "hi"\n</script><script>alert(1)</script>\\ \u2028 é'

    def per():
        out = []
        for i in range(5):
            nodes = mark_chosen([tree_node(0, None, ""), tree_node(1, 0, nasty, terminal=True)], 1)
            grade_chosen(nodes, 1.0)
            out.append({"index": i, "correct": True, "tree": {"index": i, "response": nasty, "nodes": nodes}})
        return out

    assert [keeps(k, 3) for k in (0, 3, 4, -1)] == [False, False, True, True]
    path = tmp_path / "trees-x-10.jsonl"
    records = per()
    assert write_trees(path, "k1", records, keep_trees=2) == [] and all("tree" not in r for r in records)
    text = path.read_text(encoding="utf-8")
    # "<", U+2028 as JSON escapes: the same JSON, safe in a <script>, one line whoever splits it
    assert "<" not in text and "\u2028" not in text and len(text.splitlines()) == 2
    lines = [json.loads(line) for line in text.splitlines()]
    assert [r["index"] for r in lines] == [0, 1] and {r["key"] for r in lines} == {"k1"}
    assert lines[0]["response"] == nasty and lines[0]["nodes"][1]["action"] == nasty
    assert lines[0]["nodes"][1]["reward"] == 1.0 and lines[0]["nodes"][0]["reward"] is None
    assert trees_current(path, "k1", [0, 1]) and not trees_current(path, "k2", [0, 1])
    assert not trees_current(path, "k1", [0, 1, 2])
    write_trees(path, "k1", per(), keep_trees=-1)
    assert len(path.read_text().splitlines()) == 5
    # a kept problem without a tree (a shard searched before keep_trees covered it) is reported
    records = per()
    del records[1]["tree"]
    assert write_trees(path, "k1", records, keep_trees=3) == [1] and len(path.read_text().splitlines()) == 2
    # none kept: no file, and an older one (of another result) goes
    write_trees(path, "k1", per(), keep_trees=0)
    assert not path.exists() and trees_current(path, "k1", [])


def test_keep_trees_is_checked_and_keys_no_result():
    from searchrl.config import SearchConfig
    from searchrl.pipelines.search import pool_settings
    from searchrl.settings import SettingError

    assert SearchConfig().keep_trees == 20 and SearchConfig(keep_trees=-1).keep_trees == -1
    with pytest.raises(SettingError, match="keep_trees"):
        SearchConfig(keep_trees=-2)
    assert pool_settings(SearchConfig(keep_trees=3)) == pool_settings(SearchConfig())
