"""The demo: SoS vs ReST vs Guided-ReST (+ PPO) on Countdown, end to end, on this machine.

From nothing: Countdown data, the Stream-of-Search base model (SFT on mixed DFS/BFS
traces), ReST and Guided-ReST iterations on the task's self-training split, the PPO rows that
``demo.ppo_rows`` names (operation-level PPO from Guided-ReST in the default preset; from each
of the three and token-level PPO from Guided-ReST, the paper's ablation, in ``full``), then greedy
accuracy and sampled pass@k of all three on seen and unseen targets with 95% bootstrap
intervals and paired differences, written as a table in the seeds' layout (Markdown), a
pass@k plot and an accuracy-vs-token-budget plot. Presets: ``default`` (500 self-training
problems per iteration, 4 samples per problem, one PPO row: about 30 min here), ``full`` (1,000
problems, 32 samples so pass@k reaches k = 32, all four PPO rows), ``smoke`` (minuscule, all
four PPO rows).

Every stage is resumable (see :mod:`searchrl.rundir` and :mod:`searchrl.selftrain.rest`):
kill it at any moment, rerun the same command, and it continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from importlib import resources
from pathlib import Path

from ..config import Config, to_dict
from ..data import read_json, write_json, write_text
from .run import Run, RunDirError, config_for_run_dir, logger, run_dir_override

PRESETS = ("default", "full", "smoke")


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ValueError(f"unknown demo preset {name!r}; choose one of {PRESETS}")
    return Path(str(resources.files("searchrl") / "presets" / f"demo-{name}.yaml"))


def load_demo_config(preset: str | None, config: str | None, overrides: list[str],
                     run_dir: str | None = None) -> Config:
    """An existing demo run directory's recorded config (when neither a preset nor a recipe is
    named), else the preset (default ``default``), then the optional recipe; overrides on top.

    The run directory is ``--run-dir``, else a ``run_dir=`` override, else the default preset's
    (``runs/demo``).
    """
    import yaml

    from ..rundir import recorded_config

    if preset is None and config is None:
        where = (run_dir or run_dir_override(overrides)
                 or yaml.safe_load(preset_path("default").read_text(encoding="utf-8"))["run_dir"])
        if recorded_config(where) is not None:
            return config_for_run_dir(where, [], overrides)
    preset = preset or "default"
    # `full` is the default preset with more samples, read on top of it; the others stand alone
    recipes = ([preset_path("default")] if preset == "full" else []) + [preset_path(preset)] + ([config] if config else [])
    return config_for_run_dir(run_dir, recipes, overrides)


def _methods_plan(run: Run):
    """The self-training methods of the demo: (name, directory, settings)."""
    cfg = run.cfg
    return [("ReST", run.dir / "rest", dataclasses.replace(cfg.selftrain, guidance_rounds=0)),
            ("Guided-ReST", run.dir / "guided-rest", cfg.selftrain)]


def _ppo_plan(run: Run):
    """The demo's PPO rows (Guided-ReST's last stage, and the paper's ablations) that
    ``demo.ppo_rows`` names: (label, the method it starts from, directory name, settings)."""
    c = run.cfg.ppo
    rows = {"sos": ("SoS + PPO", "SoS", "ppo-sos", c), "rest": ("ReST + PPO", "ReST", "ppo-rest", c),
            "guided-rest": ("Guided-ReST + PPO", "Guided-ReST", "ppo-guided-rest", c),
            "guided-rest-token": ("Guided-ReST + PPO (token-level)", "Guided-ReST", "ppo-guided-rest-token",
                                  dataclasses.replace(c, adv_estimator="gae"))}
    return [rows[r] for r in run.cfg.demo.ppo_rows]


def ppo_table(run: Run) -> str:
    """Per PPO row: its training reward over the first and last iterations and its curves."""
    from ..data import read_jsonl_log

    lines = ["", "### PPO training", "",
             "Task reward of the sampled responses, mean over the first and the last 3 iterations "
             "(training samples, not the evaluation above); curves in `<row>/curves.png`.", "",
             "| Row | Directory | Iterations | Samples | Reward, first 3 | Reward, last 3 | Actions per response |",
             "|---|---|---|---|---|---|---|"]
    for label, _, name, _ in _ppo_plan(run):
        path = run.dir / name / "metrics.jsonl"
        if not path.exists():
            continue
        m = read_jsonl_log(path)
        if not m:
            continue
        first = sum(x["reward/task_mean"] for x in m[:3]) / len(m[:3])
        last = sum(x["reward/task_mean"] for x in m[-3:]) / len(m[-3:])
        acts = sum(x["response/actions_mean"] for x in m) / len(m)
        lines.append(f"| {label} | `{name}` | {m[-1]['iteration']} | {m[-1]['samples']} | {100 * first:.1f}% | "
                     f"{100 * last:.1f}% | {acts:.1f} |")
    return "\n".join(lines) + "\n"


def open_demo(cfg: Config, progress: bool = True) -> Run:
    """The demo's run, its stages checked against the run directory and its config recorded."""
    from ..selftrain.loop import Context
    from ..selftrain.rest import selftrain_loop

    run = Run(cfg, progress)
    base = run.base_model()
    stages = []
    if (base / "config.json").exists():  # what the stages depend on, without making the run's workers yet
        ctx = Context(task=run.task, load_model=run.load, depends=run.graded_depends(),
                      depends_defaults=run.graded_defaults())
        stages = [selftrain_loop(ctx, cfg=c, sft_cfg=cfg.rest_sft, method_dir=d, base_model=base).stage
                  for _, d, c in _methods_plan(run)]
    else:
        made = [d for _, d, _ in _methods_plan(run) if (d / "stage.json").exists()]
        if made:
            raise RunDirError(f"{made[0]} was made from the base model {base}, which is gone; delete "
                              f"{', '.join(map(str, made))} to redo self-training, or use another --run-dir")
    models = [cfg.base_model] if cfg.base_model else [cfg.model.name]
    return run.open(stages, models=models)


def run_demo(cfg: Config, progress: bool = True, run: Run | None = None) -> dict:
    """Run (or resume) the whole demo in ``cfg.run_dir``; returns the results dict."""
    from ..eval.evaluate import sampling_note
    from ..eval.report import machine, write_report
    from ..rundir import rel
    from ..selftrain.rest import read_stats, run_selftrain
    from .commands import run_sft
    from .rl import run_rl

    run = run or open_demo(cfg, progress)
    t0 = time.perf_counter()
    timings: dict[str, float] = read_json(run.dir / "timings.json") if (run.dir / "timings.json").exists() else {}

    def stage(name, fn):
        start = time.perf_counter()
        out = fn()
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 1)
        write_json(run.dir / "timings.json", timings)
        return out

    data = stage("data", run.ensure_data)
    for split in cfg.eval.splits:  # a misspelt split fails now, not after the training
        run.task.problems(split)
    logger.info("data: %s (%d SFT training problems, %d self-training problems in split %r)", data,
                len(run.task.problems("train")), len(run.task.problems(cfg.selftrain.split)), cfg.selftrain.split)
    base = run.base_model()
    if cfg.base_model:
        logger.info("starting from the base checkpoint %s (the SFT base model is not trained in this run; "
                    "see README for the command that made it)", base)
    else:
        verb = "resuming" if (run.sft_dir / "checkpoints").exists() else "training"
        logger.info("%s the SFT base model (%s) in %s", verb, cfg.model.name, run.sft_dir)
        base = stage("sos_sft", lambda: run_sft(run))

    methods = {"SoS": Path(base)}
    for name, method_dir, st_cfg in _methods_plan(run):
        logger.info("%s: %d iterations, %d guidance rounds, %s problems", name, st_cfg.iterations,
                    st_cfg.guidance_rounds, st_cfg.n_problems or "all")
        methods[name] = stage(method_dir.name.replace("-", "_"), lambda d=method_dir, c=st_cfg: run_selftrain(
            run.selftrain_context(), cfg=c, sft_cfg=cfg.rest_sft, method_dir=d, base_model=base))

    for label, start, name, rl_cfg in _ppo_plan(run):
        logger.info("%s: PPO (%s) from %s, %d iterations of %d prompts", label, rl_cfg.adv_estimator,
                    methods[start], rl_cfg.iterations, rl_cfg.prompts_per_step)
        methods[label] = stage(name.replace("-", "_"), lambda s=start, n=name, c=rl_cfg: run_rl(
            run, "ppo", methods[s], n, c))

    summaries = {}
    for name, path in methods.items():
        logger.info("evaluating %s (%s)", name, path)
        summaries[name] = stage(f"eval_{name}", lambda: run.evaluate(path, run.dir / "eval" / name))
    results = {"methods": summaries,
               "selftrain": {"ReST": read_stats(run.dir / "rest"),
                             "Guided-ReST": read_stats(run.dir / "guided-rest")},
               "meta": {"config": {k: v for k, v in to_dict(cfg).items() if k != "run_dir"},
                        "models": {k: rel(run.dir, v) for k, v in methods.items()},
                        "timings_s": timings, "this_invocation_s": round(time.perf_counter() - t0, 1),
                        "machine": machine()}}
    paths = write_report(run.dir, results, splits=list(cfg.eval.splits), ks=list(cfg.eval.ks),
                         title=f"{cfg.task.name.capitalize()}: SoS vs ReST vs Guided-ReST"
                               + "".join(f", {label}" for label, *_ in _ppo_plan(run)),
                         sampling=sampling_note(cfg.eval), machine=results["meta"]["machine"])
    md = (Path(paths["markdown"]).read_text(encoding="utf-8") + selftrain_table(results["selftrain"])
          + ppo_table(run))
    write_text(paths["markdown"], md)
    logger.info("results: %s, %s, %s, %s", paths["json"], paths["markdown"], paths["passk_png"], paths["budget_png"])
    return results


def selftrain_table(stats: dict[str, list[dict]]) -> str:
    """Per method and iteration: kept trajectories, rescues per guidance round, kept lengths."""
    lines = ["", "### Self-training data per iteration", "",
             "Round 0 is plain sampling; round k counts the problems rescued by guidance round k.", "",
             "| Method | Iteration | Problems | Kept | Solved by round | Kept tokens (mean / median) |",
             "|---|---|---|---|---|---|"]
    for method, its in stats.items():
        for i, s in enumerate(its, start=1):
            toks = ("–" if s["kept_tokens_mean"] is None
                    else f"{s['kept_tokens_mean']:.0f} / {s['kept_tokens_median']}")
            lines.append(f"| {method} | {i} | {s['problems']} | {s['kept']} ({100 * s['kept_fraction']:.1f}%) | "
                         f"{' / '.join(map(str, s['solved_by_round']))} | {toks} |")
    return "\n".join(lines) + "\n"
