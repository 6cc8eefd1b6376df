"""ReST-RL's Table 1 at the power issue #28 asks for: ReST-GRPO, GRPO, DAPO and ReST-DPO, 3 seeds each.

Why: one run per method at one untuned learning rate (``experiments/code_rest_rl.py``) cannot say
whether a method helps. This script runs every arm with 3 seeds at equal training samples, picks
each arm's learning rate on ``valid``, and confirms on the test splits, then prints one paired
table per claim (ReST-RL Table 1 and Figure 3a: T1-T6 of ``docs/claims.md``).

**Testbed.** The synthetic code task with its ``tiny-1m`` SFT base (``searchrl sft --config
recipes/code/synthetic-tiny.yaml --run-dir runs/code-a``, 600 steps). Its pass@1 on ``valid`` is
36.6%, inside the 20-60% the issue requires (``searchrl eval`` of the base, below).

**Protocol** (written down before any arm was run):

* Every arm starts from the same SFT base and self-trains 2 iterations (the paper's number) on the
  first 160 ``selftrain`` questions, G = 8 samples per question at temperature 1.0, at most 96 new
  tokens, 8 questions per GRPO step.
* **ReST-GRPO** samples 8 solutions per question, filters by reward std (sigma_0 = 0.05), adds
  partial states, and trains GRPO on all of P_Q+ (Algorithm 1 line 19: ``rest_grpo.grpo_iterations
  = 0``). Its iteration records give its GRPO steps.
* **GRPO** and **DAPO** (``rest_grpo.method=grpo``; DAPO adds clip-higher 0.28, token-mean loss,
  dynamic sampling and the overlong penalty) run, per iteration, as many GRPO steps of 8 x 8
  samples as the same seed's ReST-GRPO took on average per iteration (rounded): equal training
  samples. DAPO's dynamic sampling draws extra groups to refill a batch; those are generated,
  not trained on, and the table reports them.
* **ReST-DPO** draws exactly ReST-GRPO's step-1 samples (8 per question, same seed) and trains one
  DPO epoch on its best-vs-worst pairs, as the paper does. It trains on far fewer sequences (2 per
  kept question) than the GRPO arms: giving it 15 epochs over ~130 pairs to equalise would test
  over-fitting, not the method. Its learning rate is chosen on ``valid`` like the others'.
* **Learning rate, chosen on ``valid``**: GRPO-family arms from {3e-5, 1e-4, 3e-4}, ReST-DPO from
  {1e-5, 3e-5, 1e-4} (DPO beta 0.1), each arm's own best pass@1 on ``valid`` with seed 0. Seeds 1
  and 2 run only at the chosen rate.
* **Endpoint**: pass@1 (4 samples per problem) on the 600 test problems (``test_seen`` and
  ``test_unseen``, 300 each), averaged over the 3 seeds; each split is also shown. The interval of
  a difference is a two-level bootstrap (2,000 draws): the problems are resampled (the same for
  both arms: paired) and, within each arm, its seeds are resampled with replacement, so the
  interval carries training-seed variance as well as problem variance. Verdict: reproduced when
  the 95% interval is above 0, refuted when below, otherwise inconclusive.

Run it (resumable: rerunning skips every finished run; ``--searchrl`` names how to call the CLI)::

    searchrl sft --config recipes/code/synthetic-tiny.yaml --run-dir runs/code-a
    python experiments/code_rl_power.py run --phase sweep     # seed 0 at every learning rate
    python experiments/code_rl_power.py report --phase sweep  # valid table; picks each arm's rate
    python experiments/code_rl_power.py run --phase seeds     # seeds 1 and 2 at the chosen rates
    python experiments/code_rl_power.py report                # the claims' tables (test)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from searchrl.rundir import resolve
from searchrl.selftrain.loop import read_records

ROOT = "runs/pw"
BASE = "runs/code-a"
ARMS = ("rest-grpo", "grpo", "dapo", "rest-dpo")
NAMES = {"rest-grpo": "ReST-GRPO", "grpo": "GRPO", "dapo": "DAPO", "rest-dpo": "ReST-DPO"}
LRS = {"rest-grpo": ("3e-5", "1e-4", "3e-4"), "grpo": ("3e-5", "1e-4", "3e-4"), "dapo": ("3e-5", "1e-4", "3e-4"),
       "rest-dpo": ("1e-5", "3e-5", "1e-4")}
SEEDS = (0, 1, 2)
TEST = ("test_seen", "test_unseen")
# (claim id, claimed winner, other, the paper's numbers): ReST-RL Table 1 (Qwen3-8B) and Figure 3a
CLAIMS = (("T1", "rest-grpo", "grpo", ".655 vs .590"), ("T2", "grpo", "rest-dpo", ".590 vs .526"),
          ("T3", "rest-dpo", "base", ".526 vs .503"), ("T4", "rest-grpo", "base", ".655 vs .503"),
          ("T5", "rest-grpo", "dapo", "+12.3% vs +8.1%"), ("T6", "dapo", "grpo", "+8.1% vs +7.8%"))

COMMON = ["--config", "recipes/code/synthetic-tiny.yaml", f"data_dir={BASE}/data", f"base_model={BASE}/sft/final",
          "eval.splits=[valid,test_seen,test_unseen]", "eval.n_samples=4", "eval.ks=[1,2,4]",
          "grpo.prompts_per_step=8", "grpo.samples_per_prompt=8", "grpo.minibatch_size=64", "grpo.max_tokens=96",
          "grpo.tokens_per_batch=4096", "grpo.save_every=5", "rest_grpo.n_problems=160", "rest_grpo.samples=8",
          "rest_grpo.iterations=2", "dpo.warmup_steps=0", "dpo.tokens_per_batch=4096", "dpo.max_seq_len=256"]
DAPO = ["grpo.policy_loss=dapo", "grpo.clip_high=0.28", "grpo.loss_agg=action-mean", "grpo.dynamic_sampling=true",
        "grpo.overlong_buffer=16"]


def run_dir(root: Path, arm: str, lr: str, seed: int) -> Path:
    return root / f"{arm}-lr{lr}-s{seed}"


def method_dir(root: Path, arm: str, lr: str, seed: int) -> Path:
    """Where ``searchrl rest-grpo`` puts an arm's iterations (named by its rest_grpo.method)."""
    return run_dir(root, arm, lr, seed) / ("grpo" if arm in ("grpo", "dapo") else arm)


def eval_dir(root: Path, arm: str, lr: str, seed: int) -> Path:
    return method_dir(root, arm, lr, seed).with_name(method_dir(root, arm, lr, seed).name + "-eval")


def rest_grpo_steps(root: Path, lr: str, seed: int) -> int:
    """GRPO steps per iteration that ReST-GRPO (same rate, same seed) took on average: one pass over P_Q+."""
    recs = read_records(method_dir(root, "rest-grpo", lr, seed))
    steps = [r["grpo_iterations"] for r in recs if "grpo_iterations" in r]
    if len(steps) < 2:
        raise SystemExit(f"{run_dir(root, 'rest-grpo', lr, seed)}: ReST-GRPO has not finished its 2 iterations; "
                         "GRPO and DAPO take their step count from it")
    return round(sum(steps) / len(steps))


def command(root: Path, arm: str, lr: str, seed: int) -> list[str]:
    cmd = ["rest-grpo", "--run-dir", str(run_dir(root, arm, lr, seed)), *COMMON, f"rest_grpo.seed={seed}",
           f"grpo.seed={seed}", f"dpo.seed={seed}", "--eval"]
    if arm == "rest-grpo":
        return cmd + [f"grpo.lr={lr}", "rest_grpo.grpo_iterations=0"]
    if arm == "rest-dpo":
        return cmd + ["rest_grpo.method=rest-dpo", f"dpo.lr={lr}"]
    lr_rg = chosen(root)["rest-grpo"] if (root / "chosen.json").exists() else lr
    steps = rest_grpo_steps(root, lr_rg if seed else lr, seed)
    return cmd + ["rest_grpo.method=grpo", f"grpo.lr={lr}", f"grpo.iterations={steps}"] + (DAPO if arm == "dapo" else [])


def chosen(root: Path) -> dict[str, str]:
    return json.loads((root / "chosen.json").read_text())


def run_command(searchrl: list[str], args: list[str]) -> None:
    """Run ``searchrl *args``, printed first; a failure stops the script."""
    cmd = [*searchrl, *args]
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def run_unless_done(searchrl: list[str], eval_out: Path, args) -> None:
    """Run ``searchrl *args()`` (printed first) unless ``eval_out`` already holds its evaluation's results;
    ``args`` is called only then, so a command built from earlier runs' records is built after them."""
    if not (eval_out / "results.json").exists():
        run_command(searchrl, args())


def iteration_model(method: Path, n: int, key: str) -> Path:
    """The model a self-training method directory's iteration ``n`` recorded under ``key`` (its ``iterN/done.json``)."""
    return resolve(method, read_records(method)[n - 1][key])


def run(root: Path, phase: str, searchrl: list[str]) -> None:
    if phase == "sweep":
        jobs = [(arm, lr, 0) for lr in ("1e-4", "3e-5", "3e-4") for arm in ARMS if lr in LRS[arm]]
        jobs += [("rest-dpo", "1e-5", 0)]
    else:
        lrs = chosen(root)
        jobs = [(arm, lrs[arm], s) for s in SEEDS[1:] for arm in ARMS]
    run_unless_done(searchrl, root / "base" / "eval", lambda: ["eval", "--run-dir", str(root / "base"), *COMMON])
    for arm, lr, seed in jobs:
        run_unless_done(searchrl, eval_dir(root, arm, lr, seed), lambda: command(root, arm, lr, seed))


def problem_record(path: Path, split: str) -> dict:
    """The per-problem record (``n``, ``correct``, ``greedy`` lists) of one eval (``searchrl eval``'s
    ``results.json``, one method) on one split."""
    res = json.loads((path / "results.json").read_text())["methods"]
    return next(iter(res.values()))[split]["per_problem"]


def per_problem(path: Path, split: str) -> np.ndarray:
    """Per-problem pass@1 (correct / samples) of one eval on one split."""
    pp = problem_record(path, split)
    return np.asarray(pp["correct"], dtype=float) / np.asarray(pp["n"], dtype=float)


def greedy(path: Path, split: str) -> np.ndarray:
    """Per-problem greedy correctness of one eval on one split."""
    return np.asarray(problem_record(path, split)["greedy"], dtype=float)


def seed_matrix(dirs, splits, value=per_problem) -> np.ndarray:
    """runs x problems: ``value`` (per-problem pass@1 by default) of each eval directory in ``dirs`` (one per
    seed) over ``splits`` concatenated. The matrices the power scripts' tables and intervals are made of."""
    return np.stack([np.concatenate([value(d, s) for s in splits]) for d in dirs])


def seed_cell(m: np.ndarray) -> str:
    """A table cell: the mean over runs, and each run's own value in brackets when there are several."""
    return pct(m.mean()) + (" [" + ", ".join(pct(r.mean()) for r in m) + "]" if len(m) > 1 else "")


def arm_tables(m: dict, arms, columns, pairs) -> None:
    """Print two markdown tables from ``m[arm, column]`` (runs x problems): each arm's :func:`seed_cell`,
    then ``y − x`` with its :func:`two_level_ci` interval for each ``(x, y)`` in ``pairs``."""
    print("| arm | " + " | ".join(columns) + " |\n| :--- |" + " ---: |" * len(columns))
    for a in arms:
        print(f"| {a} | " + " | ".join(seed_cell(m[a, c]) for c in columns) + " |")
    print("\n| difference | " + " | ".join(columns) + " |\n| :--- |" + " ---: |" * len(columns))
    for x, y in pairs:
        print(f"| {y} − {x} | " + " | ".join(diff(two_level_ci(m[x, c], m[y, c])) for c in columns) + " |")


def arm_matrix(root: Path, arm: str, lr: str | None, splits, seeds) -> np.ndarray:
    """seeds x problems pass@1 of one arm over ``splits`` concatenated (the base: one row)."""
    if arm == "base":
        return seed_matrix([root / "base" / "eval"], splits)
    return seed_matrix([eval_dir(root, arm, lr, s) for s in seeds], splits)


def two_level_ci(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(b) - mean(a) and its 95% interval: problems resampled jointly (paired), seeds within each arm."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    out = np.empty(draws)
    for i in range(draws):
        p = rng.integers(0, n, n)
        sa, sb = rng.integers(0, a.shape[0], a.shape[0]), rng.integers(0, b.shape[0], b.shape[0])
        out[i] = b[sb][:, p].mean() - a[sa][:, p].mean()
    lo, hi = np.percentile(out, [2.5, 97.5])
    return float(b.mean() - a.mean()), float(lo), float(hi)


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def diff(d: tuple[float, float, float]) -> str:
    return f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f}..{100 * d[2]:+.1f})".replace("-", "−")


def training_record(root: Path, arm: str, lr: str, seed: int) -> str:
    """What the arm trained on, from its iteration records: GRPO samples, or DPO pairs."""
    d = method_dir(root, arm, lr, seed)
    recs = [json.loads(p.read_text()) for p in sorted(d.glob("iter*/done.json"))]
    if arm == "rest-dpo":
        pairs = [len((p.parent / "prompts.jsonl").read_text().splitlines()) for p in sorted(d.glob("iter*/done.json"))]
        return "DPO pairs " + " + ".join(map(str, pairs))
    return "GRPO samples " + " + ".join(str(r.get("training_samples", "?")) for r in recs)


def report(root: Path, phase: str) -> None:
    if phase == "sweep":
        base = arm_matrix(root, "base", None, ["valid"], [0])
        print(f"valid, seed 0 (300 problems, 4 samples): base pass@1 {pct(base.mean())}\n")
        print("| arm | lr | pass@1 | − base | trained on |\n| :--- | ---: | ---: | ---: | :--- |")
        best = {}
        for arm in ARMS:
            for lr in LRS[arm]:
                if not (eval_dir(root, arm, lr, 0) / "results.json").exists():
                    continue
                m = arm_matrix(root, arm, lr, ["valid"], [0])
                print(f"| {NAMES[arm]} | {lr} | {pct(m.mean())} | {diff(two_level_ci(base, m))} | "
                      f"{training_record(root, arm, lr, 0)} |")
                if arm not in best or m.mean() > best[arm][1]:
                    best[arm] = (lr, m.mean())
        picked = {arm: lr for arm, (lr, _) in best.items()}
        done = all((eval_dir(root, arm, lr, 0) / "results.json").exists() for arm in ARMS for lr in LRS[arm])
        print("\nchosen on valid:", picked, "" if done else "(the sweep has not finished: nothing chosen yet)")
        if done:
            (root / "chosen.json").write_text(json.dumps(picked, indent=1) + "\n")
        return
    lrs = chosen(root)
    splits = {"test (600)": TEST, "test_seen (300)": ("test_seen",), "test_unseen (300)": ("test_unseen",),
              "valid (300)": ("valid",)}
    print("pass@1 (%), mean over seeds 0, 1, 2 (each seed's own value in brackets)\n")
    print("| arm | lr | " + " | ".join(splits) + " |\n| :--- | ---: |" + " ---: |" * len(splits))
    mats = {}
    for arm in ("base", *ARMS):
        cells = []
        for name, sp in splits.items():
            m = arm_matrix(root, arm, lrs.get(arm), sp, SEEDS)
            mats[arm, name] = m
            cells.append(seed_cell(m))
        print(f"| {NAMES.get(arm, 'SFT base')} | {lrs.get(arm, '')} | " + " | ".join(cells) + " |")
    print("\nwhat each arm trained on, per seed:\n")
    for arm in ARMS:
        print(f"- {NAMES[arm]}: " + "; ".join(f"seed {s}: {training_record(root, arm, lrs[arm], s)}" for s in SEEDS))
    print("\neach arm against the SFT base (pass@1 difference, points):\n")
    print("| arm − base | " + " | ".join(splits) + " |\n| :--- |" + " ---: |" * len(splits))
    for arm in ARMS:
        print(f"| {NAMES[arm]} | " + " | ".join(diff(two_level_ci(mats["base", n], mats[arm, n])) for n in splits) + " |")
    print("\n| claim | paper | difference, test (600) | test_seen | test_unseen | verdict |\n"
          "| :--- | :--- | ---: | ---: | ---: | :--- |")
    for cid, win, other, paper in CLAIMS:
        ds = [two_level_ci(mats[other, name], mats[win, name]) for name in list(splits)[:3]]
        verdict = "reproduced" if ds[0][1] > 0 else "refuted" if ds[0][2] < 0 else "inconclusive"
        print(f"| {cid}: {NAMES.get(win, 'base')} > {NAMES.get(other, 'base')} | {paper} | "
              + " | ".join(diff(d) for d in ds) + f" | {verdict} |")
    figure2(root, lrs)


def flat_groups(root: Path, arm: str, lr: str, seed: int) -> np.ndarray:
    """Reward std of every group GRPO trained on in one run (ReST-RL Figure 2's quantity)."""
    from searchrl.selftrain.rest_grpo import reward_std_by_step

    return np.asarray([x for _, stds in reward_std_by_step(method_dir(root, arm, lr, seed)) for x in stds])


def figure2(root: Path, lrs: dict[str, str], draws: int = 2000) -> None:
    """T7: the share of trained groups with reward std < 0.05, ReST-GRPO against GRPO, per seed and
    pooled; the interval resamples seeds within each arm, then groups within each seed."""
    rng = np.random.default_rng(0)
    got = {arm: [flat_groups(root, arm, lrs[arm], s) < 0.05 for s in SEEDS] for arm in ("rest-grpo", "grpo")}
    share = {arm: float(np.mean(np.concatenate(v))) for arm, v in got.items()}

    def draw(v):
        runs = [v[i] for i in rng.integers(0, len(v), len(v))]
        return np.mean(np.concatenate([r[rng.integers(0, len(r), len(r))] for r in runs]))

    d = np.array([draw(got["rest-grpo"]) - draw(got["grpo"]) for _ in range(draws)])
    lo, hi = np.percentile(d, [2.5, 97.5])
    per = {arm: ", ".join(f"{100 * v.mean():.1f}% of {v.size}" for v in got[arm]) for arm in got}
    from searchrl.eval.report import plot_reward_std
    from searchrl.selftrain.rest_grpo import reward_std_by_step

    pooled = {}
    for arm in ("rest-grpo", "grpo"):
        by_step: dict[int, list[float]] = {}
        for s in SEEDS:
            for step, stds in reward_std_by_step(method_dir(root, arm, lrs[arm], s)):
                by_step.setdefault(step, []).extend(stds)
        pooled[NAMES[arm]] = sorted(by_step.items())
    out = root / "reward_std_3seeds.png"
    plot_reward_std(pooled, out, 0.05, "Reward std of the groups GRPO trained on (8 per step, G = 8), synthetic code "
                    "task, 3 seeds pooled per step")
    print(f"\n{out}")
    print(f"\nT7 (Figure 2): groups trained on with reward std < 0.05: ReST-GRPO {pct(share['rest-grpo'])}% "
          f"[{per['rest-grpo']}], GRPO {pct(share['grpo'])}% [{per['grpo']}]; ReST-GRPO − GRPO "
          f"{diff((share['rest-grpo'] - share['grpo'], lo, hi))} points (the paper: ReST-GRPO fewer)")


def script_main(doc: str, root: str, run, report, argv: list[str] | None, phases: tuple[str, ...] = ()) -> int:
    """The command line of the power scripts: ``run`` or ``report`` under ``--root`` (``--phase`` too when
    the script has phases; they are passed on after the root)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("action", choices=("run", "report"))
    if phases:
        ap.add_argument("--phase", choices=phases, default=phases[-1])
    ap.add_argument("--root", default=root, help="where the runs go (default %(default)s)")
    ap.add_argument("--searchrl", default="searchrl", help="how to call the CLI (default %(default)s)")
    args = ap.parse_args(argv)
    extra = (args.phase,) if phases else ()
    if args.action == "run":
        run(Path(args.root), *extra, shlex.split(args.searchrl))
    else:
        report(Path(args.root), *extra)
    return 0


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv, phases=("sweep", "seeds"))


if __name__ == "__main__":
    sys.exit(main())
