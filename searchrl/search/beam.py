"""Value-guided block-wise beam search and DVTS (Value-Guided Search, VGS).

Why
---
A value model that scores *partial* responses lets a search prune bad reasoning early
instead of paying for whole responses, as best-of-N does. VGS (Wang et al., "Value-Guided
Search for Efficient Chain-of-Thought Reasoning"; published code kaiwenw/value-guided-search,
``inference_eval.py``, ``--search_type beam2``) does it in the simplest way: a beam search
over **blocks** of tokens, with the value of the last token of each candidate as its score.

Algorithm (one search)
----------------------
With ``N`` = :attr:`BeamConfig.num_blocks` candidate blocks per step and width ``w``:

1. ``N / w`` beams start at the empty response.
2. Each step, every **active** (unfinished) beam samples ``w`` blocks of at most
   ``block_size`` tokens (one request with ``n = w``, never past ``max_tokens`` in all), so
   a step makes at most ``N`` candidates: ``beam + block``.
3. Every candidate is scored by the value model at its last token (``V(prompt + beam + block)``).
4. A **global top-k** over all candidates of the search keeps ``k`` = the number of active
   beams (the two children of one beam can both survive while another beam dies; ties go to
   the candidate that came first: beams in order, samples in order).
5. A kept candidate that ended with EOS, or reached ``max_tokens``, is **finished and
   frozen**: it is never extended again, no longer counts as active, and stays one of the
   ``N / w`` outputs. The search ends when no beam is active.

**DVTS** (diverse verifier tree search) runs ``reps`` independent searches per problem (seeds
differ by the repetition) and pools their ``(N / w) x reps`` outputs; VGS calls ``N x reps`` its
budget (blocks per step, the cost of best-of-``N x reps`` when blocks are whole responses).
The final response is chosen over the pooled outputs by :func:`~searchrl.search.bon.select`
(``best``, ``vote`` or ``weighted-vote``, the VGS default being the value-weighted majority
vote), each output scored by the value of its last token.

Here
----
* All problems and all repetitions advance in lockstep: one :func:`generate_counted` and one
  :func:`score_counted` call per step, over every active beam of every problem and repetition
  (the latter asks the value model once per problem, for all of its repetitions' candidates).
  The request of beam ``b`` of repetition ``r`` of problem ``i`` at step ``t`` is seeded with
  ``request_seed(seed, i, r, t, b)``, and a problem's values come from calls of its own, so a
  problem's samples and its top-k do not depend on the batch; the survivors of a step take the
  active beams' slots in candidate order.
* ``block_size`` defaults to 32 tokens (VGS: 4096 with a 16384-token limit) and ``max_tokens``
  to 512: our policies are tiny and their responses short, and a block should still hold a
  few lines so the value model sees meaningful progress between decisions.
* ``budget_tokens`` (generated tokens per problem, every repetition together) holds
  (:mod:`.common`, "Budgets hold"): a problem takes a step while it can pay one token for each
  block its active beams ask for, and the blocks of its last step share what is left. A block
  the budget cut freezes its beam (finish reason ``"budget"``, ``meta["finished"] = False``);
  the beams of a problem that stops stay as they are. Such incomplete responses are still
  candidates (a beam never extended is the empty response, unscored): at a budget too small for
  a whole response, the search returns the best partial one.
* A block shorter than asked that does not end with EOS means the generator could go no
  further (its context is full): that beam is finished too, with finish reason ``"length"``.
* Every block sampled is recorded (``meta["blocks"]``: the beam state it extended, its score,
  whether it survived its step's top-k; each candidate's ``meta["node"]`` is its final block), and
  :func:`search_tree` turns the record into node dicts: blocks as children of the states they extended.

As search methods (:mod:`.registry`)
------------------------------------
Both use the 3-class classifier (``search.classifier``), else the scalar value model, and the
settings ``search.beam``. VGS states its budget in whole responses, so a token budget B becomes
one through the mean response length L of the comparison's pool:

* ``beam``: one search with ``num_blocks`` N = B / L rounded down to a multiple of the width
  (at least one beam) (:func:`blocks_for_budget`);
* ``dvts``: ``search.beam.num_blocks`` per search and ``reps`` = round(B / (N L)) searches, at
  least one (:func:`reps_for_budget`).

Both also get B as ``budget_tokens``, so a problem stops once it spent it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.types import SamplingParams  # torch-free
from . import bon
from .config import BeamConfig
from .common import (
    BUDGET,
    Candidate,
    SearchResult,
    TokenCounter,
    decode,
    eos_ids,
    generate_counted,
    problem_prompts,
    request_seed,
    score_counted,
    tree_from_states,
)
from .registry import TreeMethod


@dataclass
class _Block:
    """A sampled block as a node of the problem's record: the beam state it extended (its node), the
    state it made (``ids``), the value model's score, why it ended its beam (None: it did not), its
    repetition and step, and whether it survived the step's top-k."""

    parent: int
    ids: list[int]
    score: float
    finish_reason: str | None
    rep: int
    step: int
    kept: bool


@dataclass
class _Beam:
    ids: list[int] = field(default_factory=list)
    score: float | None = None
    finish_reason: str | None = None  # None while active
    node: int = 0  # its block's node in the problem's record (0: the empty response, the root)

    @property
    def active(self) -> bool:
        return self.finish_reason is None


def beam_search(generator, scorer, task, problems: Sequence[dict], cfg: BeamConfig, *,
                budget_tokens: int | None = None, indices: Sequence[int] | None = None) -> list[SearchResult]:
    """VGS block-wise beam search (DVTS with ``cfg.reps > 1``) on every problem; one result per problem.

    ``indices``: each problem's index (seeds and :attr:`SearchResult.index`; default ``0..``).
    ``budget_tokens``: generated tokens per problem, never exceeded (see module docs).
    """
    idx = list(range(len(problems))) if indices is None else list(indices)
    if len(idx) != len(problems):
        raise ValueError(f"{len(idx)} indices for {len(problems)} problems")
    tok = generator.tokenizer
    prompts = problem_prompts(tok, task, problems)
    eos = eos_ids(tok)
    counter = TokenCounter.zeros(len(problems), budget_tokens)
    searches = [[[_Beam() for _ in range(cfg.beams)] for _ in range(cfg.reps)] for _ in problems]
    steps = [0] * len(problems)  # steps each problem took (its requests' step, in their seeds)
    # per problem, every block sampled (node id = position + 1; read by search_tree, changes nothing)
    blocks: list[list[_Block]] = [[] for _ in problems]
    while True:
        # every active beam of every problem (not out of budget) and repetition: (problem, rep, slot)
        active = [(p, r, b) for p in range(len(problems))
                  if counter.affords(p, cfg.width * sum(beam.active for beams in searches[p] for beam in beams))
                  for r in range(cfg.reps) for b, beam in enumerate(searches[p][r]) if beam.active]
        if not active:
            break
        asked = [min(cfg.block_size, cfg.max_tokens - len(searches[p][r][b].ids)) for p, r, b in active]
        params = [SamplingParams(n=cfg.width, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=m,
                                 seed=request_seed(cfg.seed, idx[p], r, steps[p], b))
                  for (p, r, b), m in zip(active, asked)]
        outs = generate_counted(generator, [prompts[p] + searches[p][r][b].ids for p, r, b in active], params,
                                [p for p, _, _ in active], counter)
        # candidates, grouped by search: (problem, rep) -> [(ids, finish reason or None, the beam's node)]
        cands: dict[tuple[int, int], list[tuple[list[int], str | None, int]]] = {}
        for (p, r, b), m, out in zip(active, asked, outs):
            beam = searches[p][r][b]
            for o in out.outputs:
                block = [int(t) for t in o.token_ids]
                ids = beam.ids + block
                if o.finish_reason == BUDGET:
                    reason = BUDGET
                elif block and block[-1] in eos:
                    reason = "stop"
                elif len(ids) >= cfg.max_tokens or len(block) < m:  # length limit, or the generator's context is full
                    reason = "length"
                else:
                    reason = None
                cands.setdefault((p, r), []).append((ids, reason, beam.node))
        order = list(cands)
        owners = [p for p, r in order for _ in cands[(p, r)]]
        values = score_counted(scorer, [prompts[p] for p in owners],
                               [ids for key in order for ids, _, _ in cands[key]], owners, counter)
        start = 0
        for p, r in order:
            group = cands[(p, r)]
            vals = values[start:start + len(group)]
            start += len(group)
            slots = [b for b, beam in enumerate(searches[p][r]) if beam.active]
            top = sorted(sorted(range(len(group)), key=lambda i: -vals[i])[:len(slots)])  # stable: ties, first wins
            first = len(blocks[p]) + 1  # node id of the group's first block
            blocks[p] += [_Block(parent, ids, v, reason, r, steps[p], i in top)
                          for i, ((ids, reason, parent), v) in enumerate(zip(group, vals))]
            for b, i in zip(slots, top):
                ids, reason, _ = group[i]
                searches[p][r][b] = _Beam(ids, vals[i], reason, first + i)
        for p in {p for p, _, _ in active}:
            steps[p] += 1
    return [_result(task, tok, problems[p], idx[p], searches[p], steps[p], counter, p, cfg, blocks[p])
            for p in range(len(problems))]


def _result(task, tok, problem: dict, index: int, search: list[list[_Beam]], steps: int, counter: TokenCounter,
            p: int, cfg: BeamConfig, blocks: list[_Block]) -> SearchResult:
    cands = [Candidate(response_ids=list(beam.ids), text=decode(tok, beam.ids), score=beam.score,
                       finish_reason=beam.finish_reason or "length",
                       meta={"rep": r, "beam": b, "finished": beam.finish_reason in ("stop", "length"),
                             "node": beam.node})
             for r, beams in enumerate(search) for b, beam in enumerate(beams)]
    chosen = bon.select_for(task, problem, cfg.select, [c.text for c in cands], [c.score for c in cands])
    return SearchResult(index=index, candidates=cands, chosen=chosen, generated_tokens=counter.generated[p],
                        value_tokens=counter.value[p], meta={"steps": steps, "blocks": blocks})


def search_tree(result: SearchResult, tokenizer) -> list[dict[str, Any]]:
    """One :func:`beam_search` result's blocks as node dicts (:func:`.common.tree_node`): the root (the empty
    response every beam of every repetition starts from), then every block sampled, a child of the beam
    state it extended, in the order sampled, with the value model's score of ``beam + block`` as ``value``,
    ``"kept"`` (it survived its step's top-k), ``"rep"``, ``"step"`` and ``"finish_reason"`` (None while it
    could go on). Terminal: the block finished its beam, or the search answered with its state (the final
    beams: the candidates); no visits. ``chosen`` marks the path to the chosen beam."""
    blocks: list[_Block] = result.meta["blocks"]
    states = [[]] + [b.ids for b in blocks]
    parents: list[int | None] = [None] + [b.parent for b in blocks]
    fields: list[dict[str, Any]] = [{"terminal": False}] + [
        {"value": b.score, "terminal": b.finish_reason is not None, "kept": b.kept, "rep": b.rep, "step": b.step,
         "finish_reason": b.finish_reason} for b in blocks]
    for c in result.candidates:
        fields[c.meta["node"]]["terminal"] = True
    chosen = None if result.chosen is None else result.candidates[result.chosen].meta["node"]
    return tree_from_states(tokenizer, states, parents, fields, chosen)


def blocks_for_budget(cfg: BeamConfig, budget: int, mean_response_tokens: Callable[[], float]) -> BeamConfig:
    """``beam`` at budget B: as many blocks per step as whole responses fit B (a multiple of the width,
    at least one beam), one search."""
    mean = max(mean_response_tokens(), 1.0)
    return dataclasses.replace(cfg, num_blocks=max(cfg.width, int(budget / mean) // cfg.width * cfg.width), reps=1)


def reps_for_budget(cfg: BeamConfig, budget: int, mean_response_tokens: Callable[[], float]) -> BeamConfig:
    """``dvts`` at budget B: as many searches of ``num_blocks`` whole responses as fit B, at least one."""
    mean = max(mean_response_tokens(), 1.0)
    return dataclasses.replace(cfg, reps=max(1, round(budget / (cfg.num_blocks * mean))))


SEARCH_METHODS = (
    TreeMethod(name="beam", label="VGS beam (w=2)", needs="classifier", search=beam_search, section="beam",
               budget_rule=blocks_for_budget, tree=search_tree),
    TreeMethod(name="dvts", label="VGS DVTS", needs="classifier", search=beam_search, section="beam",
               budget_rule=reps_for_budget, tree=search_tree),
)


__all__ = ["BeamConfig", "SEARCH_METHODS", "beam_search", "search_tree", "blocks_for_budget", "reps_for_budget"]
