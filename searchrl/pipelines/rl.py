"""The RL commands: ``searchrl ppo`` and ``searchrl grpo``, each a resumable stage of a run.

A run trains a policy checkpoint (``--model``, default the run's base policy: for Guided-ReST's
recipe, the Guided-ReST model) with the ``ppo`` or ``grpo`` section's settings on the task's
``split``, into ``<run_dir>/<name>/`` (``name`` defaults to the command): ``final/`` is the
trained policy (an HF directory any command can load) with its critic in ``final/critic/``,
``metrics.jsonl`` one line per iteration, ``curves.png`` the training curves. For PPO the critic
is a scalar :class:`~searchrl.models.value.ValueModel` initialised from the same checkpoint as
the policy (the paper's recipe: no separate critic warm-up unless ``critic_warmup`` says so).

The stage records the starting checkpoint's fingerprint, the task data and the settings; a rerun
with other ones into the same directory is refused, naming them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..data import read_jsonl_log
from ..rundir import Stage, rel, trajectory_settings
from .run import Run, logger

ALGORITHMS = ("ppo", "grpo")


def rl_config(run: Run, algo: str):
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown RL command {algo!r}; choose one of {ALGORITHMS}")
    return getattr(run.cfg, algo)


def rl_stage(run: Run, algo: str, out: Path, policy: str | os.PathLike, cfg=None) -> Stage:
    cfg = cfg if cfg is not None else rl_config(run, algo)
    return Stage(out, {"policy": run.model_identity(policy), **run.graded_depends(), algo: trajectory_settings(cfg)},
                 name=f"{algo} ({out.name})", defaults=run.graded_defaults())


def run_rl(run: Run, algo: str, policy: str | os.PathLike | None = None, name: str | None = None,
           cfg=None) -> Path:
    """Train ``policy`` (default: the run's base policy) with ``algo``'s settings (or ``cfg``) into
    ``<run_dir>/<name or algo>``; returns the final policy directory."""
    import copy

    from ..eval.report import plot_training_curves
    from ..models.value import ValueModel
    from ..seeding import stable_seed
    from ..train.rl import train_rl

    path = run.policy_path(policy)
    out = run.dir / (name or algo)
    cfg = dataclasses.replace(cfg if cfg is not None else rl_config(run, algo), output_dir=str(out))
    stage = rl_stage(run, algo, out, path, cfg)
    stage.check()
    if stage.done:
        return out / "final"
    run.ensure_data()
    problems = run.task.problems(cfg.split)
    if cfg.n_problems:
        problems = problems[: cfg.n_problems]
    stage.begin()
    model, tok = run.load(path)
    critic = (ValueModel.from_policy(copy.deepcopy(model), "scalar", seed=stable_seed("critic", cfg.seed))
              if cfg.uses_critic else None)
    what = (f"{'operation' if cfg.adv_estimator == 'gae_action' else 'token'}-level PPO" if cfg.uses_critic
            else f"GRPO ({cfg.policy_loss})")
    logger.info("%s of %s on %d %s problems for %d iterations of %d prompts x %d samples, into %s", what, path,
                len(problems), cfg.split, cfg.iterations, cfg.prompts_per_step, cfg.samples_per_prompt, out)
    summary = train_rl(model, tok, run.task, problems, cfg, critic=critic,
                       make_generator=lambda m: run.generator(m, tok, cfg.batch_size), progress=run.progress)
    lines = read_jsonl_log(out / "metrics.jsonl")
    plot_training_curves(lines, out / "curves.png",
                         f"{what} from {run.short(path)} ({cfg.prompts_per_step} prompts x "
                         f"{cfg.samples_per_prompt} per iteration, lr {cfg.lr:g}"
                         + (f", critic lr {cfg.critic_lr:g}" if cfg.uses_critic else "") + ")")
    stage.finish(policy=rel(run.dir, path), final_reward=summary.get("final_reward"),
                 samples=summary.get("samples"))
    return out / "final"


__all__ = ["run_rl", "rl_stage", "rl_config", "ALGORITHMS"]
