"""The demo: SoS < ReST < Guided-ReST on Countdown, end to end, on this machine.

From nothing: Countdown data, the Stream-of-Search base model (SFT on mixed DFS/BFS
traces), ReST iterations, Guided-ReST iterations, then greedy accuracy and sampled pass@k
(k up to 32) of all three on seen and unseen targets, written as a table in the seeds'
layout (Markdown), a pass@k plot and an accuracy-vs-token-budget plot.

Every stage is resumable (see :mod:`searchrl.runs` and :mod:`searchrl.selftrain.rest`):
kill it at any moment, rerun the same command, and it continues where it stopped.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from ..config import Config, load_config, to_dict
from ..data import read_json, write_json, write_text

PRESETS = ("default", "smoke")


def resolve_model_path(name: str) -> Path:
    """``builtin:NAME`` is a checkpoint shipped inside the package (``searchrl/presets/NAME``)."""
    if name.startswith("builtin:"):
        path = Path(str(resources.files("searchrl") / "presets" / name.split(":", 1)[1]))
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{name}: no shipped checkpoint at {path}")
        return path
    return Path(name)


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ValueError(f"unknown demo preset {name!r}; choose one of {PRESETS}")
    return Path(str(resources.files("searchrl") / "presets" / f"demo-{name}.yaml"))


def load_demo_config(preset: str, config: str | None, overrides: list[str]) -> Config:
    """The preset, then the optional recipe, then ``key=value`` overrides."""
    return load_config([preset_path(preset)] + ([config] if config else []), overrides)


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_demo(cfg: Config, progress: bool = True) -> dict:
    """Run (or resume) the whole demo in ``cfg.run_dir``; returns the results dict."""
    import dataclasses

    from ..eval.evaluate import evaluate
    from ..eval.report import write_report
    from ..runs import ensure_data, load_model, run_sft
    from ..tasks.countdown import CountdownTask
    from .rest import read_stats, run_selftrain

    t0 = time.perf_counter()
    run = Path(cfg.run_dir)
    timings: dict[str, float] = read_json(run / "timings.json") if (run / "timings.json").exists() else {}

    def stage(name, fn):
        start = time.perf_counter()
        out = fn()
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 1)
        write_json(run / "timings.json", timings)
        return out

    data = stage("data", lambda: ensure_data(cfg, progress))
    task = CountdownTask(data)
    _log(f"data: {data} ({len(task.problems('train'))} training problems)")
    if cfg.base_model:
        base = resolve_model_path(cfg.base_model)
        _log(f"starting from the base checkpoint {base} (the SoS base model is not trained in this run; "
             f"see README for the command that made it)")
    else:
        _log(f"training the Stream-of-Search base model ({cfg.model.name}) into {run / 'sft'}")
        base = stage("sos_sft", lambda: run_sft(cfg, progress))

    def loader(path):
        return load_model(cfg, str(path))

    methods = {"SoS": base}
    rest_cfg = dataclasses.replace(cfg.selftrain, guidance_rounds=0)
    _log(f"ReST: {rest_cfg.iterations} iterations on {rest_cfg.n_problems or 'all'} problems")
    methods["ReST"] = stage("rest", lambda: run_selftrain(task, loader, cfg.rest_sft, run / "rest", base,
                                                          rest_cfg, progress))
    _log(f"Guided-ReST: {cfg.selftrain.iterations} iterations, {cfg.selftrain.guidance_rounds} guidance rounds")
    methods["Guided-ReST"] = stage("guided_rest", lambda: run_selftrain(
        task, loader, cfg.rest_sft, run / "guided-rest", base, cfg.selftrain, progress))

    summaries = {}
    for name, path in methods.items():
        _log(f"evaluating {name} ({path})")
        model, tok = loader(path)
        summaries[name] = stage(f"eval_{name}", lambda: evaluate(model, tok, task, cfg.eval,
                                                                   run / "eval" / name, progress))
    results = {"methods": summaries,
               "selftrain": {"ReST": read_stats(run / "rest"), "Guided-ReST": read_stats(run / "guided-rest")},
               "meta": {"config": to_dict(cfg), "models": {k: str(v) for k, v in methods.items()},
                        "timings_s": timings, "this_invocation_s": round(time.perf_counter() - t0, 1)}}
    paths = write_report(run, results, splits=list(cfg.eval.splits), ks=list(cfg.eval.ks),
                         title="Countdown: SoS vs ReST vs Guided-ReST")
    md = Path(paths["markdown"]).read_text(encoding="utf-8") + selftrain_table(results["selftrain"])
    write_text(paths["markdown"], md)
    _log(f"results: {paths['json']}, {paths['markdown']}, {paths['passk_png']}, {paths['budget_png']}")
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
