"""The search commands: ``searchrl search`` (one method at one budget) and ``searchrl compare-search``
(every method at the same token budgets, with intervals).

The methods, what each scores with, its settings and how a budget becomes them, are the registry's
(:mod:`searchrl.search.registry`; the methods themselves are declared in their files under
``searchrl/search/``). This module runs the two kinds the registry knows, and names no method:

* **pool methods** choose among one **pool** of ``search.pool_samples`` samples per problem
  (temperature ``search.temperature``, seeded per problem): at budget B a problem uses its first
  samples whose tokens add up to at most B, so every pool method at every budget reads the same
  samples (:meth:`Searcher.run_pool`: best-of-N, votes, PRM-min). When even the first sample is
  longer than B, the problem's answer is that sample cut at B tokens (what sampling it with
  ``max_tokens`` = B gives: per-sample seeds), graded as it is;
* **tree methods** run once per budget, on every problem in resumable shards
  (:meth:`Searcher.run_tree`: VM-MCTS, ORM-MCTS, MCTS*, VGS beam search and DVTS), with their
  settings section, ``search.max_tokens`` as the response limit, the method's budget rule, and
  ``budget_tokens`` = B per problem.

Value models left unset (``search.value``, ``search.orm``, ``search.classifier``,
``search.mcts_star_value``) are made in the run directory first
(:func:`searchrl.pipelines.value.ensure_value_models`: data, then training, each resumable).

Budgets hold: no method generates more than B tokens for a problem (the tree searches through
:func:`searchrl.search.common.generate_counted`; see "Budgets hold" there). Every row reports the
generated tokens per problem the method actually used (a search may stop short of its budget:
MCTS* at its end gate), their ratio to the budget (``budget_used``), value-model tokens
separately, accuracy and a 95% bootstrap interval over problems. Results are kept per (method, budget) under
``<run>/compare-search/`` (the pool in resumable shards), so a rerun recomputes nothing finished.

What a search did
-----------------
Beside each (method, budget) result ``methods/<method>-<budget>-<key>.json`` (under
``<run>/compare-search/``, or ``<run>/search/`` for ``searchrl search``) the first
``search.keep_trees`` problems (-1: all, 0: none) keep their chosen response and search tree in
``methods/trees-<method>-<budget>.jsonl``, one JSON object a line, in problem order::

    {"index", "method", "budget", "prompt" (the task's prompt text), "response" (the chosen one, "" if none),
     "correct", "generated_tokens", "key" (the result's key), "nodes": [{"id", "parent", "action", "value",
     "visits", "terminal", "reward", "chosen", ...}]}

Node 0 is the root (the empty response, ``parent`` null); ``action`` is the text a node appends to its
parent's state, so the actions along the ``chosen`` path add up to the response
(:func:`searchrl.search.common.tree_node` says what each field means). A pool method's tree is the root
and one child per sample it read (``value``: what it ranked the sample by; ``reward``: its grade); a
tree search's is what its method's ``tree`` function makes of the search (the MCTS trees with their
values and visit counts, the blocks of a beam search, each with the responses found outside the tree
as leaves), the final response graded by the comparison. A tree search's trees travel in its shards,
so a rerun resumes them with the results; ``keep_trees`` enters no key (changing it rewrites the file
from the pool, or from the shards, which hold the trees of the problems it covered when searched).
``<``, U+2028 and U+2029 are written as JSON escapes (``\\u003c``: the same JSON), so a line can go
into an HTML page's script as it is, and stays one line whoever splits it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from ..data import InputError, atomic_write, embed_json, read_json, read_jsonl, resumable_shards, write_json, write_text
from ..rundir import problems_digest, rel, shard_key
from ..search import registry
from ..search.registry import PoolMethod, SearchMethod, TreeMethod
from ..seeding import stable_seed
from .run import Run, logger


def pool_settings(cfg) -> dict:
    """What the pool's samples depend on (``search`` settings): its key, and part of every method's.
    ``top_p`` enters only when it is not 1, so pools made before it existed keep their keys."""
    out = {"n": cfg.pool_samples, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if cfg.top_p != 1.0:
        out["top_p"] = cfg.top_p
    return out


def keeps(keep_trees: int, index: int) -> bool:
    """Whether problem ``index``'s tree is kept (``search.keep_trees``: the first N problems; -1: all)."""
    return keep_trees < 0 or index < keep_trees


def tree_record(task, problem: dict, method: str, budget: int, index: int, response: str, correct: bool,
                generated_tokens: int, nodes: list[dict]) -> dict:
    """One line of ``trees-<method>-<budget>.jsonl`` (module docs, "What a search did"), less its ``key``."""
    return {"index": index, "method": method, "budget": budget, "prompt": task.prompt(problem),
            "response": response, "correct": bool(correct), "generated_tokens": int(generated_tokens),
            "nodes": nodes}


def grade_chosen(nodes: list[dict], reward: float) -> None:
    """Give the chosen path's last node (the final response) the grade ``reward`` the comparison gave it,
    unless the search graded it itself."""
    parents = {n["parent"] for n in nodes if n["chosen"]}
    for n in nodes:
        if n["chosen"] and n["id"] not in parents and n["reward"] is None:
            n["reward"] = reward


def trees_path(results: Path, method: str, budget: int) -> Path:
    """Where a (method, budget) result's trees go: ``trees-<method>-<budget>.jsonl`` beside its result file."""
    return results.parent / f"trees-{method}-{budget}.jsonl"


def write_trees(path: Path, key: str, per: list[dict], keep_trees: int) -> list[int]:
    """Write the kept problems' trees (``per``'s records' ``tree``, taken out of them) to ``path`` as JSON
    Lines, each with the result's ``key``, through :func:`~searchrl.data.embed_json` (the same JSON, safe to
    embed in a ``<script>`` as it is). Nothing kept: no file (an older one is removed: it would describe
    another result). Returns the kept problems that had no tree."""
    trees = {r["index"]: r.pop("tree") for r in per if "tree" in r}
    wanted = [r["index"] for r in per if keeps(keep_trees, r["index"])]
    if not wanted:
        path.unlink(missing_ok=True)
        return []
    with atomic_write(path) as f:
        for i in wanted:
            if i in trees:
                f.write(embed_json({**trees[i], "key": key}, allow_nan=True) + "\n")
    return [i for i in wanted if i not in trees]


def trees_current(path: Path, key: str, wanted: list[int]) -> bool:
    """Whether ``path`` holds exactly the trees of problems ``wanted`` of the result keyed ``key``."""
    if not wanted:
        return not path.exists()
    try:
        lines = read_jsonl(path)
    except (OSError, InputError):
        return False
    return [r.get("index") for r in lines] == wanted and all(r.get("key") == key for r in lines)


def resolve_method(name: str) -> str:
    """The method ``name`` (or its alias) names; an unknown name is an :class:`~searchrl.data.InputError`."""
    name = registry.resolve(name)
    if not registry.known(name):
        aliases = ", ".join(f"{a} = {m}" for a, m in registry.aliases().items())
        raise InputError(f"--method {name}: unknown search method; known: {' | '.join(registry.names())}"
                         + (f" ({aliases})" if aliases else ""))
    return name


class Searcher:
    """Everything a run's searches share: problems, policy generator, scorers, the pool."""

    def __init__(self, run: Run, methods: list[str], policy: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None):

        self.run, self.cfg = run, run.cfg.search
        self.methods = [resolve_method(m) for m in methods]
        self.out = Path(out_dir) if out_dir is not None else run.dir / "compare-search"
        self.policy = run.policy_path(policy)
        from ..data import InputError
        from .value import ensure_value_models

        needs = list(dict.fromkeys(n for n in (registry.get(m).needs for m in self.methods) if n is not None))
        self.paths = ensure_value_models(run, needs, policy)
        for need, path in self.paths.items():  # a value model or an off-the-shelf verifier (a Hub name too)
            try:
                run.check_model(path, preset_ok=False, kind="scorer")
            except (InputError, FileNotFoundError) as e:
                raise InputError(f"search.{need}: {e}") from None
        run.ensure_data()
        problems = run.task.problems(self.cfg.split)
        self.problems = problems[: self.cfg.n_problems] if self.cfg.n_problems else problems
        self._tokenizer = None
        self._scorers: dict[str, Any] = {}
        self._pool: list[list[dict]] | None = None
        self._scores: dict[tuple[str, str, int], list[list[float]]] = {}
        self._cut: dict[int, dict[int, dict]] = {}  # budget -> _cut_correct's grades, for every pool method

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.run.tokenizer(self.policy)
        return self._tokenizer

    def scorer(self, need: str):
        path = self.paths[need]
        if path not in self._scorers:
            self._scorers[path] = self.run.load_value(path)
        return self._scorers[path]

    def key(self, need: str | None = None, **what: Any) -> str:
        """What a result depends on: the policy, the problems, the value model ``need`` names, ``what``."""
        scorer = self.run.scorer_identity(self.paths[need]) if need is not None else None
        return shard_key(policy=self.run.model_key(self.policy), scorer=scorer, split=self.cfg.split,
                         problems=problems_digest(self.problems), **what)

    # ---- the pool of independent samples
    def pool(self) -> list[list[dict]]:
        """``pool_samples`` graded samples per problem (token ids kept), resumable."""
        if self._pool is not None:
            return self._pool
        from ..engine import SamplingParams
        from ..rollout import rollout

        c, problems, policy = self.cfg, self.problems, self.policy
        n = c.pool_samples
        out = self.out / f"pool-{self.key(**pool_settings(c))}"

        def produce(res, start: int, end: int, advance) -> list[dict]:
            params = [SamplingParams(n=n, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                                     seed=stable_seed(c.seed, "pool", c.split, i)) for i in range(start, end)]
            trajs = rollout(res.generator(policy, c.batch_size), res.task, problems[start:end], params,
                            indices=range(start, end), advance=advance)
            return [{"index": t.index, "sample": t.sample, "prompt_ids": t.prompt_ids,
                     "response_ids": t.response_ids, "response": t.response, "correct": t.correct,
                     "reward": t.reward} for ts in trajs for t in ts]

        recs = resumable_shards(len(problems), c.shard_problems, lambda s, e: out / f"{s:06d}-{e - 1:06d}.jsonl",
                                produce, desc="search pool", progress=self.run.progress, per_item=n,
                                workers=self.run.workers())
        grouped: list[list[dict]] = [[] for _ in self.problems]
        for r in recs:
            grouped[r["index"]].append(r)
        self._pool = grouped
        return grouped

    def mean_response_tokens(self) -> float:
        lengths = [len(r["response_ids"]) for rs in self.pool() for r in rs]
        return sum(lengths) / max(len(lengths), 1)

    def _fitting(self, samples: list[dict], budget: int) -> int:
        """How many of a problem's first pool samples fit ``budget`` tokens together (0: not even the first)."""
        k, used = 0, 0
        while k < len(samples) and used + len(samples[k]["response_ids"]) <= budget:
            used += len(samples[k]["response_ids"])
            k += 1
        return k

    def _cut_correct(self, budget: int) -> dict[int, dict]:
        """Problem -> its first pool sample cut at ``budget`` tokens (``response``) and its grade (``correct``,
        ``reward``), for every problem whose first sample is longer than ``budget`` (one batched
        ``task.score`` call per budget)."""
        if budget not in self._cut:
            pool = self.pool()
            cut = [p for p, rs in enumerate(pool) if rs and self._fitting(rs, budget) == 0]
            texts = [self.tokenizer.decode(pool[p][0]["response_ids"][:budget], skip_special_tokens=True) for p in cut]
            scores = self.run.task.score([self.problems[p] for p in cut], texts) if cut else []
            self._cut[budget] = {p: {"response": t, "correct": bool(sc.correct), "reward": float(sc.reward)}
                                 for p, t, sc in zip(cut, texts, scores)}
        return self._cut[budget]

    def _pool_scores(self, need: str, how: str, budget: int) -> list[list[float]]:
        """Scores by model ``need`` (``how``: at the last token, or the minimum over steps) of the pool
        samples that the largest budget reads, cached for every budget up to it."""
        top = max(*self.cfg.budgets, budget)
        if (need, how, top) not in self._scores:
            from ..search.common import ActionSplitter, score_by_owner
            from ..search.vm_mcts import prm_min_scores

            scorer = self.scorer(need)
            pool = [rs[: self._fitting(rs, top)] for rs in self.pool()]
            flat = [r for rs in pool for r in rs]
            prompts = [r["prompt_ids"] for r in flat]
            states = [r["response_ids"] for r in flat]
            # one value call per problem, so a problem's scores do not depend on the others in the split
            owners = [p for p, rs in enumerate(pool) for _ in rs]
            if how == "min":
                splitter = ActionSplitter(self.tokenizer, self.run.task.action_stop)
                vals = prm_min_scores(scorer, splitter, prompts, states, owners=owners)
            else:
                vals = score_by_owner(scorer, prompts, states, owners)
            it = iter(vals)
            self._scores[(need, how, top)] = [[next(it) for _ in rs] for rs in pool]
        return self._scores[(need, how, top)]

    # ---- one method at one budget
    def run_pool(self, method: PoolMethod, budget: int, out: Path) -> list[dict]:
        """A pool method: on every problem, its choice among the pool samples that fit ``budget``
        (nothing kept in ``out``: the pool and the scores are). A kept problem's record also holds its
        tree (:func:`tree_record`): the root and one child per sample read, valued by what the method
        ranked it by (the model's score; the verifier's reward for an oracle; none for a plain vote)."""
        from ..search.common import mark_chosen, tree_node

        pool = self.pool()
        scores = self._pool_scores(method.needs, method.score, budget) if method.needs is not None else None
        cut = self._cut_correct(budget)
        per = []
        for p, rs in enumerate(pool):
            if p in cut:  # not even one whole sample: the first one, cut at the budget (nothing to choose)
                per.append({"index": p, "correct": cut[p]["correct"], "generated_tokens": budget, "value_tokens": 0,
                            "samples": 0})
                if keeps(self.cfg.keep_trees, p):
                    nodes = mark_chosen([tree_node(0, None, ""),
                                         tree_node(1, 0, cut[p]["response"], terminal=True, reward=cut[p]["reward"],
                                                   sample=0, correct=cut[p]["correct"], tokens=budget,
                                                   finish_reason="budget")], 1)
                    per[-1]["tree"] = tree_record(self.run.task, self.problems[p], method.name, budget, p,
                                                  cut[p]["response"], cut[p]["correct"], budget, nodes)
                continue
            k = self._fitting(rs, budget)
            used = sum(len(r["response_ids"]) for r in rs[:k])
            sc = scores[p][:k] if scores is not None else None
            chosen = method.choose(self.run.task, self.problems[p], rs[:k], sc)
            value_tokens = 0
            if method.needs is not None:
                value_tokens = sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in rs[:k])
            correct = bool(rs[chosen]["correct"]) if chosen is not None else False
            per.append({"index": p, "correct": correct, "generated_tokens": used, "value_tokens": value_tokens,
                        "samples": k})
            if keeps(self.cfg.keep_trees, p):
                ranked = sc if sc is not None else [r["reward"] for r in rs[:k]] if method.oracle else [None] * k
                nodes = [tree_node(0, None, "")] + [
                    tree_node(j + 1, 0, r["response"], value=v, terminal=True, reward=r["reward"], sample=j,
                              correct=bool(r["correct"]), tokens=len(r["response_ids"]))
                    for j, (r, v) in enumerate(zip(rs[:k], ranked))]
                mark_chosen(nodes, None if chosen is None else chosen + 1)
                per[-1]["tree"] = tree_record(self.run.task, self.problems[p], method.name, budget, p,
                                              rs[chosen]["response"] if chosen is not None else "", correct, used,
                                              nodes)
        return per

    def run_tree(self, method: TreeMethod, budget: int, out: Path) -> list[dict]:
        """A tree search on every problem, ``search.shard_problems`` at a time (resumable shards in
        ``out``, made by the run's workers), with the settings its budget rule makes of ``budget``."""
        c, problems, policy = self.cfg, self.problems, self.policy
        scorer_path = self.paths[method.needs] if method.needs is not None else None
        mcfg = method.budget_rule(self.method_cfg(method.name), budget, self.mean_response_tokens)
        search, keep = method.search, c.keep_trees  # (the job goes to the workers: it holds no Searcher)

        def produce(res, start: int, end: int, advance) -> list[dict]:
            chunk, task = problems[start:end], res.task
            scorer = res.scorer(scorer_path) if scorer_path is not None else None
            generator = res.generator(policy, c.batch_size)
            results = search(generator, scorer, task, chunk, mcfg, budget_tokens=budget,
                             indices=list(range(start, end)))
            scores = task.score(chunk, [r.response for r in results])
            advance(end - start)
            out = []
            for r, s in zip(results, scores):
                out.append({"index": r.index, "correct": bool(s.correct), "generated_tokens": r.generated_tokens,
                            "value_tokens": r.value_tokens, "candidates": len(r.candidates)})
                if keeps(keep, r.index):  # its tree, in the shard: a rerun resumes it with the results
                    nodes = method.tree(r, generator.tokenizer) if method.tree is not None else []
                    grade_chosen(nodes, float(s.reward))
                    out[-1]["tree"] = tree_record(task, problems[r.index], method.name, budget, r.index, r.response,
                                                  bool(s.correct), r.generated_tokens, nodes)
            return out

        return resumable_shards(len(problems), c.shard_problems, lambda s, e: out / f"{s:06d}-{e - 1:06d}.jsonl",
                                produce, desc=f"{method.name} @ {budget} tokens", progress=self.run.progress,
                                workers=self.run.workers())

    def method_cfg(self, method: str):
        """A tree method's settings section, with the one response limit every method shares (``search.max_tokens``)."""
        return dataclasses.replace(getattr(self.cfg, registry.get(method).section), max_tokens=self.cfg.max_tokens)

    def run_method(self, method: str, budget: int) -> dict:
        """One method at one budget: per-problem records and the row (kept on disk, resumable)."""
        from ..eval.metrics import bootstrap_ci

        spec: SearchMethod = registry.get(resolve_method(method))
        method = spec.name
        settings = {"pool": list(pool_settings(self.cfg).values()),
                    "budgets": "hold"}  # results of before budgets held (they could overshoot) are not reused
        if isinstance(spec, TreeMethod):
            settings["cfg"] = dataclasses.asdict(self.method_cfg(method))
        key = self.key(spec.needs, method=method, budget=budget, **settings)
        path = self.out / "methods" / f"{method}-{budget}-{key}.json"
        trees = trees_path(path, method, budget)
        if path.exists():
            done = read_json(path)
            wanted = [r["index"] for r in done["problems"] if keeps(self.cfg.keep_trees, r["index"])]
            if not trees_current(trees, key, wanted):  # a result of before, or of other search.keep_trees
                per = RUNNERS[spec.kind](self, spec, budget, path.with_suffix("")) if wanted else []
                self._trees(trees, key, per, path.with_suffix(""))
            return done
        t0 = time.perf_counter()
        per = RUNNERS[spec.kind](self, spec, budget, path.with_suffix(""))
        self._trees(trees, key, per, path.with_suffix(""))  # before the result: it says both are done
        correct = [float(r["correct"]) for r in per]
        ci = bootstrap_ci(correct) or (None, None)
        n = max(len(per), 1)
        generated = sum(r["generated_tokens"] for r in per) / n
        row = {"method": method, "label": spec.label, "budget_tokens": budget, "generated_tokens": generated,
               "budget_used": generated / budget, "max_generated_tokens": max((r["generated_tokens"] for r in per),
                                                                              default=0),
               "value_tokens": sum(r["value_tokens"] for r in per) / n,
               "accuracy": sum(correct) / n, "ci_low": ci[0], "ci_high": ci[1], "n_problems": len(per),
               "oracle": spec.oracle, "seconds": round(time.perf_counter() - t0, 1)}
        write_json(path, {"row": row, "problems": per})
        return {"row": row, "problems": per}


    def _trees(self, path: Path, key: str, per: list[dict], shards: Path) -> None:
        """:func:`write_trees`, saying which kept problems have no tree: a tree search's shards keep the
        trees of the problems ``search.keep_trees`` covered when they were searched."""
        missing = write_trees(path, key, per, self.cfg.keep_trees)
        if missing:
            logger.warning("search: %s: no tree for %d of the problems search.keep_trees keeps (their shards were "
                           "searched before it covered them; remove %s to search them again)", rel(self.run.dir, path),
                           len(missing), rel(self.run.dir, shards))


#: how each kind of method runs (``SearchMethod.kind`` -> the Searcher's runner)
RUNNERS = {PoolMethod.kind: Searcher.run_pool, TreeMethod.kind: Searcher.run_tree}


def run_search(run: Run, method: str, budget: int, policy: str | os.PathLike | None = None) -> dict:
    """``searchrl search``: one method at one budget on ``search.split``; the row."""
    from .. import tracking

    s = Searcher(run, [method], policy, run.dir / "search")
    row = s.run_method(method, budget)["row"]
    tracking.record(s.out, tables={"search": [row]}, kind="search")  # the command's trackers (tracking.report_to)
    return row


def run_compare_search(run: Run, policy: str | os.PathLike | None = None) -> dict:
    """``searchrl compare-search``: every ``search.methods`` at every ``search.budgets``; writes
    ``results.json``, ``results.md`` and ``accuracy_vs_tokens.png`` into ``<run>/compare-search``."""
    from ..eval.report import machine, plot_accuracy_vs_tokens

    c = run.cfg.search
    s = Searcher(run, list(c.methods), policy)
    rows = []
    for budget in sorted(c.budgets):
        for m in s.methods:
            logger.info("search: %s at %d tokens per problem", m, budget)
            rows.append(s.run_method(m, budget)["row"])
    shipped = not policy and str(run.cfg.base_model).startswith("builtin:")
    label = run.cfg.base_model if shipped else run.short(policy or s.policy)  # inside the run dir: relative
    title = (f"{run.cfg.task.name} {c.split}, {len(s.problems)} problems; policy {label}; "
             f"pool: {c.pool_samples} samples at temperature {c.temperature:g}")
    meta = {"split": c.split, "n_problems": len(s.problems), "policy": label,
            "models": {k: rel(run.dir, p) for k, p in s.paths.items() if p}, "budgets": sorted(c.budgets),
            "search": dataclasses.asdict(c), "machine": machine(), "title": title}
    results = {"rows": rows, "meta": meta}
    write_json(s.out / "results.json", results)
    from .. import tracking

    tracking.record(s.out, tables={"compare_search": rows}, config=meta, kind="search")  # tracking.report_to
    write_text(s.out / "results.md", results_markdown(rows, meta))
    plot_accuracy_vs_tokens(rows, s.out / "accuracy_vs_tokens.png", title)
    return results


def results_markdown(rows: list[dict], meta: dict) -> str:
    """One table: a row per method, a column per budget (accuracy % with its 95% interval and the
    tokens actually generated per problem)."""
    budgets = sorted({r["budget_tokens"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["budget_tokens"]): r for r in rows}
    head = "| method | " + " | ".join(f"budget {b} tokens" for b in budgets) + " |"
    lines = [f"Accuracy (%) with 95% bootstrap interval over problems, and generated tokens per problem "
             f"actually used. {meta['title']}. Machine: {meta['machine']}.", "", head,
             "|---|" + "---:|" * len(budgets)]
    for m in methods:
        cells = []
        for b in budgets:
            r = by.get((m, b))
            cells.append("–" if r is None else f"{100 * r['accuracy']:.1f} ({100 * r['ci_low']:.1f}..{100 * r['ci_high']:.1f}), "
                         f"{r['generated_tokens']:.0f} tok")
        lines.append(f"| {registry.label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def method_choices() -> tuple[list[str], str]:
    """What ``searchrl search --method`` accepts (every registered name and alias) and its help text."""
    return [*registry.names(), *registry.aliases()], registry.listing()


__all__ = ["Searcher", "run_search", "run_compare_search", "results_markdown", "resolve_method", "method_choices"]
