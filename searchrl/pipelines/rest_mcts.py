"""``searchrl rest-mcts``: ReST-MCTS*'s self-training loop (:mod:`searchrl.selftrain.rest_mcts`) as a
resumable stage of a run: from ``--model`` (default: the run's base policy) on ``rest_mcts.split`` into
``<run_dir>/<name>/`` (``v0/`` the initial value model, ``iterK/policy/final`` and ``iterK/value/final``
each iteration's models, ``iterK/stats.json`` what its searches found)."""

from __future__ import annotations

import os
from pathlib import Path

from .run import Run, logger


def run_rest_mcts_command(run: Run, policy: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Run (or resume) ReST-MCTS*; returns the last iteration's directory."""
    from ..selftrain.rest_mcts import run_rest_mcts
    from .commands import policy_path
    from .value import gold_value_records, load_value_model

    cfg = run.cfg.rest_mcts
    base = policy_path(run, policy)
    out = run.dir / (name or "rest-mcts")
    run.ensure_data()
    problems = run.task.problems(cfg.split)
    if cfg.n_problems:
        problems = problems[: cfg.n_problems]

    def v0_records() -> list[dict]:
        gold = run.task.problems("train")[: cfg.v0_problems or None]
        return gold_value_records(run.task, run.tokenizer(base), gold, 0, cfg.seed)

    logger.info("ReST-MCTS* from %s on %d %s questions, %d iterations of %d MCTS* iterations each, into %s", base,
                len(problems), cfg.split, cfg.iterations, cfg.search_iterations, out)
    return run_rest_mcts(run.task, problems, run.load, run.generator, lambda p: load_value_model(p, run), cfg,
                         run.cfg.search.mcts_star, run.cfg.rest_sft, run.cfg.value, out, base, v0_records,
                         depends=run.graded_depends(), depends_defaults=run.graded_defaults(),
                         progress=run.progress, workers=run.workers())


__all__ = ["run_rest_mcts_command"]
