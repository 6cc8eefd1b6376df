"""VM-MCTS (ReST-RL, Appendix A): value targets by MCTS with a verifier (Algorithm 2), decoding by MCTS
with a value model (Algorithm 3), and the PRM-min score of the PRM-BoN baseline.

Why
---
ReST-RL trains a value model V_phi on targets that MCTS estimates with the task's verifier alone
(no step labels: :func:`collect_value_targets`), then decodes with the same tree search, V_phi
standing in for the verifier both inside the tree and to pick the final answer (:func:`vm_mcts`).
The two algorithms share everything but how an expansion and a selected end state are credited,
so they share one tree (:class:`_Tree`) and one sampling step (:func:`_sample`).

The tree
--------
A node is a state: the response token ids after the problem's prompt ids (:mod:`.common`); a
child extends its parent by one action (a line: ``task.action_stop``, :class:`.common.ActionSplitter`).
A node keeps N (visit count), U (sum of credited values) and its value v = U / N (v0 = 0 while
N = 0). It is an **end state** when its action ended the trace it came from: EOS, the
``max_tokens`` response limit, or a length limit of the sampler (the policy cannot go on).

One iteration (line numbers: Alg. 2 / Alg. 3)
----------------------------------------------
* **Selection** (7-9 / 6-8): from the root, while the node is expanded, go to the child with the
  highest UCT score :func:`uct` = v' + c sqrt((1 + ln N) / (N' + eps)); ties go to the child created first.
* **Expansion** (13-14 / 12-14): a selected node that is not an end state samples ``n`` full traces
  (no stop string; ``max_tokens`` = what is left of ``cfg.max_tokens``); the first action of each
  becomes a child; traces with the same first action (same token ids) share one child.
* **Alg. 2, MC rollout** (15-22): new children start at v0 = 0, N = U = 0; each trace o_i is graded
  by the task, r_i = R(state + o_i), and the *expanded node and its ancestors* get U += sum r_i,
  N += n (backpropagation, 28-32). A selected end state S is not expanded: it and its ancestors
  get (R(S), 1) (24-25).
* **Alg. 3, value-based MC rollout** (16-22, eq. 10): a child's N = how many of the n traces start
  with its action, U = N V_phi(child); the expanded node and its ancestors get U += sum of the
  children's U, N += n. A selected end state gets (v_S, 1) (24); v_S = V_phi(S) (every credit it
  ever gets is its own value, so it stays there).

All problems advance in lockstep: per iteration one :func:`.common.generate_counted` call for the
expansions of all problems, one ``task.score`` call (Alg. 2) for everything to grade, or (Alg. 3)
one :func:`.common.score_counted` call, which asks the value model once per problem for that
problem's new states (so values, like samples, do not depend on the batch). Prompts go to the
generator as token ids (prompt + state), so the sampler's prefix cache serves the shared path. Seeds are
``request_seed(cfg.seed, problem index, node id, iteration)``.

Outputs
-------
* Alg. 2 returns records ``{"index", "prompt_ids", "state_ids", "target", "visits", "end"}``:
  every expanded node with target U/N (lines 34-37), and every end state met, i.e. every trace
  sampled (line 21) and every end state selected (24-25), one record per distinct state with
  target = the mean of the rewards it got and visits = how many.
* Alg. 3 returns a :class:`.common.SearchResult`: every trace sampled in the tree is a candidate
  (D_sol, line 13) scored by V_phi of the full response (33), the final one chosen by
  :func:`.bon.select` (``best`` = best-of-N, 34). V_phi values are cached per state, so a trace
  that is itself a child (an end state) or a repeat is scored once.
* Its ``meta["search_tree"]`` is the decoding tree, and each candidate's ``meta["node"]`` the child its
  trace's first action made: :func:`search_tree` turns them into node dicts (``"tree"`` nodes, and
  each trace longer than its first action as a ``"trace"`` leaf under that child).
* **ORM-MCTS** (paper A.2) is :func:`vm_mcts` with an ORM as the scorer: nothing else changes.
  **PRM-BoN** scores complete responses with :func:`prm_min_scores` and picks with ``bon.select``.

Readings of the paper
---------------------
* UCT: the printed sqrt((ln N_S + 1) / (N_S' + eps)) is read as ln(N_S) + 1, as the published
  code computes it; v_S' is the mean U/N (0 for an unvisited child, v0 = 0).
* R(S) of a selected end state is the reward its trace got when it was sampled (an end-state
  node *is* a whole trace), so it is not graded twice; the verifiers here are deterministic.
* The budget is per problem, in generated tokens, and it holds (:mod:`.common`, "Budgets hold"): a
  problem searches while it can pay one token for each of the ``n`` traces of an expansion, and
  the traces of its last expansion share what is left. A trace the budget cut is no response: its
  first action still becomes a child when that action is whole (the cut trace then counts in the
  child's N), but it is not a candidate and is not scored; a trace cut inside its first action is
  dropped. The paper's budget is T (n T samples).
* The paper's c (0.4 collecting, 0.1 decoding, A.2) are two fields of one config,
  ``c_collect`` and ``c_decode``.

As search methods (:mod:`.registry`)
------------------------------------
``vm-mcts`` (the value model, ``search.value``) and ``orm-mcts`` (the ORM, ``search.orm``) are
Algorithm 3 with the settings ``search.vm_mcts``; the token budget B is ``budget_tokens``, the
settings stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.types import SamplingParams  # torch-free
from . import bon
from .config import VMMCTSConfig
from .common import (BUDGET, ActionSplitter, Candidate, Scorer, SearchResult, TokenCounter, decode,
                     generate_counted, problem_prompts, request_seed, score_counted, tree_from_states)
from .registry import TreeMethod


def uct(value: float, parent_visits: int, visits: int, c: float, eps: float) -> float:
    """Alg. 2 line 8 / Alg. 3 line 7: v' + c sqrt((1 + ln N) / (N' + eps)) (N: the parent's visits)."""
    return value + c * math.sqrt((1.0 + math.log(parent_visits)) / (visits + eps))


@dataclass(eq=False)
class _Node:
    id: int
    ids: list[int]  # the state: response token ids
    parent: _Node | None
    end: bool
    visits: int = 0  # N
    total: float = 0.0  # U
    reward: float = 0.0  # R(S) of an end state (Alg. 2)
    children: list[_Node] = field(default_factory=list)

    @property
    def value(self) -> float:
        return self.total / self.visits if self.visits else 0.0


class _Tree:
    def __init__(self) -> None:
        self.nodes = [_Node(0, [], None, end=False)]

    def select(self, c: float, eps: float) -> _Node:
        node = self.nodes[0]
        while node.children:  # expanded
            parent = node
            node = max(parent.children, key=lambda ch: uct(ch.value, parent.visits, ch.visits, c, eps))
        return node

    def expand(self, node: _Node, outputs: Sequence[Any],
               splitter: ActionSplitter) -> tuple[list[tuple[list[int], str]], list[_Node]]:
        """Children from the traces' first actions; returns each trace's (full state, finish reason) and its
        child. A trace the budget cut (finish reason :data:`~.common.BUDGET`) gives a child only when its
        first action is whole (one cut inside its first action is dropped); the caller keeps it out of
        the candidates."""
        by_action: dict[tuple[int, ...], _Node] = {}
        traces, firsts = [], []
        for o in outputs:
            ids = list(o.token_ids)
            k = splitter.first_action(ids)
            cut = o.finish_reason == BUDGET
            if cut and not (k and splitter.ends_action(ids[k - 1])):
                continue
            child = by_action.get(tuple(ids[:k]))
            if child is None:
                child = _Node(len(self.nodes), node.ids + ids[:k], node, end=not cut and k == len(ids))
                self.nodes.append(child)
                node.children.append(child)
                by_action[tuple(ids[:k])] = child
            traces.append((node.ids + ids, o.finish_reason))
            firsts.append(child)
        return traces, firsts

    @staticmethod
    def backup(node: _Node | None, v: float, m: int) -> None:
        while node is not None:
            node.visits += m
            node.total += v
            node = node.parent

    def dump(self) -> list[dict[str, Any]]:
        return [{"id": n.id, "parent": None if n.parent is None else n.parent.id, "state_ids": n.ids,
                 "visits": n.visits, "total": n.total, "end": n.end, "expanded": bool(n.children)}
                for n in self.nodes]


def _sample(generator, trees: list[_Tree], prompts: list[list[int]], active: Sequence[int], cfg: VMMCTSConfig,
            c: float, t: int, indices: list[int], splitter: ActionSplitter, counter: TokenCounter):
    """Selection for every active problem, then one batched expansion of those not at an end state:
    ``([(p, selected end state)], [(p, node, [(trace, finish reason)], first-action children)])``."""
    selected = [(p, trees[p].select(c, cfg.eps)) for p in active]
    grow = [(p, node) for p, node in selected if not node.end]
    params = [SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                             max_tokens=cfg.max_tokens - len(node.ids),
                             seed=request_seed(cfg.seed, indices[p], node.id, t)) for p, node in grow]
    outs = generate_counted(generator, [prompts[p] + node.ids for p, node in grow], params,
                            [p for p, _ in grow], counter)
    grown = [(p, node, *trees[p].expand(node, o.outputs, splitter)) for (p, node), o in zip(grow, outs)]
    return [(p, node) for p, node in selected if node.end], grown


def _setup(generator, task, problems: Sequence[dict], cfg: VMMCTSConfig, indices: Sequence[int] | None,
           budget_tokens: int | None = None):
    indices = list(range(len(problems))) if indices is None else list(indices)
    if len(indices) != len(problems):
        raise ValueError(f"{len(indices)} indices for {len(problems)} problems")
    tok = generator.tokenizer
    return (tok, indices, problem_prompts(tok, task, problems), [_Tree() for _ in problems],
            ActionSplitter(tok, task.action_stop, cfg.max_tokens), TokenCounter.zeros(len(problems), budget_tokens))


def collect_value_targets(generator, task, problems: Sequence[dict], cfg: VMMCTSConfig, *,
                          indices: Sequence[int] | None = None) -> list[list[dict[str, Any]]]:
    """Algorithm 2: value targets of every problem's tree, graded by ``task.score`` (see module docs)."""
    tok, indices, prompts, trees, splitter, counter = _setup(generator, task, problems, cfg, indices)
    ends: list[dict[tuple[int, ...], list[float]]] = [{} for _ in problems]  # end state -> [reward sum, count]

    def met(p: int, ids: Sequence[int], r: float) -> None:
        acc = ends[p].setdefault(tuple(ids), [0.0, 0])
        acc[0] += r
        acc[1] += 1

    for t in range(cfg.iterations):
        selected_ends, grown = _sample(generator, trees, prompts, range(len(problems)), cfg, cfg.c_collect, t,
                                       indices, splitter, counter)
        for p, node in selected_ends:  # lines 24-25
            trees[p].backup(node, node.reward, 1)
            met(p, node.ids, node.reward)
        flat = [(p, trace) for p, _, traces, _ in grown for trace, _ in traces]
        scores = task.score([problems[p] for p, _ in flat], [decode(tok, tr) for _, tr in flat]) if flat else []
        if len(scores) != len(flat):
            raise ValueError(f"task {task.name!r}: score() returned {len(scores)} scores for {len(flat)} responses")
        rewards = iter(float(s.reward) for s in scores)
        for p, node, traces, firsts in grown:  # lines 15-22: children stay at v0 = 0, N = U = 0
            rs = [next(rewards) for _ in traces]
            for (trace, _), child, r in zip(traces, firsts, rs):
                if child.end:
                    child.reward = r
                met(p, trace, r)  # line 21
            trees[p].backup(node, sum(rs), len(rs))  # lines 22, 28-32
    out = []
    for p, tree in enumerate(trees):
        rec = {"index": indices[p], "prompt_ids": prompts[p]}
        out.append([{**rec, "state_ids": n.ids, "target": n.value, "visits": n.visits, "end": False}
                    for n in tree.nodes if n.children]  # lines 34-37
                   + [{**rec, "state_ids": list(ids), "target": s / k, "visits": k, "end": True}
                      for ids, (s, k) in ends[p].items()])
    return out


def vm_mcts(generator, scorer: Scorer, task, problems: Sequence[dict], cfg: VMMCTSConfig, *,
            budget_tokens: int | None = None, indices: Sequence[int] | None = None) -> list[SearchResult]:
    """Algorithm 3: decode every problem by MCTS guided by ``scorer`` (V_phi; an ORM gives ORM-MCTS) and
    choose among all sampled traces by ``cfg.select``; a problem stops after ``cfg.iterations`` or when
    ``budget_tokens`` cannot pay its next expansion (see module docs)."""
    tok, indices, prompts, trees, splitter, counter = _setup(generator, task, problems, cfg, indices, budget_tokens)
    values: list[dict[tuple[int, ...], float]] = [{} for _ in problems]  # V_phi of every state scored
    # D_sol: (ids, finish, iteration, the child its first action went to)
    found: list[list[tuple[list[int], str, int, _Node]]] = [[] for _ in problems]
    ran = [0] * len(problems)
    for t in range(cfg.iterations):
        active = [p for p in range(len(problems)) if counter.affords(p, cfg.n)]
        if not active:
            break
        for p in active:
            ran[p] += 1
        selected_ends, grown = _sample(generator, trees, prompts, active, cfg, cfg.c_decode, t, indices, splitter,
                                       counter)
        for p, node in selected_ends:  # line 24
            trees[p].backup(node, node.value, 1)
        queue: dict[tuple[int, tuple[int, ...]], None] = {}  # (problem, state) to score, once each
        for p, node, traces, firsts in grown:
            # a cut trace is no response
            whole = [(tr, finish, ch) for (tr, finish), ch in zip(traces, firsts) if finish != BUDGET]
            found[p] += [(tr, finish, t, ch) for tr, finish, ch in whole]  # line 13
            for ids in [ch.ids for ch in node.children] + [tr for tr, _, _ in whole]:
                if tuple(ids) not in values[p]:
                    queue[(p, tuple(ids))] = None
        vals = score_counted(scorer, [prompts[p] for p, _ in queue], [ids for _, ids in queue], [p for p, _ in queue],
                             counter)
        for (p, ids), v in zip(queue, vals):
            values[p][ids] = v
        for p, node, traces, firsts in grown:  # lines 16-22, eq. 10
            for child in node.children:
                child.visits = sum(f is child for f in firsts)
                child.total = child.visits * values[p][tuple(child.ids)]
            if traces:
                trees[p].backup(node, sum(ch.total for ch in node.children), len(traces))
    results = []
    for p, problem in enumerate(problems):  # lines 33-35
        cands = [Candidate(ids, decode(tok, ids), values[p][tuple(ids)], finish, {"iteration": it, "node": ch.id})
                 for ids, finish, it, ch in found[p]]
        chosen = bon.select_for(task, problem, cfg.select, [c.text for c in cands], [c.score for c in cands])
        # "search_tree": the tree itself, for search_tree() (a reference: nothing is copied)
        meta: dict[str, Any] = {"iterations": ran[p], "nodes": len(trees[p].nodes), "search_tree": trees[p]}
        if cfg.keep_tree:
            meta["tree"] = trees[p].dump()
        results.append(SearchResult(indices[p], cands, chosen, counter.generated[p], counter.value[p], meta))
    return results


def search_tree(result: SearchResult, tokenizer) -> list[dict[str, Any]]:
    """One :func:`vm_mcts` result's decoding tree as node dicts (:func:`.common.tree_node`): every node of
    the tree (``"kind": "tree"``; value U/N and visits N as the search holds them, terminal when it is an end
    state), then each sampled trace (a candidate) longer than its first action as a leaf under the child that
    action made (``"kind": "trace"``: the rest of the trace, value V_phi of the whole trace, no visits), so the
    ``chosen`` path ends at the chosen response."""
    tree: _Tree = result.meta["search_tree"]
    states = [n.ids for n in tree.nodes]
    parents: list[int | None] = [None if n.parent is None else n.parent.id for n in tree.nodes]
    fields: list[dict[str, Any]] = [{"value": n.value, "visits": n.visits, "terminal": n.end, "kind": "tree"}
                                    for n in tree.nodes]
    at: dict[tuple[int, tuple[int, ...]], int] = {}  # (child, trace) -> node id
    where = []  # each candidate's node
    for c in result.candidates:
        child = c.meta["node"]
        key = (child, tuple(c.response_ids))
        if key not in at:
            if list(c.response_ids) == states[child]:  # the trace is its first action: an end state
                at[key] = child
                fields[child]["terminal"] = True
            else:
                at[key] = len(states)
                states.append(list(c.response_ids))
                parents.append(child)
                fields.append({"value": c.score, "terminal": True, "kind": "trace", "finish_reason": c.finish_reason})
        where.append(at[key])
    return tree_from_states(tokenizer, states, parents, fields, None if result.chosen is None else where[result.chosen])


def prm_min_scores(scorer: Scorer, splitter: ActionSplitter, prompt_ids: Sequence[Sequence[int]],
                   responses_ids: Sequence[Sequence[int]], *, counter: TokenCounter | None = None,
                   owners: Sequence[int] | None = None) -> list[float]:
    """PRM-BoN's score (paper A.2, "PRM"): per response, the minimum of the scorer's values of its prefixes
    after each action (the empty response: the value of the bare prompt). ``prompt_ids[i]`` is response
    ``i``'s prompt and ``owners[i]`` its problem (default: i, every response on its own). One batched
    scorer call per owner, over that owner's responses only, so a problem's scores do not depend on the
    other problems scored with it (:mod:`.common`, "Results do not depend on batching"); a scorer with
    ``values_at``, as :class:`~searchrl.models.value.ValueModel`, reads all prefixes of a response from
    one pass over it. Value tokens go to ``counter`` under ``owners``."""
    if len(prompt_ids) != len(responses_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(responses_ids)} responses")
    owners = list(range(len(responses_ids))) if owners is None else list(owners)
    if len(owners) != len(responses_ids):
        raise ValueError(f"{len(owners)} owners for {len(responses_ids)} responses")
    counter = counter if counter is not None else TokenCounter.zeros(max(owners, default=-1) + 1)
    cuts = [[end for _, end in splitter.actions(ids)] or [0] for ids in responses_ids]
    values_at = getattr(scorer, "values_at", None)
    if values_at is not None:  # a value model reads every prefix's value from one pass over the response
        rows: dict[int, list[int]] = {}
        for i, o in enumerate(owners):
            rows.setdefault(o, []).append(i)
            counter.value[o] += len(prompt_ids[i]) + len(responses_ids[i])
        out: list[float] = [0.0] * len(responses_ids)
        for mine in rows.values():
            got = values_at([prompt_ids[i] for i in mine], [responses_ids[i] for i in mine], [cuts[i] for i in mine])
            for i, vs in zip(mine, got):
                out[i] = min(vs)
        return out
    values = iter(score_counted(scorer, [pr for pr, cs in zip(prompt_ids, cuts) for _ in cs],
                                [list(ids[:e]) for ids, cs in zip(responses_ids, cuts) for e in cs],
                                [o for o, cs in zip(owners, cuts) for _ in cs], counter))
    return [min(next(values) for _ in cs) for cs in cuts]


SEARCH_METHODS = (
    TreeMethod(name="vm-mcts", label="VM-MCTS", needs="value", search=vm_mcts, section="vm_mcts", tree=search_tree),
    TreeMethod(name="orm-mcts", label="ORM-MCTS", needs="orm", search=vm_mcts, section="vm_mcts", tree=search_tree),
)


__all__ = ["VMMCTSConfig", "SEARCH_METHODS", "uct", "collect_value_targets", "vm_mcts", "search_tree", "prm_min_scores"]
