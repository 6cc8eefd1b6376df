"""A search's result for a problem does not depend on which problems share its batch or shard.

Each search (VGS beam search, DVTS, VM-MCTS, MCTS*, and the PRM-min scores of best-of-N) runs on the
same problems three ways: all in one call, one problem per call, and in shards of two (each shard with
its problems' indices in the split, as ``searchrl compare-search`` runs them); chosen responses,
correctness, token counts and every candidate with its score must be identical.

The policy is a :class:`HashGenerator`: a sample's lines are drawn from a hash of its request's seed
and sample index (a greedy request: of the text so far), so only the searches' seeds decide what is
sampled. Two scorers:

* :class:`PaddedScorer`: table values from a hash of the state, in steps of 0.2 (many exact ties
  between different states), plus an error of up to 1e-6 that depends on the longest sequence of the
  call, as a value model that pads a call to its longest sequence has (float32 sums in another order:
  about 1e-7 there, larger here so that it decides every tie it touches);
* :func:`micro_value`: a real :class:`~searchrl.models.value.ValueModel` (a two-layer Llama), whose
  padded batches do change values in the last bits.
"""

from __future__ import annotations

import pytest
import torch
from search_fakes import EchoTask, ScriptedGenerator

from searchrl.search.beam import BeamConfig, beam_search
from searchrl.search.common import ActionSplitter, TokenCounter, problem_prompts
from searchrl.search.mcts_star import MCTSStarConfig, mcts_star
from searchrl.search.vm_mcts import VMMCTSConfig, prm_min_scores, vm_mcts
from searchrl.seeding import stable_seed

# prompts of different lengths, so that who shares a call changes the longest sequence in it
PROBLEMS = [{"q": "q", "answer": "a"}, {"q": "rrrrrrr", "answer": "b"}, {"q": "ss", "answer": "a"},
            {"q": "tttttttttttt", "answer": "c"}]
LINES = 4  # a response has at most this many lines


class HashGenerator(ScriptedGenerator):
    """Continues a response with lines of one or two letters from ``"abc"``, then EOS, all drawn from
    a hash of (request seed, sample index, text so far); greedy requests hash the text only."""

    def __init__(self):
        super().__init__({})
        self.batches: list[int] = []  # requests per generate call

    def generate(self, prompts, params=None, use_tqdm=False, progress=None):
        self.batches.append(len(prompts))
        out = []
        for p, sp in zip(prompts, params if isinstance(params, list) else [params] * len(prompts)):
            so_far = self._response_text(p)
            self.script[so_far] = [self._continuation(so_far, None if sp.temperature == 0 else (sp.seed, j))
                                   for j in range(sp.n)]
            out += super().generate([p], sp)
        return out

    @staticmethod
    def _continuation(so_far: str, key) -> str:
        text = ""
        for k in range(so_far.count("\n"), LINES):
            h = stable_seed("line", so_far, key, k)
            text += "abc"[h % 3] * (1 + h // 3 % 2) + "\n"
            if h // 6 % 4 == 0:  # ends early now and then
                break
        return text + "$"


class PaddedScorer:
    """Table values (0.2 to 0.8 by a hash of the state) plus an error set by the call's longest sequence
    (see module docs); ``calls`` records each call's prompts (as texts) and number of states."""

    def __init__(self):
        self.tokenizer = HashGenerator().tokenizer
        self.calls: list[tuple[set[str], int]] = []

    def score(self, prompt_ids, state_ids):
        self.calls.append(({self.tokenizer.decode(p) for p in prompt_ids}, len(state_ids)))
        longest = max(len(p) + len(s) for p, s in zip(prompt_ids, state_ids))
        out = []
        for p, s in zip(prompt_ids, state_ids):
            text = self.tokenizer.decode(list(p) + list(s), skip_special_tokens=False)
            value = 0.2 * (1 + stable_seed("value", text) % 4)
            out.append(value + 1e-6 * (stable_seed("padding", text, longest) % 3 - 1))
        return out


def micro_value():
    """A real value model: a two-layer Llama over the fakes' character ids (up to 128), random head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchrl.models.value import ValueModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=130, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                      initializer_range=0.3, pad_token_id=0)
    model = ValueModel.from_policy(LlamaForCausalLM(cfg), "scalar", seed=0).eval()
    with torch.no_grad():
        model.value_head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return model


SEARCHES = {
    "beam": lambda gen, scorer, problems, indices: beam_search(
        gen, scorer, EchoTask(), problems, BeamConfig(num_blocks=4, width=2, block_size=3, max_tokens=14,
                                                     select="best"), indices=indices),
    "dvts": lambda gen, scorer, problems, indices: beam_search(
        gen, scorer, EchoTask(), problems, BeamConfig(num_blocks=4, width=2, block_size=3, max_tokens=14, reps=2),
        budget_tokens=60, indices=indices),
    "vm-mcts": lambda gen, scorer, problems, indices: vm_mcts(
        gen, scorer, EchoTask(), problems, VMMCTSConfig(iterations=6, n=3, max_tokens=14), indices=indices),
    "mcts-star": lambda gen, scorer, problems, indices: mcts_star(
        gen, scorer, EchoTask(), problems, MCTSStarConfig(iterations=6, branch=3, max_tokens=14, end_gate=2.0),
        indices=indices),
    "mcts-star-vote": lambda gen, scorer, problems, indices: mcts_star(
        gen, scorer, EchoTask(), problems, MCTSStarConfig(iterations=8, branch=3, max_tokens=14, end_gate=0.8,
                                                          select="weighted-vote", rollout_children="all"),
        budget_tokens=80, indices=indices),
}


def outcome(results) -> list[tuple]:
    """What must not change: per problem, its index, chosen response, correctness, token counts and
    every candidate (response ids, score, finish reason)."""
    task = EchoTask()
    scores = task.score([PROBLEMS[r.index] for r in results], [r.response for r in results])
    return [(r.index, r.chosen, r.response, s.correct, r.generated_tokens, r.value_tokens,
             [(c.response_ids, c.score, c.finish_reason) for c in r.candidates])
            for r, s in zip(results, scores)]


def batchings(search, make_scorer) -> dict[str, list[tuple]]:
    """The outcome of ``search`` on every problem: all at once, one per call, and in shards of two."""
    def run(chunks):
        gen, scorer = HashGenerator(), make_scorer()  # one generator and scorer for all the calls of a run
        return outcome([r for chunk in chunks
                        for r in search(gen, scorer, [PROBLEMS[i] for i in chunk], list(chunk))])

    n = len(PROBLEMS)
    return {"together": run([range(n)]), "alone": run([[i] for i in range(n)]),
            "shards of two": run([range(0, 2), range(2, n)])}


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_results_do_not_depend_on_batching(name):
    got = batchings(SEARCHES[name], PaddedScorer)
    assert got["alone"] == got["together"]
    assert got["shards of two"] == got["together"]
    # the problems differ, and the searches chose among several responses
    assert len({o[2] for o in got["together"]}) > 1 and sum(len(o[6]) > 1 for o in got["together"]) >= 2


@pytest.mark.parametrize("name", ["beam", "mcts-star", "vm-mcts"])
def test_a_real_value_model_scores_a_problem_the_same_in_any_batch(name):
    value = micro_value()
    got = batchings(SEARCHES[name], lambda: value)
    assert got["alone"] == got["together"] and got["shards of two"] == got["together"]


def test_prm_min_scores_of_a_problem_do_not_depend_on_other_problems():
    """Best-of-N by the minimum step value: each owner's responses are scored in calls of their own."""
    value, tok = micro_value(), HashGenerator().tokenizer
    split = ActionSplitter(tok, "\n")
    prompts = problem_prompts(tok, EchoTask(), PROBLEMS)
    responses = [tok.encode(HashGenerator._continuation("", (stable_seed("pool", i), j)))
                 for i in range(len(PROBLEMS)) for j in range(3)]
    owners = [i for i in range(len(PROBLEMS)) for _ in range(3)]
    pr = [prompts[o] for o in owners]
    for scorer in (value, PaddedScorer()):
        counter = TokenCounter.zeros(len(PROBLEMS))
        together = prm_min_scores(scorer, split, pr, responses, counter=counter, owners=owners)
        alone = [v for i in range(len(PROBLEMS)) for v in
                 prm_min_scores(scorer, split, [prompts[i]] * 3, responses[3 * i:3 * i + 3], owners=[0] * 3)]
        assert together == alone
        if scorer is value:  # one pass over each response
            assert counter.value == [sum(len(prompts[i]) + len(r) for r in responses[3 * i:3 * i + 3])
                                     for i in range(len(PROBLEMS))]


def test_one_value_call_per_problem_and_step():
    """Lockstep generation stays batched over problems; each problem's values come from calls of its own
    (so what else is in the batch cannot change them)."""
    gen, scorer = HashGenerator(), PaddedScorer()
    results = beam_search(gen, scorer, EchoTask(), PROBLEMS[:3], BeamConfig(num_blocks=4, width=2, block_size=3))
    steps = max(r.meta["steps"] for r in results)
    assert gen.batches[0] == 3 * 2 and len(gen.batches) == steps  # every active beam of every problem
    assert [prompts for prompts, _ in scorer.calls[:3]] == [{"Q:" + p["q"] + "\n"} for p in PROBLEMS[:3]]
    assert all(len(prompts) == 1 for prompts, _ in scorer.calls)
    assert len(scorer.calls) == sum(r.meta["steps"] for r in results)
