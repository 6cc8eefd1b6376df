"""VGS block-wise beam search and DVTS on a scripted policy and value table (every count by hand).

The chat template of the fakes turns problem ``q`` into the prompt ``"Q:" + q + "\\n"`` (4 tokens for a
one-letter ``q``), one character per token, EOS ``"$"``. Which script option a sample takes is decided by
its request's seed (:func:`picker`), so each beam, repetition and problem reads its own options.
"""

from __future__ import annotations

import pytest
from search_fakes import EchoTask, ScriptedGenerator, ScriptedScorer

from searchrl.search.beam import BeamConfig, beam_search
from searchrl.search.common import request_seed


class BatchedGenerator(ScriptedGenerator):
    """Also records each ``generate`` call's response texts (one list per call)."""

    def __init__(self, script, pick=None):
        super().__init__(script, pick=pick)
        self.batches: list[list[str]] = []

    def generate(self, prompts, params=None, use_tqdm=False, progress=None):
        before = len(self.calls)
        out = super().generate(prompts, params, use_tqdm, progress)
        self.batches.append([text for text, _ in self.calls[before:]])
        return out


class BatchedScorer(ScriptedScorer):
    def __init__(self, values, default=0.0):
        super().__init__(values, default)
        self.batches = 0

    def score(self, prompt_ids, state_ids):
        self.batches += 1
        return super().score(prompt_ids, state_ids)


def picker(script: dict[str, list[str]], cfg: BeamConfig, indices=(0,), choose=None, steps: int = 10):
    """``pick`` for :class:`ScriptedGenerator`: sample ``j`` of the request of (problem ``i``, rep ``r``, step
    ``t``, beam ``b``) takes option ``choose(i, r, t, b, j)`` (default ``b * width + j``), modulo the options."""
    names = {request_seed(cfg.seed, i, r, t, b): (i, r, t, b)
             for i in indices for r in range(cfg.reps) for t in range(steps) for b in range(cfg.beams)}
    choose = choose or (lambda i, r, t, b, j: b * cfg.width + j)

    def pick(text: str, j: int, seed: int) -> int:
        return choose(*names[seed], j) % len(script.get(text, ["$"]))

    return pick


def run(script, values, cfg, problems=({"q": "q", "answer": ""},), choose=None, indices=None, **kw):
    gen = BatchedGenerator(script, picker(script, cfg, indices or range(len(problems)), choose))
    scorer = BatchedScorer(values)
    return beam_search(gen, scorer, EchoTask(), list(problems), cfg, indices=indices, **kw), gen, scorer


def texts(result):
    return [c.text for c in result.candidates]


def test_global_top_k_keeps_both_children_of_one_beam():
    # 2 beams; step 0: beam 0 samples "ab", "cd", beam 1 "ef", "gh": both children of beam 0 survive, beam 1 dies
    script = {"": ["ab$", "cd$", "ef$", "gh$"], "ab": ["1$", "2$"], "cd": ["3$", "4$"]}
    values = {"ab": 0.9, "cd": 0.8, "ef": 0.1, "gh": 0.2, "ab1$": 0.5, "ab2$": 0.3, "cd3$": 0.7, "cd4$": 0.6}
    cfg = BeamConfig(num_blocks=4, width=2, block_size=2, select="best")
    [res], gen, scorer = run(script, values, cfg)
    assert gen.batches == [["", ""], ["ab", "cd"]]  # step 1 extends the two children, nothing of "ef"/"gh"
    # step 1: the top 2 of ab1 .5, ab2 .3, cd3 .7, cd4 .6 are both children of "cd"; both end with EOS
    assert texts(res) == ["cd3", "cd4"] and [c.score for c in res.candidates] == [0.7, 0.6]
    assert [c.finish_reason for c in res.candidates] == ["stop", "stop"]
    assert [c.meta for c in res.candidates] == [{"rep": 0, "beam": 0, "finished": True, "node": 7},
                                                {"rep": 0, "beam": 1, "finished": True, "node": 8}]
    # meta["blocks"]: the 8 blocks sampled, for search_tree (tests/test_search_trees.py)
    assert res.chosen == 0 and res.response == "cd3" and res.meta["steps"] == 2 and len(res.meta["blocks"]) == 8
    # 8 blocks of 2 tokens; 8 states scored, each read with the 4 prompt tokens: 4 x (4+2) + 4 x (4+4)
    assert res.generated_tokens == 16 and res.value_tokens == 24 + 32
    assert scorer.calls == ["ab", "cd", "ef", "gh", "ab1$", "ab2$", "cd3$", "cd4$"]


def test_ties_go_to_the_first_candidate():
    script = {"": ["a$", "b$", "c$", "d$"]}
    cfg = BeamConfig(num_blocks=4, width=2, block_size=4)
    [res], _, _ = run(script, {"a$": 0.2, "b$": 0.5, "c$": 0.5, "d$": 0.5}, cfg)
    assert texts(res) == ["b", "c"]  # b, c, d tie at .5: the first two in candidate order win
    # survivors take the beam slots in candidate order, not in rank order
    [res], _, _ = run(script, {"a$": 0.2, "b$": 0.5, "c$": 0.6, "d$": 0.1}, cfg)
    assert texts(res) == ["b", "c"] and [c.meta["beam"] for c in res.candidates] == [0, 1]


def test_finished_beams_are_frozen_and_still_output():
    # step 0 keeps "a$" (finished) and "bc"; step 1 extends "bc" alone and keeps 1 of its 2 children
    script = {"": ["a$", "bc", "de", "fg"], "bc": ["h$", "i$"]}
    values = {"a$": 0.9, "bc": 0.8, "de": 0.1, "fg": 0.1, "bch$": 0.2, "bci$": 0.3}
    cfg = BeamConfig(num_blocks=4, width=2, block_size=2)
    [res], gen, scorer = run(script, values, cfg)
    assert gen.batches == [["", ""], ["bc"]]  # one active beam left: one request
    assert scorer.calls[4:] == ["bch$", "bci$"]  # the frozen beam is neither extended nor rescored
    # k = 1 active beam: the better child "bci$" (.3) takes slot 1; "a$" (.9) does not compete any more
    assert texts(res) == ["a", "bci"] and [c.score for c in res.candidates] == [0.9, 0.3]
    assert [c.meta["finished"] for c in res.candidates] == [True, True]
    # 4 blocks (a$, bc, de, fg) of 2 tokens + 2 blocks of 2 tokens
    assert res.generated_tokens == 12 and res.meta["steps"] == 2 and len(res.meta["blocks"]) == 6


def test_block_size_and_max_tokens_cut_blocks():
    # 1 beam, blocks of 3 tokens, responses of at most 5: the second block is asked for 2 tokens only
    script = {"": ["abcdefg$", "xyz$"], "abc": ["defg$", "XY$"]}
    values = {"abc": 0.9, "xyz": 0.5, "abcde": 0.4, "abcXY": 0.6}
    cfg = BeamConfig(num_blocks=2, width=2, block_size=3, max_tokens=5, select="best")
    [res], gen, _ = run(script, values, cfg)
    assert [p.max_tokens for _, p in gen.calls] == [3, 2]
    assert [p.n for _, p in gen.calls] == [2, 2]
    assert texts(res) == ["abcXY"] and res.candidates[0].score == 0.6
    assert res.candidates[0].finish_reason == "length" and res.candidates[0].meta["finished"]
    assert res.generated_tokens == 3 + 3 + 2 + 2


def test_sampling_settings_and_seeds_reach_the_generator():
    script = {"": ["a$"]}
    cfg = BeamConfig(num_blocks=4, width=2, block_size=4, temperature=0.3, top_p=0.5, seed=11)
    _, gen, _ = run(script, {}, cfg, indices=[9])
    assert [(p.temperature, p.top_p, p.n, p.seed) for _, p in gen.calls] == [
        (0.3, 0.5, 2, request_seed(11, 9, 0, 0, 0)), (0.3, 0.5, 2, request_seed(11, 9, 0, 0, 1))]


def test_dvts_pools_repetitions_with_their_own_seeds():
    # 1 beam per search, 2 repetitions: rep r's samples take options 2r and 2r+1
    script = {"": ["a$", "b$", "c$", "d$"]}
    values = {"a$": 0.9, "b$": 0.1, "c$": 0.2, "d$": 0.3}
    cfg = BeamConfig(num_blocks=2, width=2, block_size=4, reps=2, select="best")
    [res], gen, _ = run(script, values, cfg, choose=lambda i, r, t, b, j: 2 * r + j)
    assert gen.batches == [["", ""]]  # both repetitions in one call
    assert [p.seed for _, p in gen.calls] == [request_seed(0, 0, 0, 0, 0), request_seed(0, 0, 1, 0, 0)]
    assert len(res.candidates) == cfg.beams * cfg.reps == 2
    assert texts(res) == ["a", "d"] and [c.meta["rep"] for c in res.candidates] == [0, 1]
    assert res.chosen == 0 and res.generated_tokens == 8


@pytest.mark.parametrize("select,chosen", [("best", 0), ("vote", 2), ("weighted-vote", 2)])
def test_final_choice_over_pooled_outputs(select, chosen):
    # 3 repetitions of 1 beam end with x (.9), y (.5), z/y (.6): answer (last line) y twice, summing to 1.1 > .9
    script = {"": ["x$", "x$", "y$", "y$", "z\ny$", "z\ny$"]}
    values = {"x$": 0.9, "y$": 0.5, "z\ny$": 0.6}
    cfg = BeamConfig(num_blocks=2, width=2, block_size=4, reps=3, select=select)
    [res], _, _ = run(script, values, cfg, choose=lambda i, r, t, b, j: 2 * r + j)
    assert texts(res) == ["x", "y", "z\ny"] and [c.score for c in res.candidates] == [0.9, 0.5, 0.6]
    assert res.chosen == chosen  # vote and weighted vote: the y group, by its highest-scored member


def test_budget_stops_a_problem_and_keeps_its_unfinished_beams():
    # 1 beam, blocks of 2 tokens, 2 samples: 4 tokens a step; values all 0, so sample 0 always wins
    script = {"": ["abcdef$", "zzzzzz$"], "ab": ["cdef$"]}
    cfg = BeamConfig(num_blocks=2, width=2, block_size=2)
    [full], gen, _ = run(script, {}, cfg)
    assert gen.batches == [[""], ["ab"], ["abcd"]] and texts(full) == ["abcd"]
    assert full.generated_tokens == 4 + 4 + 2 and full.candidates[0].finish_reason == "stop"  # "abcd" -> "$"
    # 8: step 2's blocks fit whole; 8 spent, step 3 cannot be paid: the beam stays unfinished
    [res], gen, _ = run(script, {}, cfg, budget_tokens=8)
    assert gen.batches == [[""], ["ab"]] and res.generated_tokens == 8
    [c] = res.candidates
    assert (c.text, c.score, c.finish_reason, c.meta["finished"]) == ("abcd", 0.0, "length", False)
    assert res.chosen == 0 and res.meta["steps"] == 2
    # 7: step 2's two blocks share the 3 tokens left, one each: cut, the beam frozen unfinished
    [res], gen, _ = run(script, {}, cfg, budget_tokens=7)
    assert gen.batches == [[""], ["ab"]] and res.generated_tokens == 6
    [c] = res.candidates
    assert (c.text, c.finish_reason, c.meta["finished"]) == ("abc", "budget", False)
    [res], gen, _ = run(script, {}, cfg, budget_tokens=0)
    assert gen.batches == [] and texts(res) == [""] and res.candidates[0].score is None
    assert res.generated_tokens == res.value_tokens == 0


def test_problems_advance_in_lockstep_one_call_per_step():
    # problem 0 (index 5, "q") goes 2 steps; problem 1 (index 7, "rr": 5 prompt tokens) takes option 2 = "c$"
    # and ends at step 0
    script = {"": ["ab", "xx", "c$"], "ab": ["d$"]}
    values = {"ab": 0.9, "xx": 0.1, "c$": 0.5, "abd$": 0.8}
    cfg = BeamConfig(num_blocks=2, width=2, block_size=2)
    problems = [{"q": "q", "answer": ""}, {"q": "rr", "answer": ""}]

    def choose(i, r, t, b, j):
        return j if i == 5 else 2

    res, gen, scorer = run(script, values, cfg, problems=problems, choose=choose, indices=[5, 7])
    assert gen.batches == [["", ""], ["ab"]] and scorer.batches == 3  # value calls: one per problem and step
    assert [r.index for r in res] == [5, 7]
    assert [texts(r) for r in res] == [["abd"], ["c"]]
    assert [r.generated_tokens for r in res] == [2 + 2 + 2 + 2, 2 + 2]
    assert [r.value_tokens for r in res] == [2 * (4 + 2) + 2 * (4 + 4), 2 * (5 + 2)]
    assert [r.meta["steps"] for r in res] == [2, 1]
    # a problem's samples do not depend on what else is in the batch
    [alone], _, _ = run(script, values, cfg, problems=problems[1:], choose=choose, indices=[7])
    assert alone.candidates == res[1].candidates


def test_generator_that_cannot_continue_finishes_the_beam():
    class Short(BatchedGenerator):  # returns 1 token when asked for 2, without EOS (its context is full)
        def generate(self, prompts, params=None, use_tqdm=False, progress=None):
            out = super().generate(prompts, params, use_tqdm, progress)
            for o in out:
                for c in o.outputs:
                    c.token_ids, c.finish_reason = c.token_ids[:1], "length"
            return out

    gen = Short({"": ["ab$"]})
    cfg = BeamConfig(num_blocks=2, width=2, block_size=2)
    [res] = beam_search(gen, ScriptedScorer({}), EchoTask(), [{"q": "q"}], cfg)
    assert gen.batches == [[""]] and texts(res) == ["a"] and res.candidates[0].finish_reason == "length"


@pytest.mark.parametrize("kw,msg", [
    ({"num_blocks": 6, "width": 4}, "divisible by width"),
    ({"width": 0}, "width = 0: must be >= 1"),
    ({"block_size": 0}, "block_size = 0: must be >= 1"),
    ({"reps": 0}, "reps = 0: must be >= 1"),
    ({"top_p": 0.0}, "top_p"),
    ({"temperature": -1.0}, "temperature"),
    ({"select": "max"}, "unknown select 'max'"),
])
def test_config_is_checked(kw, msg):
    with pytest.raises(ValueError, match=msg):
        BeamConfig(**kw)


def test_defaults_and_bad_indices():
    cfg = BeamConfig()
    assert (cfg.num_blocks, cfg.width, cfg.beams, cfg.reps, cfg.select) == (8, 2, 4, 1, "weighted-vote")
    with pytest.raises(ValueError, match="2 indices for 1 problems"):
        beam_search(ScriptedGenerator({}), ScriptedScorer({}), EchoTask(), [{"q": "q"}], cfg, indices=[0, 1])
