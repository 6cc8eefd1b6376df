"""Evaluate a policy on a task the way the Guided-ReST paper does.

Greedy decoding (one sample per problem) and sampled decoding (``n_samples`` per problem
at temperature 1.0, each sample from its own seed); each response graded by the task's
verifier; then per split the unbiased pass@k (k = 1, 2, 4, ..., 32) and accuracy against
a token budget (a sample counts only if correct within the budget).

Generation is the slow part, so it is resumable: samples are written in shards of
``shard_problems`` problems (``<out>/samples/<split>/<mode>-<first>-<last>.jsonl``) through
temporary files renamed into place; a rerun skips finished shards. Each problem's samples
come from a seed derived from ``(seed, split, problem index, sample index)``, so a shard's
content does not depend on what else was generated with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data import resumable_shards, write_json
from ..seeding import stable_seed
from ..engine import SamplingParams, Sampler
from ..models.tokenizer import prompt_for
from .metrics import summarize


def budgets_for(max_tokens: int) -> list[int]:
    """Token budgets 32, 64, ... up to ``max_tokens`` (always included)."""
    out, b = [], 32
    while b < max_tokens:
        out.append(b)
        b *= 2
    return out + [max_tokens]


def generate_split(sampler: Sampler, tokenizer, task, split: str, problems: list[dict], mode: str,
                   n: int, temperature: float, top_p: float, max_tokens: int, seed: int,
                   out_dir: str | os.PathLike, shard_problems: int = 50, progress: bool = True) -> list[dict]:
    """Generate and grade ``n`` samples per problem (``mode`` "greedy" or "sampled"), resumably.

    Returns the sample records of all problems, in problem order.
    """
    out = Path(out_dir) / "samples" / split

    def produce(start: int, end: int) -> list[dict]:
        chunk = problems[start:end]
        prompts = [prompt_for(tokenizer, task.prompt(p)) for p in chunk]
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                 seed=stable_seed(seed, split, start + i)) for i in range(len(chunk))]
        shard = []
        for i, (p, o) in enumerate(zip(chunk, sampler.generate(prompts, params))):
            for c in o.outputs:
                shard.append({"split": split, "index": start + i, "mode": mode, "sample": c.index,
                              "response": c.text, "num_tokens": len(c.token_ids),
                              "finish_reason": c.finish_reason, "reward": task.reward(p, c.text)})
        return shard

    return resumable_shards(len(problems), shard_problems, lambda s, e: out / f"{mode}-{s:06d}-{e - 1:06d}.jsonl",
                            produce, desc=f"{split} {mode}", progress=progress)


def _by_problem(records: list[dict], n_problems: int) -> list[list[tuple[bool, int]]]:
    grouped: list[list[tuple[bool, int]]] = [[] for _ in range(n_problems)]
    for r in records:
        grouped[r["index"]].append((r["reward"] > 0, r["num_tokens"]))
    return grouped


def evaluate(model, tokenizer, task, cfg, out_dir: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Greedy and sampled evaluation on ``cfg.splits``; returns ``summarize(...)`` output.

    ``cfg`` is an :class:`searchrl.config.EvalConfig`. Writes the samples (resumable) and
    ``<out_dir>/summary.json``.
    """
    sampler = Sampler(model, tokenizer, max_batch_size=cfg.batch_size)
    sampled: dict[str, list[list[tuple[bool, int]]]] = {}
    greedy: dict[str, list[bool]] = {}
    for split in cfg.splits:
        problems = task.problems(split)
        if cfg.n_problems:
            problems = problems[: cfg.n_problems]
        if cfg.greedy:
            recs = generate_split(sampler, tokenizer, task, split, problems, "greedy", 1, 0.0, 1.0,
                                  cfg.max_tokens, cfg.seed, out_dir, cfg.shard_problems, progress)
            greedy[split] = [g[0][0] for g in _by_problem(recs, len(problems))]
        if cfg.n_samples:
            recs = generate_split(sampler, tokenizer, task, split, problems, "sampled", cfg.n_samples,
                                  cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed, out_dir,
                                  cfg.shard_problems, progress)
            sampled[split] = _by_problem(recs, len(problems))
        else:
            sampled[split] = [[] for _ in problems]
    summary = summarize(sampled, ks=cfg.ks, budgets=budgets_for(cfg.max_tokens), greedy=greedy or None)
    write_json(Path(out_dir) / "summary.json", summary)
    return summary
