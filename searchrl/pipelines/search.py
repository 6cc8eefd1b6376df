"""The search commands: ``searchrl search`` (one method at one budget) and ``searchrl compare-search``
(every method at the same token budgets, with intervals).

Methods (``METHODS``) and what they need:

* from one **pool** of ``search.pool_samples`` samples per problem (temperature
  ``search.temperature``, seeded per problem): at budget B a problem uses its first samples whose
  tokens add up to at most B (always at least one), so every pool method at every budget reads
  the same samples. ``bon-oracle`` (best-of-N by the task's verifier: an *oracle*, an upper bound
  no real search has), ``bon-value`` / ``bon-orm`` (best-of-N by the value model / the ORM),
  ``vote`` (majority vote, self-consistency), ``weighted-vote`` (value-weighted majority vote; ReST-MCTS*'s
  "SC + value"), ``orm-vote`` (ORM-weighted majority vote: "SC + ORM"),
  ``prm-min`` (best-of-N by the minimum step value, ReST-RL's PRM baseline);
* **tree searches** run once per budget (``budget_tokens`` = B per problem): ``vm-mcts`` and
  ``orm-mcts`` (ReST-RL Algorithm 3 with the value model / the ORM), ``mcts-star`` (ReST-MCTS*);
* **VGS**: ``beam`` (block beam search, width ``search.beam.width``, final weighted vote) with
  ``num_blocks`` N chosen so that N full responses fit the budget (N = B / mean pool response
  length, rounded down to a multiple of the width, at least one beam), and ``dvts``
  (``search.beam.num_blocks`` per repetition, as many repetitions as fit the budget). Both use the
  3-class classifier (``search.classifier``), else the scalar value model. ``mcts-star`` reads
  ``search.mcts_star_value`` (a value model trained on MCTS* targets), else ``search.value``.

Value models left unset (``search.value``, ``search.orm``, ``search.classifier``,
``search.mcts_star_value``) are made in the run directory first
(:func:`searchrl.pipelines.value.ensure_value_models`: data, then training, each resumable).

Every row reports the generated tokens per problem the method actually used (a search may stop
short of a budget or overshoot it by one step), value-model tokens separately, accuracy and a 95%
bootstrap interval over problems. Results are kept per (method, budget) under
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
from ..seeding import stable_seed
from ..search.config import ALIASES, METHODS, POOL_METHODS, TREE_METHODS
from .run import Run, logger

#: the model each method scores with: "value", "orm", "classifier" (falls back to value) or None
NEEDS = {"bon-oracle": None, "vote": None, "bon-value": "value", "weighted-vote": "value", "orm-vote": "orm",
         "prm-min": "value",
         "bon-orm": "orm", "vm-mcts": "value", "orm-mcts": "orm", "mcts-star": "mcts_star_value",
         "beam": "classifier", "dvts": "classifier"}
LABELS = {"bon-oracle": "BoN, verifier (oracle)", "vote": "majority vote", "bon-value": "BoN, value model",
          "bon-orm": "BoN, ORM", "weighted-vote": "value-weighted vote", "orm-vote": "ORM-weighted vote",
          "prm-min": "BoN, min step value (PRM)",
          "vm-mcts": "VM-MCTS", "orm-mcts": "ORM-MCTS", "mcts-star": "MCTS*", "beam": "VGS beam (w=2)",
          "dvts": "VGS DVTS"}


def resolve_method(name: str) -> str:
    """The method ``name`` (or its alias) names; an unknown name is an :class:`~searchrl.data.InputError`."""
    from ..data import InputError

    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise InputError(f"--method {name}: unknown search method; known: {' | '.join(METHODS)} (bon = bon-value)")
    return name


class Searcher:
    """Everything a run's searches share: problems, policy generator, scorers, the pool."""

    def __init__(self, run: Run, methods: list[str], policy: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None):
        from .commands import policy_path

        self.run, self.cfg = run, run.cfg.search
        self.methods = [resolve_method(m) for m in methods]
        self.out = Path(out_dir) if out_dir is not None else run.dir / "compare-search"
        self.policy = policy_path(run, policy)
        from ..models.value import is_value_dir
        from .value import ensure_value_models

        needs = list(dict.fromkeys(NEEDS[m] for m in self.methods if NEEDS[m] is not None))
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

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.run.tokenizer(self.policy)
        return self._tokenizer

    def scorer(self, need: str):
        from .value import load_value_model

        path = self.paths[need]
        if path not in self._scorers:
            self._scorers[path] = load_value_model(path, self.run)
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
        out = self.out / f"pool-{self.key(n=n, temperature=c.temperature, max_tokens=c.max_tokens, seed=c.seed)}"

        def produce(res, start: int, end: int, advance) -> list[dict]:
            params = [SamplingParams(n=n, temperature=c.temperature, max_tokens=c.max_tokens,
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
        """How many of a problem's first pool samples fit ``budget`` tokens (at least one)."""
        k, used = 0, 0
        while k < len(samples) and (k == 0 or used + len(samples[k]["response_ids"]) <= budget):
            used += len(samples[k]["response_ids"])
            k += 1
        return k

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
    def run_pool_method(self, method: str, budget: int) -> list[dict]:
        from ..search import bon

        pool = self.pool()
        scores = None
        if NEEDS[method] is not None:
            scores = self._pool_scores(NEEDS[method], "min" if method == "prm-min" else "last", budget)
        per = []
        for p, rs in enumerate(pool):
            k = self._fitting(rs, budget)
            used = sum(len(r["response_ids"]) for r in rs[:k])
            texts = [r["response"] for r in rs[:k]]
            if method == "bon-oracle":
                chosen = bon.best_of_n([r["reward"] for r in rs[:k]])
            else:
                how = {"vote": "vote", "weighted-vote": "weighted-vote", "orm-vote": "weighted-vote"}.get(method, "best")
                answers = bon.answers_of(self.run.task, self.problems[p], texts)
                sc = scores[p][:k] if scores is not None else None
                chosen = bon.select(how, answers, sc)
            value_tokens = 0
            if NEEDS[method] is not None:
                value_tokens = sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in rs[:k])
            per.append({"index": p, "correct": bool(rs[chosen]["correct"]) if chosen is not None else False,
                        "generated_tokens": used, "value_tokens": value_tokens, "samples": k})
        return per

    def run_tree_method(self, method: str, budget: int, out: Path) -> list[dict]:
        """A tree search on every problem, ``search.shard_problems`` at a time (resumable shards in
        ``out``, made by the run's workers)."""
        from ..search.beam import beam_search
        from ..search.mcts_star import mcts_star
        from ..search.vm_mcts import vm_mcts

        c, problems, policy, scorer_path = self.cfg, self.problems, self.policy, self.paths[NEEDS[method]]
        mcfg = self.method_cfg(method)
        if method == "beam":
            mean = max(self.mean_response_tokens(), 1.0)
            mcfg = dataclasses.replace(mcfg, num_blocks=max(mcfg.width, int(budget / mean) // mcfg.width * mcfg.width),
                                       reps=1)
        elif method == "dvts":
            mean = max(self.mean_response_tokens(), 1.0)
            mcfg = dataclasses.replace(mcfg, reps=max(1, round(budget / (mcfg.num_blocks * mean))))
        search = {"vm-mcts": vm_mcts, "orm-mcts": vm_mcts, "mcts-star": mcts_star}.get(method, beam_search)

        def produce(res, start: int, end: int, advance) -> list[dict]:
            chunk, task = problems[start:end], res.task
            results = search(res.generator(policy, c.batch_size), res.scorer(scorer_path), task, chunk, mcfg,
                             budget_tokens=budget, indices=list(range(start, end)))
            scores = task.score(chunk, [r.response for r in results])
            advance(end - start)
            return [{"index": r.index, "correct": bool(s.correct), "generated_tokens": r.generated_tokens,
                     "value_tokens": r.value_tokens, "candidates": len(r.candidates)}
                    for r, s in zip(results, scores)]

        return resumable_shards(len(problems), c.shard_problems, lambda s, e: out / f"{s:06d}-{e - 1:06d}.jsonl",
                                produce, desc=f"{method} @ {budget} tokens", progress=self.run.progress,
                                workers=self.run.workers())

    def method_cfg(self, method: str):
        """A tree method's settings, with the one response limit every method shares (``search.max_tokens``)."""
        section = {"vm-mcts": "vm_mcts", "orm-mcts": "vm_mcts", "mcts-star": "mcts_star", "beam": "beam",
                   "dvts": "beam"}[method]
        return dataclasses.replace(getattr(self.cfg, section), max_tokens=self.cfg.max_tokens)

    def run_method(self, method: str, budget: int) -> dict:
        """One method at one budget: per-problem records and the row (kept on disk, resumable)."""
        from ..eval.metrics import bootstrap_ci

        method = resolve_method(method)
        settings = {"pool": [self.cfg.pool_samples, self.cfg.temperature, self.cfg.max_tokens, self.cfg.seed]}
        if method in TREE_METHODS:
            settings["cfg"] = dataclasses.asdict(self.method_cfg(method))
        key = self.key(NEEDS[method], method=method, budget=budget, **settings)
        path = self.out / "methods" / f"{method}-{budget}-{key}.json"
        if path.exists():
            return read_json(path)
        t0 = time.perf_counter()
        per = (self.run_pool_method(method, budget) if method in POOL_METHODS
               else self.run_tree_method(method, budget, path.with_suffix("")))
        correct = [float(r["correct"]) for r in per]
        ci = bootstrap_ci(correct) or (None, None)
        n = max(len(per), 1)
        row = {"method": method, "label": LABELS[method], "budget_tokens": budget,
               "generated_tokens": sum(r["generated_tokens"] for r in per) / n,
               "value_tokens": sum(r["value_tokens"] for r in per) / n,
               "accuracy": sum(correct) / n, "ci_low": ci[0], "ci_high": ci[1], "n_problems": len(per),
               "oracle": method == "bon-oracle", "seconds": round(time.perf_counter() - t0, 1)}
        write_json(path, {"row": row, "problems": per})
        return {"row": row, "problems": per}


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
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["METHODS", "POOL_METHODS", "TREE_METHODS", "Searcher", "run_search", "run_compare_search",
           "results_markdown", "resolve_method"]
