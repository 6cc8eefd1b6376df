"""Why does Guided-ReST fall behind ReST on held-out targets? Hypotheses measured on the
validation splits only (issue 9, step 4); the test splits are never read.

    python experiments/countdown_guided_vs_rest.py --run-dir runs/study

What it runs, each step resumable (kill it and rerun the same command):

1. The demo's self-training from the demo's base model (ReST and Guided-ReST, the default
   preset's settings, 3 iterations each), with the three final models evaluated on
   ``valid_unseen`` (held-out targets, problems disjoint from ``test_unseen``) and ``valid``:
   this is ``searchrl demo`` with ``eval.splits=[valid_unseen,valid]``, written to the run
   directory as the demo writes it (``results.md``, plots).
2. **Iterations**: the iteration-1 models of both methods, evaluated the same way on
   ``valid_unseen`` (does the gap open in the first iteration or grow with iterations?).
3. **Amount of data**: Guided-ReST keeps nearly every problem, ReST only the ones it solves,
   so with the same epochs Guided-ReST takes several times more SFT steps away from the base.
   "Guided iter 1, subsampled": a random subset of Guided-ReST's iteration-1 data of ReST's
   kept size, fine-tuned from the base exactly as ReST's iteration 1 is.
4. **What guided traces teach**: "Guided iter 1, rescued only": only the trajectories that
   guidance rescued (rounds >= 1), at the same size. Against ReST's iteration 1 (only
   trajectories the model found alone) at equal size and equal SFT steps.
5. **Search effort**: per kept trace of each method's data and per sample of each model on
   ``valid_unseen``, the explored operations (``Exploring Operation`` lines) and tokens.

Writes ``<run-dir>/study/study.json`` and ``study.md`` (the tables with 95% bootstrap
intervals over problems, and paired differences on the same problems).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path


def explored(response: str) -> int:
    return response.count("Exploring Operation:")


def effort(rows: list[dict]) -> dict:
    """Explored operations and tokens per trace (mean / median) of ``rows`` (records with a response)."""
    if not rows:
        return {"n": 0}
    ex = [explored(r["response"]) for r in rows]
    toks = [r["num_tokens"] for r in rows]
    return {"n": len(rows), "explored_mean": statistics.fmean(ex), "explored_median": statistics.median(ex),
            "tokens_mean": statistics.fmean(toks), "tokens_median": statistics.median(toks)}


def sample_rows(eval_dir: Path, split: str) -> list[dict]:
    """The sampled (not greedy) records an evaluation wrote for ``split``."""
    from searchrl.data import read_jsonl

    return [r for f in sorted((eval_dir / "samples" / split).glob("sampled-*/*.jsonl")) for r in read_jsonl(f)]


def trained(run, records: list[dict], base: Path, out: Path) -> Path:
    """``base`` fine-tuned with ``rest_sft`` on ``records`` (kept trajectories) into ``out``; resumable."""
    from searchrl.data import write_json
    from searchrl.rollout import Trajectory, sft_example
    from searchrl.train.sft import train_sft

    final = out / "final"
    if (final / "config.json").exists() and (out / "done.json").exists():
        return final
    model, tok = run.load(base)
    examples = [sft_example(Trajectory.from_record(r), tok.eos_token_id) for r in records]
    train_sft(model, tok, examples, dataclasses.replace(run.cfg.rest_sft, output_dir=str(out)), progress=run.progress)
    write_json(out / "done.json", {"examples": len(examples)})
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/countdown-study")
    ap.add_argument("--n-problems", type=int, default=200, help="problems per validation split")
    ap.add_argument("--n-samples", type=int, default=8, help="samples per problem (pass@k up to this k)")
    ap.add_argument("--preset", default="default", help="the demo preset it starts from (smoke: a quick check)")
    ap.add_argument("overrides", nargs="*", help="key=value settings on top of the demo's default preset")
    args = ap.parse_args(argv)

    from searchrl.data import read_json, read_jsonl, write_json, write_text
    from searchrl.eval.evaluate import sampling_note
    from searchrl.eval.metrics import compare_methods
    from searchrl.eval.report import machine, write_report
    from searchrl.pipelines.demo import load_demo_config, open_demo, run_demo
    from searchrl.pipelines.run import logger
    from searchrl.rundir import resolve

    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= args.n_samples]
    overrides = [f"eval.splits=[valid_unseen,valid]", f"eval.n_problems={args.n_problems}",
                 f"eval.n_samples={args.n_samples}", f"eval.ks=[{','.join(map(str, ks))}]", *args.overrides]
    cfg = load_demo_config(args.preset, None, overrides, args.run_dir)
    t0 = time.perf_counter()
    run = open_demo(cfg)
    results = run_demo(cfg, run=run)  # step 1
    base = run.base_model()
    study = run.dir / "study"
    split = "valid_unseen"
    ecfg = dataclasses.replace(cfg.eval, splits=[split])

    def ev(name: str, path: Path) -> dict:
        logger.info("study: evaluating %s (%s)", name, path)
        return run.evaluate(path, study / "eval" / name, ecfg)

    summaries = {m: {split: results["methods"][m][split]} for m in ("SoS", "ReST", "Guided-ReST")}
    eval_dirs = {"SoS": run.dir / "eval" / "SoS", "ReST": run.dir / "eval" / "ReST",
                 "Guided-ReST": run.dir / "eval" / "Guided-ReST"}
    # 2. iterations
    for m, d in (("ReST", "rest"), ("Guided-ReST", "guided-rest")):
        name = f"{m} iter 1"
        # the iteration's model (the base again when it kept nothing to train on)
        summaries[name] = ev(name, resolve(run.dir / d, read_json(run.dir / d / "iter1" / "done.json")["model"]))
        eval_dirs[name] = study / "eval" / name
    # 3./4. data variants from iteration 1's kept data
    rest1 = read_jsonl(run.dir / "rest" / "iter1" / "data.jsonl")
    guided1 = read_jsonl(run.dir / "guided-rest" / "iter1" / "data.jsonl")
    n = len(rest1)
    rng = random.Random(0)
    rescued = [r for r in guided1 if r["meta"]["solved_round"] > 0]
    variants = {
        "Guided iter 1, subsampled": rng.sample(guided1, min(n, len(guided1))),
        "Guided iter 1, rescued only": rng.sample(rescued, min(n, len(rescued))),
    }
    for name, recs in variants.items():
        if not recs:
            continue
        slug = name.lower().replace(",", "").replace(" ", "-")
        path = trained(run, recs, base, study / "models" / slug)
        summaries[name] = ev(name, path)
        eval_dirs[name] = study / "eval" / name
    # 5. search effort
    tok = run.load(base)[1]
    solved = [p["trace"] for p in run.task.problems("train")[:5000] if "Goal Reached" in p["trace"]]
    data_effort = {"SoS training traces (first 5,000, solved)": effort(
        [{"response": t, "num_tokens": len(tok(t)["input_ids"])} for t in solved])}
    for m, d in (("ReST", "rest"), ("Guided-ReST", "guided-rest")):
        for it in range(1, cfg.selftrain.iterations + 1):
            rows = read_jsonl(run.dir / d / f"iter{it}" / "data.jsonl")
            data_effort[f"{m} iter {it} kept"] = effort(rows)
            if d == "guided-rest":
                data_effort[f"{m} iter {it} kept, round 0"] = effort([r for r in rows if r["meta"]["solved_round"] == 0])
                data_effort[f"{m} iter {it} kept, rescued"] = effort([r for r in rows if r["meta"]["solved_round"] > 0])
    for name, recs in variants.items():
        data_effort[f"{name} (its data)"] = effort(recs)
    model_effort = {}
    for name, d in eval_dirs.items():
        rows = sample_rows(d, split)
        model_effort[name] = {"all": effort(rows), "correct": effort([r for r in rows if r["correct"]])}

    metrics = [f"pass@{k}" for k in ks] + ["greedy"]
    comparisons = compare_methods(summaries, [split], metrics)
    out = {"summaries": summaries, "comparisons": comparisons, "data_effort": data_effort,
           "model_effort": model_effort, "variants_size": {k: len(v) for k, v in variants.items()},
           "rest_iter1_kept": n, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(study / "study.json", out)
    paths = write_report(study, {"methods": summaries}, splits=[split], ks=ks,
                         title="Countdown study on valid_unseen (never the test splits)",
                         sampling=sampling_note(ecfg), machine=machine())
    focus = [("ReST", "Guided-ReST"), ("ReST iter 1", "Guided-ReST iter 1"),
             ("ReST iter 1", "Guided iter 1, subsampled"), ("ReST iter 1", "Guided iter 1, rescued only"),
             ("Guided iter 1, subsampled", "Guided-ReST iter 1"), ("ReST iter 1", "ReST"),
             ("Guided-ReST iter 1", "Guided-ReST"), ("SoS", "ReST"), ("SoS", "Guided-ReST")]
    md = [f"# Guided-ReST vs ReST on {split} (valid splits only; the test splits are never read)", "",
          f"Sampled: {sampling_note(ecfg)}. Every model evaluated on the same problems; the full tables, "
          f"plots and all pairwise differences are in results.md. Sizes: ReST iteration 1 kept {n} "
          f"trajectories; the variants train on {', '.join(f'{k}: {len(v)}' for k, v in variants.items())}.", "",
          "## Paired differences (b − a, percentage points, 95% bootstrap interval over problems)", "",
          "| a | b | metric | b − a | 95% interval |", "|---|---|---|---:|---:|"]
    for a, b in focus:
        for c in comparisons:
            if {c["a"], c["b"]} == {a, b} and c["metric"] in (f"pass@{ks[0]}", f"pass@{ks[-1]}", "greedy"):
                sign = 1 if (c["a"], c["b"]) == (a, b) else -1
                lo, hi = sorted(sign * x for x in c["ci"])
                md.append(f"| {a} | {b} | {c['metric']} | {100 * sign * c['diff'] + 0.0:+.1f} | "
                          f"{100 * lo:+.1f} .. {100 * hi:+.1f} |")
    md += ["", "## pass@k", ""]
    for name, summ in summaries.items():
        sp = summ[split]
        cells = [f"pass@{k} {100 * sp['pass@k'][k]:.1f} ({100 * sp['pass@k_ci'][k][0]:.1f}..{100 * sp['pass@k_ci'][k][1]:.1f})"
                 for k in (ks[0], ks[-1])]
        cells.append(f"greedy {100 * sp['greedy']:.1f}")
        md.append(f"- {name}: " + ", ".join(cells))
    md += ["", "## Search effort", "",
           "| data / model | n | explored ops (mean / median) | tokens (mean / median) |", "|---|---:|---:|---:|"]
    rows = [(k, v) for k, v in data_effort.items()] + \
        [(f"{k}: samples on {split}", v["all"]) for k, v in model_effort.items()] + \
        [(f"{k}: correct samples on {split}", v["correct"]) for k, v in model_effort.items()]
    for k, v in rows:
        if v.get("n"):
            md.append(f"| {k} | {v['n']} | {v['explored_mean']:.1f} / {v['explored_median']:g} | "
                      f"{v['tokens_mean']:.0f} / {v['tokens_median']:g} |")
    write_text(study / "study.md", "\n".join(md) + "\n")
    print(study / "study.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
