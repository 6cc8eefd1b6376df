"""The self-training commands, each a resumable stage of a run on the skeleton of
:mod:`searchrl.selftrain.loop`:

* ``searchrl selftrain``: ReST (``selftrain.guidance_rounds=0``) or Guided-ReST, with multi-turn
  self-repair episodes when ``selftrain.turns > 1`` (:mod:`searchrl.selftrain.rest`), into
  ``<run_dir>/<name>/iterN``;
* ``searchrl rest-grpo``: ReST-GRPO, or GRPO / ReST-DPO on the same loop and steps
  (:mod:`searchrl.selftrain.rest_grpo`), with ``reward_std.png`` (ReST-RL Figure 2);
* ``searchrl rest-mcts``: ReST-MCTS* (:mod:`searchrl.selftrain.rest_mcts`): ``v0/`` the initial value
  model, ``iterK/policy/final`` and ``iterK/value/final`` each iteration's models, ``iterK/stats.json``
  what its searches found.

Each starts from ``--model`` (default: the run's base policy) and gets the run's task, loaders, workers
and stage dependencies through ``Run.selftrain_context()``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .run import Run, logger


def _problems(run: Run, split: str, n: int) -> list[dict]:
    problems = run.task.problems(split)
    return problems[:n] if n else problems


def selftrain_name(run: Run, name: str | None) -> str:
    """The directory of ``searchrl selftrain``: ``--name``, else guided-rest or rest."""
    return name or ("guided-rest" if run.cfg.selftrain.guidance_rounds else "rest")


def run_selftrain_command(run: Run, policy: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """``searchrl selftrain``: ReST / Guided-ReST from ``policy`` into ``<run_dir>/<name>``; returns the last
    iteration's model."""
    from ..selftrain.rest import run_selftrain

    base = run.policy_path(policy)
    run.ensure_data()
    return run_selftrain(run.selftrain_context(), cfg=run.cfg.selftrain, sft_cfg=run.cfg.rest_sft,
                         method_dir=run.dir / selftrain_name(run, name), base_model=base)


def selftrain_stats(run: Run, name: str | None = None) -> list[dict]:
    """The generation statistics of each finished iteration of ``searchrl selftrain``."""
    from ..selftrain.rest import read_stats

    return read_stats(run.dir / selftrain_name(run, name))


def training_per_iteration(cfg) -> str:
    """What ``rest_grpo.method`` trains each iteration, as the command's log says it."""
    c = cfg.rest_grpo
    if c.method == "rest-dpo":
        return f"{cfg.dpo.epochs:g} DPO epoch(s) on its pairs"
    if c.method == "rest-grpo" and not c.grpo_iterations:  # Algorithm 1 line 19: all of P_Q+
        return "one GRPO pass over its assembled prompts (P_Q+)"
    return f"{c.grpo_iterations if c.method == 'rest-grpo' else cfg.grpo.iterations} GRPO steps"


def run_rest_grpo_command(run: Run, policy: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """``searchrl rest-grpo``: ReST-GRPO (or, with ``rest_grpo.method=grpo``, GRPO on the same loop and
    steps) from ``policy`` into ``<run_dir>/<name or method>``; returns the last policy directory."""
    from ..eval.report import plot_reward_std
    from ..selftrain.rest_grpo import reward_std_by_step, run_rest_grpo

    cfg = run.cfg.rest_grpo
    path = run.policy_path(policy)
    out = run.dir / (name or cfg.method)
    run.ensure_data()
    problems = _problems(run, cfg.split, cfg.n_problems)
    logger.info("%s from %s on %d %s questions, %d iterations of %s, into %s", cfg.method, path,
                len(problems), cfg.split, cfg.iterations, training_per_iteration(run.cfg), out)
    final = run_rest_grpo(run.selftrain_context(), cfg=cfg, grpo_cfg=run.cfg.grpo, dpo_cfg=run.cfg.dpo,
                          problems=problems, method_dir=out, policy=path)
    if cfg.method != "rest-dpo":
        plot_reward_std({cfg.method: reward_std_by_step(out)}, out / "reward_std.png", cfg.sigma0,
                        f"{cfg.method} from {run.short(path)}: reward std of GRPO's groups")
    return final


def run_rest_mcts_command(run: Run, policy: str | os.PathLike | None = None, name: str | None = None) -> dict:
    """``searchrl rest-mcts``: run (or resume) ReST-MCTS*; returns ``{"last", "policy", "value"}``: the last
    iteration's directory (the method directory when there is none) and the models it ended with."""
    from ..selftrain.rest_mcts import run_rest_mcts
    from .value import gold_value_records

    cfg = run.cfg.rest_mcts
    base = run.policy_path(policy)
    out = run.dir / (name or "rest-mcts")
    run.ensure_data()
    problems = _problems(run, cfg.split, cfg.n_problems)

    def v0_records() -> list[dict]:
        gold = run.task.problems("train")[: cfg.v0_problems or None]
        return gold_value_records(run.task, run.tokenizer(base), gold, 0, cfg.seed)

    logger.info("ReST-MCTS* from %s on %d %s questions, %d iterations of %d MCTS* iterations each, into %s", base,
                len(problems), cfg.split, cfg.iterations, cfg.search_iterations, out)
    return run_rest_mcts(run.selftrain_context(), cfg=cfg, search_cfg=run.cfg.search.mcts_star,
                         sft_cfg=run.cfg.rest_sft, value_cfg=run.cfg.value, problems=problems, method_dir=out,
                         base=base, v0_records=v0_records)


def rest_mcts_iterations(run: Run, name: str | None = None) -> list[dict]:
    """Each finished ReST-MCTS* iteration's record (models and data counts), in order."""
    from ..selftrain.rest_mcts import read_iterations

    return read_iterations(run.dir / (name or "rest-mcts"))


__all__ = ["run_selftrain_command", "selftrain_stats", "selftrain_name", "run_rest_grpo_command",
           "run_rest_mcts_command", "rest_mcts_iterations"]
