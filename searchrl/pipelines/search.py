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
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from ..data import read_json, resumable_shards, write_json, write_text
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


def resolve_method(name: str) -> str:
    """The method ``name`` (or its alias) names; an unknown name is an :class:`~searchrl.data.InputError`."""
    from ..data import InputError

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
        from ..models.value import is_value_dir
        from .value import ensure_value_models

        needs = list(dict.fromkeys(n for n in (registry.get(m).needs for m in self.methods) if n is not None))
        self.paths = ensure_value_models(run, needs, policy)
        for need, path in self.paths.items():
            if not is_value_dir(path):
                raise FileNotFoundError(f"{path}: not a value model directory (search.{need}); "
                                        f"`searchrl train-value` makes one, or leave the setting empty")
        run.ensure_data()
        problems = run.task.problems(self.cfg.split)
        self.problems = problems[: self.cfg.n_problems] if self.cfg.n_problems else problems
        self._tokenizer = None
        self._scorers: dict[str, Any] = {}
        self._pool: list[list[dict]] | None = None
        self._scores: dict[tuple[str, str, int], list[list[float]]] = {}
        self._cut: dict[int, dict[int, bool]] = {}  # budget -> _cut_correct's grades, for every pool method

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
        scorer = self.run.model_identity(self.paths[need]) if need is not None else None
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

    def _cut_correct(self, budget: int) -> dict[int, bool]:
        """Problem -> whether its first pool sample, cut at ``budget`` tokens, is correct, for every
        problem whose first sample is longer than ``budget`` (one batched ``task.score`` call per budget)."""
        if budget not in self._cut:
            pool = self.pool()
            cut = [p for p, rs in enumerate(pool) if rs and self._fitting(rs, budget) == 0]
            texts = [self.tokenizer.decode(pool[p][0]["response_ids"][:budget], skip_special_tokens=True) for p in cut]
            scores = self.run.task.score([self.problems[p] for p in cut], texts) if cut else []
            self._cut[budget] = {p: bool(sc.correct) for p, sc in zip(cut, scores)}
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
        (nothing kept in ``out``: the pool and the scores are)."""
        pool = self.pool()
        scores = self._pool_scores(method.needs, method.score, budget) if method.needs is not None else None
        cut = self._cut_correct(budget)
        per = []
        for p, rs in enumerate(pool):
            if p in cut:  # not even one whole sample: the first one, cut at the budget (nothing to choose)
                per.append({"index": p, "correct": cut[p], "generated_tokens": budget, "value_tokens": 0,
                            "samples": 0})
                continue
            k = self._fitting(rs, budget)
            used = sum(len(r["response_ids"]) for r in rs[:k])
            sc = scores[p][:k] if scores is not None else None
            chosen = method.choose(self.run.task, self.problems[p], rs[:k], sc)
            value_tokens = 0
            if method.needs is not None:
                value_tokens = sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in rs[:k])
            per.append({"index": p, "correct": bool(rs[chosen]["correct"]) if chosen is not None else False,
                        "generated_tokens": used, "value_tokens": value_tokens, "samples": k})
        return per

    def run_tree(self, method: TreeMethod, budget: int, out: Path) -> list[dict]:
        """A tree search on every problem, ``search.shard_problems`` at a time (resumable shards in
        ``out``, made by the run's workers), with the settings its budget rule makes of ``budget``."""
        c, problems, policy = self.cfg, self.problems, self.policy
        scorer_path = self.paths[method.needs] if method.needs is not None else None
        mcfg = method.budget_rule(self.method_cfg(method.name), budget, self.mean_response_tokens)
        search = method.search

        def produce(res, start: int, end: int, advance) -> list[dict]:
            chunk, task = problems[start:end], res.task
            scorer = res.scorer(scorer_path) if scorer_path is not None else None
            results = search(res.generator(policy, c.batch_size), scorer, task, chunk, mcfg,
                             budget_tokens=budget, indices=list(range(start, end)))
            scores = task.score(chunk, [r.response for r in results])
            advance(end - start)
            return [{"index": r.index, "correct": bool(s.correct), "generated_tokens": r.generated_tokens,
                     "value_tokens": r.value_tokens, "candidates": len(r.candidates)}
                    for r, s in zip(results, scores)]

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
        if path.exists():
            return read_json(path)
        t0 = time.perf_counter()
        per = RUNNERS[spec.kind](self, spec, budget, path.with_suffix(""))
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


#: how each kind of method runs (``SearchMethod.kind`` -> the Searcher's runner)
RUNNERS = {PoolMethod.kind: Searcher.run_pool, TreeMethod.kind: Searcher.run_tree}


def run_search(run: Run, method: str, budget: int, policy: str | os.PathLike | None = None) -> dict:
    """``searchrl search``: one method at one budget on ``search.split``; the row."""
    s = Searcher(run, [method], policy, run.dir / "search")
    return s.run_method(method, budget)["row"]


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
    label = str(policy) if policy else (run.cfg.base_model or rel(run.dir, s.policy))
    title = (f"{run.cfg.task.name} {c.split}, {len(s.problems)} problems; policy {label}; "
             f"pool: {c.pool_samples} samples at temperature {c.temperature:g}")
    meta = {"split": c.split, "n_problems": len(s.problems), "policy": label,
            "models": {k: rel(run.dir, p) for k, p in s.paths.items() if p}, "budgets": sorted(c.budgets),
            "search": dataclasses.asdict(c), "machine": machine(), "title": title}
    results = {"rows": rows, "meta": meta}
    write_json(s.out / "results.json", results)
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
