"""Evaluate a policy on a task the way the Guided-ReST paper does.

Greedy decoding (one sample per problem) and sampled decoding (``n_samples`` per problem
at temperature 1.0, each sample from its own seed); each response graded by the task's
verifier; then per split the unbiased pass@k (k = 1, 2, 4, ..., 32) and accuracy against
a token budget (a sample counts only if correct within the budget).

Generation is the slow part, so it is resumable: samples are written in shards of
``shard_problems`` problems (``<out>/samples/<split>/<mode>-<key>/<first>-<last>-<digest>.jsonl``,
the key naming the model and settings that made them) through temporary files renamed into
place; a rerun skips finished shards and a changed model or setting makes new ones. Each problem's samples
come from a seed derived from ``(seed, split, problem index, sample index)``, so a shard's
content does not depend on what else was generated with it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .. import tracking
from ..data import resumable_shards, write_json
from ..engine import SamplingParams
from ..fanout import as_workers
from ..rollout import rollout
from ..rundir import problems_digest, shard_key
from ..seeding import stable_seed
from .metrics import summarize


def budgets_for(max_tokens: int) -> list[int]:
    """Token budgets 32, 64, ... up to ``max_tokens`` (always included)."""
    out, b = [], 32
    while b < max_tokens:
        out.append(b)
        b *= 2
    return out + [max_tokens]


def generate_split(source, task, split: str, problems: list[dict], mode: str, n: int, temperature: float,
                   top_p: float, max_tokens: int, seed: int, out_dir: str | os.PathLike, model_id: str,
                   shard_problems: int = 50, progress: bool = True, turns: int = 1,
                   policy: str | os.PathLike | None = None, batch_size: int = 64) -> list[dict]:
    """Generate and grade ``n`` samples per problem (``mode`` "greedy" or "sampled"), resumably.

    ``source`` is a generator, or workers (:mod:`searchrl.fanout`) that sample from the
    checkpoint ``policy`` (``batch_size`` rows at a time) wherever they run.

    ``turns > 1``: each sample is a self-repair episode (:func:`searchrl.episodes.run_episodes`, no
    guidance), graded by its last turn; ``num_tokens`` counts the whole episode after the prompt.
    Shards are keyed by what produced them (``model_id``, the sampling settings and seed; each
    shard's file name carries a digest of its problems), so a changed model or setting never
    reuses another's samples. Returns the sample records of all problems, in problem order.
    """
    key = shard_key(model=model_id, mode=mode, n=n, temperature=temperature, top_p=top_p,
                    max_tokens=max_tokens, seed=seed, split=split, **({"turns": turns} if turns > 1 else {}))
    out = Path(out_dir) / "samples" / split / f"{mode}-{key}"

    def path_of(start: int, end: int) -> Path:
        return out / f"{start:06d}-{end - 1:06d}-{problems_digest(problems[start:end])}.jsonl"

    def produce(res, start: int, end: int, advance) -> list[dict]:
        chunk, generator, task = problems[start:end], res.generator(policy, batch_size), res.task
        if turns > 1:
            from ..episodes import run_episodes

            eps = run_episodes(generator, task, chunk, n=n, turns=turns, max_tokens=max_tokens, temperature=temperature,
                               top_p=top_p, seed=seed, tag=("eval", split), indices=range(start, end), advance=advance)
            return [{"split": split, "mode": mode, **e.to_record()} for es in eps for e in es]
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                 seed=stable_seed(seed, split, start + i)) for i in range(len(chunk))]
        trajs = rollout(generator, task, chunk, params, indices=range(start, end), advance=advance)
        return [{"split": split, "mode": mode, **t.to_record(tokens=False)} for ts in trajs for t in ts]

    return resumable_shards(len(problems), shard_problems, path_of, produce, desc=f"{split} {mode}",
                            progress=progress, per_item=n * turns, workers=as_workers(source, task))


def sampling_note(cfg) -> str:
    """What an evaluation sampled, for the report's titles (``cfg``: an EvalConfig)."""
    problems = f"{cfg.n_problems} problems per split" if cfg.n_problems else "all problems"
    episodes = f", episodes of up to {cfg.turns} turns" if getattr(cfg, "turns", 1) > 1 else ""
    return f"temperature {cfg.temperature:g}, {cfg.n_samples} samples x {problems}{episodes}"


def _by_problem(records: list[dict], n_problems: int) -> list[list[tuple[bool, int]]]:
    grouped: list[list[tuple[bool, int]]] = [[] for _ in range(n_problems)]
    for r in records:
        grouped[r["index"]].append((bool(r["correct"]), r["num_tokens"]))
    return grouped


def evaluate(source, task, cfg, out_dir: str | os.PathLike, model_id: str,
             progress: bool = True, policy: str | os.PathLike | None = None) -> dict[str, Any]:
    """Greedy and sampled evaluation on ``cfg.splits``; returns ``summarize(...)`` output.

    ``source`` is a generator, or workers that sample from the checkpoint ``policy``
    (:mod:`searchrl.fanout`); ``cfg`` is an :class:`searchrl.config.EvalConfig`; ``model_id``
    identifies the policy (:func:`searchrl.rundir.model_fingerprint`). Writes the samples
    (resumable) and ``<out_dir>/summary.json``.
    """
    source = as_workers(source, task)
    sampled: dict[str, list[list[tuple[bool, int]]]] = {}
    greedy: dict[str, list[bool]] = {}
    episodes: dict[str, dict] = {}
    for split in cfg.splits:
        problems = task.problems(split)
        if cfg.n_problems:
            problems = problems[: cfg.n_problems]
        common = dict(max_tokens=cfg.max_tokens, seed=cfg.seed, out_dir=out_dir, model_id=model_id,
                      shard_problems=cfg.shard_problems, progress=progress, turns=cfg.turns, policy=policy,
                      batch_size=cfg.batch_size)
        if cfg.greedy:
            recs = generate_split(source, task, split, problems, "greedy", 1, 0.0, 1.0, **common)
            greedy[split] = [g[0][0] for g in _by_problem(recs, len(problems))]
        if cfg.n_samples:
            recs = generate_split(source, task, split, problems, "sampled", cfg.n_samples, cfg.temperature,
                                  cfg.top_p, **common)
            sampled[split] = _by_problem(recs, len(problems))
            if cfg.turns > 1:  # how much the later turns add: the first turn alone against the whole episode
                episodes[split] = {"first_turn_accuracy": sum(bool(r["first_correct"]) for r in recs) / len(recs),
                                   "accuracy": sum(bool(r["correct"]) for r in recs) / len(recs),
                                   "turns_mean": sum(r["n_turns"] for r in recs) / len(recs)}
        else:
            sampled[split] = [[] for _ in problems]
    summary = summarize(sampled, ks=cfg.ks, budgets=budgets_for(cfg.max_tokens), greedy=greedy or None)
    if episodes:
        summary["episodes"] = episodes
    write_json(Path(out_dir) / "summary.json", summary)
    rows = summary_rows(summary)
    tracking.record(out_dir, metrics={r["split"]: {k: v for k, v in r.items() if k != "split"} for r in rows},
                    tables={"eval": rows}, kind="eval",
                    config={"model": model_id, **(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {})})
    return summary


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per split of :func:`evaluate`'s summary: greedy accuracy, pass@k, sizes and mean tokens (what the
    trackers show as the evaluation's table)."""
    rows = []
    for split, s in summary.items():
        if split == "episodes" or not isinstance(s, dict):
            continue
        row: dict[str, Any] = {"split": split}
        if "greedy" in s:
            row["greedy"] = s["greedy"]
        row.update({f"pass@{k}": v for k, v in s.get("pass@k", {}).items()})
        row.update({k: s.get(k) for k in ("num_problems", "num_samples", "mean_tokens", "mean_tokens_correct")})
        row.update({f"episodes/{k}": v for k, v in summary.get("episodes", {}).get(split, {}).items()})
        rows.append(row)
    return rows
