"""Guided-ReST's pass@32 claims (G11-G14): does Guided-ReST raise the upper bound over SoS and ReST?

Why: seed 001's headline is pass@32 (Guided-ReST 96.8 against SoS 77.1 and ReST 76.6 on seen targets;
96.8 against 77.5 and 77.0 on unseen ones). The demo evaluates with 4 samples, and its ``--preset full``
(32 samples) has never run end to end here, so ``docs/claims.md`` had no number for G11-G14.

**Protocol** (written down before any arm was run):

* Countdown as the demo has it (``searchrl/presets/demo-default.yaml``), the shipped SoS base.
* **ReST** and **Guided-ReST**: the demo's default self-training (3 iterations of 500 ``selftrain``
  problems, fine-tuning from the SoS base each iteration; ReST is ``selftrain.guidance_rounds=0``),
  seeds 0, 1 and 2 (``selftrain.seed`` and ``rest_sft.seed``: the sampled trajectories, the guide's
  choices and the SFT batch order). Seed 0 is the run ``experiments/ppo_from_rest_power.py`` starts from.
* **SoS**: the shipped base, evaluated once (it has no training seed).
* **Endpoint**: pass@32 (32 samples per problem at T 1.0, the demo's evaluation otherwise) on 200
  ``test_seen`` problems (G11: Guided-ReST − SoS, G12: Guided-ReST − ReST) and 200 ``test_unseen``
  problems (G13, G14), the mean over training seeds, with the two-level bootstrap of
  ``experiments/code_rl_power.py`` (problems paired, seeds resampled within each arm). With 32 samples
  pass@32 of a problem is whether any sample solved it. pass@1 from the same samples is reported beside it.
  (pass@8, the metric of the paper's table and of G7-G10, from the same samples with the unbiased estimator,
  was added to the report after seed 0 had run; no arm or setting changed.)
* The SoS base's seen pass@32 was 99.5 (98.5..100.0) on an earlier day (``docs/claims.md``, F32): the seen
  split is near its ceiling at k = 32 here, so G11 and G12 can at most show a difference of a point or
  two; the unseen split (SoS 61.0) has room.
* No setting is chosen here (the demo's settings are used as they are), so there is no ``valid`` phase.

Run it (resumable; 1 h 34 min here, measured: about 10 min of self-training per seed for both methods,
and 10-12 min for each of the seven 32-sample evaluations of 400 problems)::

    python experiments/guided_pass32.py run
    python experiments/guided_pass32.py report
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np

from searchrl.data import iter_jsonl
from searchrl.eval.metrics import pass_at_k

sys.path.insert(0, str(Path(__file__).parent))
from code_rl_power import (arm_tables, iteration_model, problem_record, run_command, run_unless_done,  # noqa: E402
                           script_main, seed_matrix)

ROOT = "runs/pass32"
SEEDS = (0, 1, 2)
ITERATIONS = 3
K = 32
TRACES = 20_000
#: name: (label, the selftrain settings that make it)
METHODS = {"rest": ("ReST", ["selftrain.guidance_rounds=0"]), "guided-rest": ("Guided-ReST", [])}
SPLITS = ("test_seen", "test_unseen")
DATA = "runs/cd-data"
COMMON = ["--config", "searchrl/presets/demo-default.yaml", f"data_dir={DATA}", "base_model=builtin:sos-tiny-base"]
EVAL = ["eval.splits=[test_seen,test_unseen]", "eval.n_problems=200", f"eval.n_samples={K}",
        "eval.ks=[1,2,4,8,16,32]"]


def train_dir(root: Path, seed: int) -> Path:
    return root / f"s{seed}"


def eval_dir(root: Path, name: str, seed: int | None) -> Path:
    """Where an arm's 32-sample evaluation goes (``searchrl eval --run-dir X`` writes ``X/eval``)."""
    return (root / "sos" if seed is None else train_dir(root, seed) / f"{name}-pass{K}") / "eval"


def run(root: Path, searchrl: list[str]) -> None:
    run_command(searchrl, ["data", "--config", "searchrl/presets/demo-default.yaml", "--out", DATA])
    run_unless_done(searchrl, eval_dir(root, "sos", None), lambda: [
        "eval", "--run-dir", str(eval_dir(root, "sos", None).parent), *COMMON, *EVAL, "--model", "builtin:sos-tiny-base"])
    for seed in SEEDS:
        for name, (_, settings) in METHODS.items():
            out = eval_dir(root, name, seed)
            if (out / "results.json").exists():
                continue
            run_command(searchrl, ["selftrain", "--run-dir", str(train_dir(root, seed)), "--name", name, *COMMON,
                                   f"selftrain.iterations={ITERATIONS}", f"selftrain.seed={seed}",
                                   f"rest_sft.seed={seed}", *settings])
            model = iteration_model(train_dir(root, seed) / name, ITERATIONS, "model")
            run_command(searchrl, ["eval", "--run-dir", str(out.parent), *COMMON, *EVAL, "--model", str(model),
                                   "eval.method=" + METHODS[name][0]])


def counts(path: Path, split: str) -> np.ndarray:
    """Per-problem correct samples of one evaluation on one split (each problem must have all K samples)."""
    pp = problem_record(path, split)
    if set(pp["n"]) != {K}:
        raise ValueError(f"{path / 'results.json'}: {split}: expected {K} samples per problem, got {sorted(set(pp['n']))}")
    return np.asarray(pp["correct"])


def pass_matrix(c: np.ndarray, k: int) -> np.ndarray:
    """Per-problem pass@k of runs x problems correct counts out of K samples (:func:`searchrl.eval.metrics.pass_at_k`,
    the unbiased estimator); pass@K is whether any sample solved the problem."""
    return np.vectorize(lambda x: pass_at_k(K, int(x), k), otypes=[float])(c)


def done_seeds(root: Path, name: str) -> list[int]:
    return [s for s in SEEDS if (eval_dir(root, name, s) / "results.json").exists()]


def report(root: Path, data: Path = Path(DATA)) -> None:
    seeds = sorted(set(done_seeds(root, "rest")) & set(done_seeds(root, "guided-rest")))
    if not seeds:
        raise SystemExit(f"{root}: no seed has both methods evaluated yet")
    dirs = {"SoS": [eval_dir(root, "sos", None)],
            **{label: [eval_dir(root, name, s) for s in seeds] for name, (label, _) in METHODS.items()}}
    c = {(a, s): seed_matrix(d, (s,), value=counts) for a, d in dirs.items() for s in SPLITS}  # each eval read once
    print(f"training seeds {', '.join(map(str, seeds))}; 200 problems per split, {K} samples at T 1.0\n")
    for k in (K, 8, 1):
        print(f"pass@{k} (%), mean over training seeds (each seed's value in brackets)\n")
        arm_tables({key: pass_matrix(v, k) for key, v in c.items()}, dirs, SPLITS,
                   (("SoS", "Guided-ReST"), ("ReST", "Guided-ReST"), ("SoS", "ReST")))
        print()
    by_target(data, {a: c[a, "test_unseen"] for a in dirs}, "test_unseen")


def by_target(data: Path, c: dict[str, np.ndarray], split: str) -> None:
    """Where pass@32 is decided: each target's problems solved by any sample (``c``: each arm's runs x problems
    correct counts on ``split``), per arm (mean over seeds)."""
    n = len(next(iter(c.values()))[0])
    problems = [p for _, p in islice(iter_jsonl(data / f"{split}.jsonl"), n)]
    targets = sorted({p["target"] for p in problems})
    print(f"{split}: problems solved by any of {K} samples, by target (mean over training seeds)\n")
    print("| arm | " + " | ".join(str(t) for t in targets) + " |\n| :--- |" + " ---: |" * len(targets))
    for a, m in c.items():
        solved = (m > 0).mean(axis=0)
        print(f"| {a} | " + " | ".join(
            f"{sum(x for x, p in zip(solved, problems) if p['target'] == t):.1f} / {sum(p['target'] == t for p in problems)}"
            for t in targets) + " |")
    # numbers are single tokens here: how often each of these targets is written anywhere in the training traces
    seen = Counter()
    for _, r in islice(iter_jsonl(data / "train.jsonl"), TRACES):
        seen.update(int(x) for x in re.findall(r"\d+", r["trace"]))
    print(f"\ntimes each is written in the first {TRACES:,} training traces (never as the target): "
          + ", ".join(f"{t}: {seen[t]:,}" for t in targets) + "\n")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
