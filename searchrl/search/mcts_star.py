"""MCTS* (ReST-MCTS*): value-guided tree search over lines, and per-step value targets from its trees.

Why
---
ReST-MCTS* uses one search for two jobs. At test time MCTS* looks for a response whose
value clears an *end gate*; for self-training it runs the same search to the end and
turns each tree into training targets for the value model: a step's target grows towards
1 the closer it is to a correct final answer and falls to 0 away from one (no per-step
labels needed, only the verifier's verdict on finished responses). This module is that
search and that inference, following the authors' code (THUDM/ReST-MCTS ``MCTS/mcts.py``,
``MCTS/base.py``, ``MCTS/task.py``; defaults from ``evaluate.py``).

A state is the response token ids after the problem's prompt ids; an action is one line
(:class:`~searchrl.search.common.ActionSplitter` at ``task.action_stop``); an **end
state** is a finished response (EOS, or ``max_tokens`` reached).

One iteration (``executeRound``), for every problem still searching
----------------------------------------------------------------------
1. **Selection** (``selectNode``, ``getBestChild``): from the root, while the node has
   children, go to the child with the largest ``V + c sqrt(2 ln N_parent / n_child)``; a
   child never visited scores ``V + inf``. Ties go to the first child (the code draws one at
   random). If the selected leaf has ``V >= end_gate`` the problem is solved and stops
   (``isTerminal``), except with ``collect=True`` (see below). A selected end state is not
   expanded or rolled out; only its path gets the visit (the code's ``reflection ==
   '<end>'``: here "finished" plays the role of the code's reflection step).
2. **Expansion** (``expand``): one request with ``n = branch`` samples of one line each, at
   ``temperature``. Identical lines are **merged** into one child, as the code's
   ``if action not in node.children`` does, so a node can have fewer than ``branch``
   children (the duplicates' tokens are still counted as generated). Each new child's
   ``V`` is the scorer's value of its state. A request that yields no token makes the leaf
   an end (the code's "no proposal: '<end>'").
3. **Rollout** (``greedyPolicy``): from the new child that selection would take next (the
   code's ``getBestChild(node)``: all children are unvisited, so the highest ``V``),
   ``roll_forward_steps`` lines sampled at the search temperature (the code's "greedy" policy
   keeps the best-valued of ``roll_branch`` = 1 proposal sampled at that temperature, i.e. the
   sample itself; ``rollout_greedy`` takes temperature 0 instead), each reached state scored,
   stopping at an end state. Then ``child.V <- (1 - alpha) child.V + alpha * best``, where ``best``
   is the largest value among the *rollout states only*: the code starts ``max_V`` at the
   value range's low end (0) and never compares with the child's own value. A child that is
   itself an end state is not rolled out and keeps its ``V`` (the code returns ``node.V``).
   The rolled-out child gets one visit. ``rollout_children="all"`` instead rolls out every
   new child (each one visit), a costlier reading not in the code.
4. **Backpropagation** (``back_propagate``): every node from the expanded (or selected end)
   leaf to the root gets one more visit, and each node with children gets
   ``V = sum(V_c n_c) / sum(n_c)`` over its visited children.

All problems advance in lockstep: per iteration one :meth:`generate` call for the
expansions of all problems, then one per rollout step, and, per batch of new states, one
:meth:`Scorer.score` call for each problem with states in it (:func:`score_counted`: a
problem's values never depend on the states of other problems scored alongside). Prompts
are token ids (``prompt_ids + state_ids``) so the sampler's prefix cache serves them. Seeds
are named (:func:`request_seed`): ``(seed, problem index, leaf id, iteration)`` for an
expansion, plus ``("line", sample, line)`` for a step's further lines; ``(seed, problem
index, child id, iteration, "roll", step, line)`` for a rollout; and ``(seed, problem index,
node id, "complete")`` for the final completion; batching and budgets therefore never change
what is sampled.

A problem stops at the end gate, after ``iterations``, or, with ``budget_tokens``, when it
cannot pay one token for each of the ``branch`` lines of its next expansion. The budget holds
(:mod:`.common`, "Budgets hold"): every request of an iteration, and the final completion, gets
at most the problem's share of what is left. A line the budget cut is no step: an expansion's cut
line makes no child (and a leaf whose lines were cut is not taken for an end), a cut rollout or
step line stops there. A final completion the budget cut is no response: the answer is then the
best-valued finished response the search found, or, when it found none, the cut completion.

Final answer (``MCTS`` and ``treeNode.getBestV``; ``get_final_solution``)
-------------------------------------------------------------------------
The node that passed the end gate; otherwise the leaf (a node without children) with the
highest ``V``, the first one on ties (the code's ``getBestV`` may also return an inner node
whose value beats its whole subtree; we keep to leaves). When that node is not an end
state it is completed greedily (counted, and the completed response scored). The
candidates are every distinct finished response the search produced, in the order found:
end states in the tree, rollouts that reached an end, the completion; each scored by the
scorer's value of that response (an end state's ``V`` never changes: it has no children and
is never rolled out). ``select="best"`` returns the final node's response;
``"weighted-vote"`` (or ``"vote"``) chooses among all candidates with
:func:`searchrl.search.bon.select` (the code's value-weighted vote over end leaves).
:func:`search_tree` turns a result's tree into node dicts, with each candidate that is no tree node
(a rollout's or the completion's response) as a leaf under the node it continued (``meta["node"]``).

Data collection (``sample_value == 'full'``)
--------------------------------------------
``collect=True`` runs every iteration: the end gate neither stops the search nor makes a
leaf an end. (The code marks a leaf over the gate '<end>' and grades its *partial*
solution through an LLM summary; a partial response cannot be graded here, so such a leaf
is expanded like any other.) :func:`collect_value_targets` then grades the tree's end
states with ``task.score`` and infers targets (:func:`infer_value_targets`,
``get_full_value_samples_vm`` and ``get_all_value_samples_vm``):

* ``m = 1`` at a correct end state, ``m = min(children's m) + 1`` above one, i.e. one more
  than the number of steps to the nearest correct end state below;
* ``r = +1`` for a node on a path to a correct end state, ``-1`` otherwise;
* a node off every correct path gets a target only if an incorrect end state lies in its
  subtree (itself included): it takes the ``m`` of its nearest ancestor on a correct path.
  Nodes whose subtree holds no end state at all ("branches that never reach an end"),
  such as unfinished leaves, get none;
* top-down, ``V_root = 0`` and ``V_k = max(0, V_{k-1} + (1 - V_{k-1}) r / m_k)``; the root
  itself gets no record (as in the code). A question without a correct end state gives no
  targets at all.

This is the code's convention. The paper's eq. 2 writes ``w_k = (1 - v_{k-1}) / (m_k + 1)
(1 - 2 r_k)``, i.e. ``m_code = m_paper + 1`` and ``r_code = 1 - 2 r_paper``, while its text
calls ``r_k`` a sigmoid "correctness" score, which flips the sign (authors' issue #12).
With the code's signs a correct end state gets exactly 1 and its ancestors climb to it.

As a search method (:mod:`.registry`)
-------------------------------------
``mcts-star`` runs :func:`mcts_star` with the settings ``search.mcts_star`` and the value model
``search.mcts_star_value`` (ReST-MCTS* trains its own on MCTS* targets; else ``search.value``);
the token budget B is ``budget_tokens``, the settings stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.types import SamplingParams  # torch-free
from .bon import best_of_n, select_for
from .config import ROLLOUT_CHILDREN, MCTSStarConfig  # noqa: F401  (re-exported)
from .common import (
    BUDGET,
    ActionSplitter,
    Candidate,
    SearchResult,
    TokenCounter,
    decode,
    generate_counted,
    problem_prompts,
    request_seed,
    score_counted,
    tree_from_states,
)
from .registry import TreeMethod

@dataclass(eq=False)
class Node:
    """A state of one search tree: ``ids`` are the response token ids from the root (the prompt excluded)."""

    id: int
    ids: list[int]
    parent: Node | None = field(default=None, repr=False)
    V: float = 0.0
    visits: int = 0
    finished: bool = False  # an end state: never expanded
    children: list[Node] = field(default_factory=list, repr=False)

    def path(self) -> list[Node]:
        """The nodes from this one up to the root."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out


@dataclass(eq=False)
class Tree:
    """One problem's search tree (``nodes[i].id == i``; ``nodes[0]`` is the root, the empty response)."""

    index: int
    prompt_ids: list[int]
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self):
        if not self.nodes:
            self.nodes.append(Node(0, []))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, ids: Sequence[int], *, V: float = 0.0, finished: bool = False) -> Node:
        node = Node(len(self.nodes), list(ids), parent, V=V, finished=finished)
        parent.children.append(node)
        self.nodes.append(node)
        return node

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if not n.children]


def uct(child: Node, parent_visits: int, cfg: MCTSStarConfig) -> float:
    """``getBestChild``'s score: ``V + c sqrt(2 ln N_parent / n_child)``, ``V + inf`` when never visited."""
    if child.visits == 0:
        return child.V + cfg.inf
    return child.V + cfg.c * math.sqrt(2 * math.log(max(parent_visits, 1)) / child.visits)


def best_child(node: Node, cfg: MCTSStarConfig) -> Node:
    """The child with the highest :func:`uct` score (the first on ties)."""
    return max(node.children, key=lambda ch: uct(ch, node.visits, cfg))


def select_leaf(root: Node, cfg: MCTSStarConfig) -> Node:
    """``selectNode`` without the gate check: descend by :func:`best_child` to a node without children."""
    node = root
    while node.children:
        node = best_child(node, cfg)
    return node


def backpropagate(node: Node) -> None:
    """``back_propagate``: one more visit up to the root; ``V = sum(V_c n_c) / sum(n_c)`` where a child was visited."""
    for n in node.path():
        n.visits += 1
        total = sum(c.visits for c in n.children)
        if total:
            n.V = sum(c.V * c.visits for c in n.children) / total


def best_leaf(tree: Tree) -> Node:
    """The leaf with the highest value (the first on ties)."""
    return max(tree.leaves(), key=lambda n: n.V)


@dataclass(eq=False)
class _Run:
    """One problem's search in progress."""

    k: int  # position in this batch (owner of token counts)
    problem: dict
    tree: Tree
    candidates: list[Candidate] = field(default_factory=list)
    seen: dict[tuple[int, ...], int] = field(default_factory=dict)
    final: Node | None = None
    gated: bool = False
    iterations: int = 0

    def found(self, ids: list[int], value: float, source: str, node: int | None, tokenizer, eos: set[int],
              finish: str | None = None) -> int:
        """Record a finished response (once per distinct response); its index in ``candidates``.
        ``node``: the tree node it is (``source`` "tree") or continued ("rollout": the child rolled out,
        "completion": the final node completed). ``finish``: its finish reason (default: ``stop`` after EOS,
        else ``length``)."""
        key = tuple(ids)
        if key not in self.seen:
            self.seen[key] = len(self.candidates)
            self.candidates.append(Candidate(list(ids), decode(tokenizer, ids), value,
                                             finish or ("stop" if ids and ids[-1] in eos else "length"),
                                             {"source": source, "node": node}))
        return self.seen[key]


@dataclass(eq=False)
class _Roll:
    """One rollout in progress: from ``child``, now at ``state``; ``best``: highest value of its states."""

    run: _Run
    child: Node
    state: list[int]
    best: float | None = None
    alive: bool = True


def _step_params(cfg: MCTSStarConfig, stop: str, state: Sequence[int], seed: int, *, n: int = 1,
                 greedy: bool = False) -> SamplingParams:
    return SamplingParams(n=n, temperature=0.0 if greedy else cfg.temperature, top_p=1.0 if greedy else cfg.top_p,
                          max_tokens=min(cfg.max_line_tokens, cfg.max_tokens - len(state)), stop=[stop], seed=seed)


def mcts_star(generator, scorer, task, problems: Sequence[dict], cfg: MCTSStarConfig, *,
              budget_tokens: int | None = None, indices: Sequence[int] | None = None,
              collect: bool = False) -> list[SearchResult]:
    """Run MCTS* on every problem at once (see module docs); one :class:`SearchResult` per problem.

    ``budget_tokens``: generated tokens per problem after which it stops (None: no limit).
    ``indices``: the problems' indices (results, seeds; default ``0..``). ``collect``: data
    collection, every iteration runs and the end gate is ignored. Each result's ``meta`` holds
    ``tree`` (the :class:`Tree`), ``final_node`` (id of the node the answer came from),
    ``gated`` (it passed the end gate) and ``iterations`` (run for this problem).
    """
    tok = generator.tokenizer
    indices = list(range(len(problems))) if indices is None else list(indices)
    if len(indices) != len(problems):
        raise ValueError(f"{len(indices)} indices for {len(problems)} problems")
    split = ActionSplitter(tok, task.action_stop, cfg.max_tokens)
    counter = TokenCounter.zeros(len(problems), budget_tokens)
    runs = [_Run(k, p, Tree(i, ids)) for k, (p, i, ids) in enumerate(zip(problems, indices,
                                                                       problem_prompts(tok, task, problems)))]

    def generate(items: list[tuple[_Run, list[int], SamplingParams]]) -> list:
        return generate_counted(generator, [r.tree.prompt_ids + s for r, s, _ in items], [p for _, _, p in items],
                                [r.k for r, _, _ in items], counter)

    def extend(items: list[tuple[_Run, list[int]]], lines: int, greedy: bool,
               seed_of: Callable[[int, int], int]) -> list[list[int]]:
        """Each state continued by up to ``lines`` lines (one batched request per line, over all
        states; a state stops at an end, or when the generator gives nothing)."""
        states = [list(ids) for _, ids in items]
        live = [i for i in range(len(items)) if not split.finished(states[i])]
        for j in range(lines):
            outs = generate([(items[i][0], states[i], _step_params(cfg, task.action_stop, states[i], greedy=greedy,
                                                                   seed=seed_of(i, j))) for i in live])
            grown = []
            for i, out in zip(live, outs):
                if out.outputs[0].finish_reason == BUDGET:  # a cut line is no step: this state stops
                    continue
                ids = out.outputs[0].token_ids
                states[i] += list(ids[: split.first_action(ids)])
                if len(ids) and not split.finished(states[i]):
                    grown.append(i)
            live = grown
        return states

    def score(items: list[tuple[_Run, list[int]]]) -> list[float]:
        return score_counted(scorer, [r.tree.prompt_ids for r, _ in items], [s for _, s in items],
                             [r.k for r, _ in items], counter)

    for it in range(cfg.iterations):
        live = [r for r in runs if not r.gated and counter.affords(r.k, cfg.branch)]
        if not live:
            break
        grow: list[tuple[_Run, Node]] = []
        for r in live:  # selection
            r.iterations += 1
            leaf = select_leaf(r.tree.root, cfg)
            if not collect and leaf.V >= cfg.end_gate:
                r.final, r.gated = leaf, True
            elif leaf.finished:
                backpropagate(leaf)
            else:
                grow.append((r, leaf))

        # expansion: one request of `branch` first lines per leaf, each continued to a step of
        # `step_lines` lines; identical steps merged
        outs = generate([(r, leaf.ids, _step_params(cfg, task.action_stop, leaf.ids, n=cfg.branch,
                                                    seed=request_seed(cfg.seed, r.tree.index, leaf.id, it)))
                         for r, leaf in grow])
        cut = {leaf.id for (_, leaf), out in zip(grow, outs) if any(o.finish_reason == BUDGET for o in out.outputs)}
        firsts = [(r, leaf, k, leaf.ids + list(o.token_ids)[: split.first_action(o.token_ids)])
                  for (r, leaf), out in zip(grow, outs) for k, o in enumerate(out.outputs) if o.finish_reason != BUDGET]
        firsts = [f for f in firsts if len(f[3]) > len(f[1].ids)]
        steps = extend([(r, ids) for r, _, _, ids in firsts], cfg.step_lines - 1, False,
                       lambda i, j: request_seed(cfg.seed, firsts[i][0].tree.index, firsts[i][1].id, it, "line",
                                                 firsts[i][2], j))
        new: list[tuple[_Run, Node]] = []
        for (r, leaf, _, _), ids in zip(firsts, steps):
            if all(c.ids != ids for c in leaf.children):
                new.append((r, r.tree.add(leaf, ids, finished=split.finished(ids))))
        for _, leaf in grow:
            if not leaf.children and leaf.id not in cut:  # the policy had nothing to add: an end
                leaf.finished = True
        for (r, child), v in zip(new, score([(r, c.ids) for r, c in new])):
            child.V = v
            if child.finished:
                r.found(child.ids, v, "tree", child.id, tok, split.eos)

        # rollout: lines from the child UCT picks next (or from every new child)
        rolls = [_Roll(r, child, child.ids, alive=not child.finished) for r, leaf in grow if leaf.children
                 for child in (leaf.children if cfg.rollout_children == "all" else [best_child(leaf, cfg)])]
        for step_no in range(cfg.roll_forward_steps):
            todo = [x for x in rolls if x.alive]
            states = extend([(x.run, x.state) for x in todo], cfg.step_lines, cfg.rollout_greedy,
                            lambda i, j: request_seed(cfg.seed, todo[i].run.tree.index, todo[i].child.id, it, "roll",
                                                      step_no, j))
            reached = []
            for x, state in zip(todo, states):
                grew = len(state) > len(x.state)
                x.state = state
                x.alive = grew and not split.finished(x.state)
                if grew:
                    reached.append(x)
            for x, v in zip(reached, score([(x.run, x.state) for x in reached])):
                x.best = v if x.best is None else max(x.best, v)
                if split.finished(x.state):
                    x.run.found(x.state, v, "rollout", x.child.id, tok, split.eos)
        for x in rolls:
            if x.best is not None:
                x.child.V = (1 - cfg.alpha) * x.child.V + cfg.alpha * x.best
            x.child.visits += 1
        for r, leaf in grow:
            backpropagate(leaf)

    # final answer: the gated node, else the best leaf; completed greedily when not an end state
    for r in runs:
        if r.final is None:
            r.final = best_leaf(r.tree)
    todo = [r for r in runs if not r.final.finished]
    outs = generate([(r, r.final.ids, SamplingParams(n=1, temperature=0.0, max_tokens=cfg.max_tokens - len(r.final.ids),
                                                     seed=request_seed(cfg.seed, r.tree.index, r.final.id, "complete")))
                     for r in todo])
    chosen: dict[int, int] = {}
    done = []
    for r, out in zip(todo, outs):
        ids = r.final.ids + list(out.outputs[0].token_ids)
        if out.outputs[0].finish_reason == BUDGET and r.candidates:  # no response: the best one found instead
            chosen[r.k] = best_of_n([c.score for c in r.candidates])
        else:
            done.append((r, ids, out.outputs[0].finish_reason))
    for (r, ids, finish), v in zip(done, score([(r, ids) for r, ids, _ in done])):
        chosen[r.k] = r.found(ids, v, "completion", r.final.id, tok, split.eos,
                              finish=BUDGET if finish == BUDGET else None)
    results = []
    for r in runs:
        if r.final.finished:
            chosen[r.k] = r.found(r.final.ids, r.final.V, "tree", r.final.id, tok, split.eos)
        if cfg.select != "best":
            chosen[r.k] = select_for(task, r.problem, cfg.select, [c.text for c in r.candidates],
                                     [c.score for c in r.candidates])
        results.append(SearchResult(r.tree.index, r.candidates, chosen[r.k], counter.generated[r.k],
                                    counter.value[r.k], {"tree": r.tree, "final_node": r.final.id,
                                                         "gated": r.gated, "iterations": r.iterations}))
    return results


def search_tree(result: SearchResult, tokenizer) -> list[dict[str, Any]]:
    """One :func:`mcts_star` result's tree as node dicts (:func:`.common.tree_node`): every node of the tree
    (``"kind": "tree"``; value ``V`` and visits as the search holds them, terminal when it is an end state),
    then each finished response found outside the tree (a candidate: a rollout that reached an end, or the
    final completion) as a leaf under the node it continued (``"kind": "rollout"`` / ``"completion"``: the
    rest of the response, value its score), so the ``chosen`` path ends at the chosen response."""
    tree: Tree = result.meta["tree"]
    states = [n.ids for n in tree.nodes]
    parents: list[int | None] = [None if n.parent is None else n.parent.id for n in tree.nodes]
    fields: list[dict[str, Any]] = [{"value": n.V, "visits": n.visits, "terminal": n.finished, "kind": "tree"}
                                    for n in tree.nodes]
    by_ids: dict[tuple[int, ...], int] = {}
    for n in tree.nodes:
        by_ids.setdefault(tuple(n.ids), n.id)
    where = []  # each candidate's node
    for c in result.candidates:
        key = tuple(c.response_ids)
        if key not in by_ids:  # a response the tree does not hold: a leaf under the node it continued
            by_ids[key] = len(states)
            states.append(list(c.response_ids))
            parents.append(c.meta.get("node") or 0)
            fields.append({"value": c.score, "kind": c.meta.get("source", "response"),
                           "finish_reason": c.finish_reason})
        fields[by_ids[key]]["terminal"] = True
        where.append(by_ids[key])
    return tree_from_states(tokenizer, states, parents, fields, None if result.chosen is None else where[result.chosen])


def infer_value_targets(tree: Tree, is_correct: Callable[[Node], bool]) -> list[dict[str, Any]]:
    """Per-step value targets of one tree (``get_full_value_samples_vm``; see module docs).

    ``is_correct(node)`` grades an end state (``node.finished``). Records, parents before
    children, root excluded: ``{"index", "prompt_ids", "state_ids", "target"}``.
    """
    ends = [n for n in tree.nodes if n.finished]
    correct = [n for n in ends if is_correct(n)]
    if not correct:
        return []
    m: dict[int, int] = {}
    on_path: set[int] = set()
    for leaf in correct:  # m = 1 + steps to the nearest correct end state below
        for d, n in enumerate(leaf.path(), start=1):
            m[n.id] = min(m.get(n.id, d), d)
            on_path.add(n.id)
    for leaf in ends:  # an incorrect end state and its ancestors off the path take the nearest on-path m
        if leaf.id in m:
            continue
        up = leaf.path()
        anchor = next(n for n in up if n.id in m)  # the root is on a path
        for n in up[: up.index(anchor)]:
            m[n.id] = m[anchor.id]
    out: list[dict[str, Any]] = []
    stack = [(c, 0.0) for c in reversed(tree.root.children)]
    while stack:
        node, v_parent = stack.pop()
        if node.id not in m:
            continue
        r = 1.0 if node.id in on_path else -1.0
        v = max(0.0, v_parent + (1.0 - v_parent) * r / m[node.id])
        out.append({"index": tree.index, "prompt_ids": list(tree.prompt_ids), "state_ids": list(node.ids),
                    "target": v})
        stack.extend((c, v) for c in reversed(node.children))
    return out


def collect(generator, scorer, task, problems: Sequence[dict], cfg: MCTSStarConfig, *,
            budget_tokens: int | None = None, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """ReST-MCTS*'s data collection: :func:`mcts_star` with ``collect=True``, the end states of each tree
    graded by ``task.score`` (one batched call). Per problem: ``targets`` (:func:`infer_value_targets`,
    the value model's data), ``correct`` (the correct end states as ``{"ids", "value"}``, ``value`` the
    scorer's: the policy's data), ``ends`` (how many end states the tree has), ``generated_tokens`` (the
    tokens the search generated: the generation compute ReST-MCTS* is compared with ReST-EM at)."""
    results = mcts_star(generator, scorer, task, problems, cfg, budget_tokens=budget_tokens, indices=indices,
                        collect=True)
    ends = [(k, n) for k, res in enumerate(results) for n in res.meta["tree"].nodes if n.finished]
    verdicts = task.score([problems[k] for k, _ in ends], [decode(generator.tokenizer, n.ids) for _, n in ends]) \
        if ends else []
    ok = {(k, n.id): s.correct for (k, n), s in zip(ends, verdicts)}
    out = []
    for k, res in enumerate(results):
        tree = res.meta["tree"]
        out.append({"index": tree.index, "prompt_ids": list(tree.prompt_ids),
                    "targets": infer_value_targets(tree, lambda n, k=k: ok[(k, n.id)]),
                    "correct": [{"ids": list(n.ids), "value": n.V} for n in tree.nodes if n.finished and ok[(k, n.id)]],
                    "ends": sum(n.finished for n in tree.nodes), "generated_tokens": res.generated_tokens})
    return out


def collect_value_targets(generator, scorer, task, problems: Sequence[dict], cfg: MCTSStarConfig, *,
                          budget_tokens: int | None = None,
                          indices: Sequence[int] | None = None) -> list[list[dict[str, Any]]]:
    """Value-model training data of :func:`collect`: the inferred targets, one list per problem."""
    return [c["targets"] for c in collect(generator, scorer, task, problems, cfg, budget_tokens=budget_tokens,
                                          indices=indices)]


SEARCH_METHODS = (
    TreeMethod(name="mcts-star", label="MCTS*", needs="mcts_star_value", search=mcts_star, section="mcts_star",
               tree=search_tree),
)


__all__ = [
    "SEARCH_METHODS",
    "MCTSStarConfig",
    "Node",
    "Tree",
    "backpropagate",
    "best_child",
    "best_leaf",
    "collect",
    "collect_value_targets",
    "infer_value_targets",
    "mcts_star",
    "search_tree",
    "select_leaf",
    "uct",
]
