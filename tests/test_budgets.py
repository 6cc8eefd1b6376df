"""Budgets hold: a search's generated tokens per problem never exceed ``budget_tokens``.

:func:`searchrl.search.common.generate_counted` shares what a problem has left equally among the
samples it asks for in one call, sends nothing it cannot pay one token a sample for, and marks a
sample its share cut (``finish_reason == "budget"``)."""

from __future__ import annotations

import pytest
from search_fakes import EchoTask, ScriptedGenerator, ScriptedScorer

from searchrl.engine.types import SamplingParams
from searchrl.search.beam import BeamConfig, beam_search
from searchrl.search.common import BUDGET, TokenCounter, generate_counted
from searchrl.search.mcts_star import MCTSStarConfig, mcts_star
from searchrl.search.vm_mcts import VMMCTSConfig, vm_mcts


def test_shares_cut_max_tokens_and_unpaid_requests_are_not_sent():
    gen = ScriptedGenerator({"": ["abcdef$"]})
    counter = TokenCounter.zeros(2, budget=10)
    counter.generated[0] = 3  # problem 0 has 7 left for 2 + 1 samples: 2 tokens each
    params = [SamplingParams(n=2, max_tokens=64), SamplingParams(n=1, max_tokens=64),
              SamplingParams(n=1, max_tokens=4)]
    outs = generate_counted(gen, [[], [], []], params, [0, 0, 1], counter)
    assert [p.max_tokens for _, p in gen.calls] == [2, 2, 4]  # problem 1's 10 left cut nothing
    assert [[c.finish_reason for c in o.outputs] for o in outs] == [[BUDGET, BUDGET], [BUDGET], ["length"]]
    assert counter.generated == [3 + 6, 4] and counter.left(0) == 1 and counter.affords(0) and not counter.affords(0, 2)
    # 1 token left for 2 samples: nothing sent, two empty outputs
    gen.calls.clear()
    [out] = generate_counted(gen, [[]], SamplingParams(n=2, max_tokens=64), [0], counter)
    assert gen.calls == [] and [(c.token_ids, c.finish_reason) for c in out.outputs] == [([], BUDGET)] * 2
    assert counter.generated[0] == 9
    # a sample that ends within its share is not marked
    [out] = generate_counted(ScriptedGenerator({"": ["a$"]}), [[]], SamplingParams(max_tokens=64), [0],
                             TokenCounter.zeros(1, budget=2))
    assert out.outputs[0].finish_reason == "stop"
    with pytest.raises(ValueError, match="budget_tokens must be >= 0"):
        TokenCounter.zeros(1, budget=-1)


SCRIPT = {"": ["a\nb\nc\nd\n$", "x\ny$", "a\nq\n$"], "a\n": ["b\nc\n$", "z$"], "a\nb\n": ["c\nd\n$"]}


@pytest.mark.parametrize("budget", [0, 1, 2, 5, 7, 11, 13, 20, 33, 50])
def test_no_search_goes_past_its_budget(budget):
    task, problems = EchoTask(), [{"q": "1", "answer": "d"}, {"q": "2", "answer": "y"}]
    runs = [(vm_mcts, VMMCTSConfig(iterations=6, n=3)),
            (mcts_star, MCTSStarConfig(iterations=6, step_lines=2)),
            (beam_search, BeamConfig(num_blocks=4, width=2, block_size=3)),
            (beam_search, BeamConfig(num_blocks=2, width=2, block_size=3, reps=3))]
    for search, cfg in runs:
        results = search(ScriptedGenerator(SCRIPT), ScriptedScorer({"a\n": 0.5}), task, problems, cfg,
                         budget_tokens=budget)
        for r in results:
            assert r.generated_tokens <= budget, (search.__name__, cfg, r.generated_tokens)
