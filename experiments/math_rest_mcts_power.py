"""ReST-MCTS* against ReST-EM at matched generation tokens, 3 iterations, 3 seeds (issue #28; claims M1, M2, M4).

Why: the earlier comparison (``experiments/math_rest_mcts.py``) ran 2 iterations, one seed, and
did not match the two methods' generation compute. A pilot on this testbed measured the gap. At
iteration 1, on 300 questions, MCTS* (6 iterations a question) generated 43,030 tokens and solved 112.
ReST-EM (1 sample a question) generated 9,004 tokens and kept 112. Unmatched, ReST-MCTS* spends 4.8x
the compute.

**Protocol** (written before the runs; the pilot ran only iteration 1 of seed 0):

* The synthetic math task's ``tiny-1m`` SFT base (``searchrl sft --config
  recipes/math/synthetic-tiny.yaml --run-dir runs/math-a``, 800 steps). Its ``valid`` pass@1 is
  35.0 (4 samples, 300 problems), inside 20-60%; a response averages 31 tokens.
* **ReST-MCTS\\***: 3 iterations on the first 300 ``selftrain`` questions (the recipe's search:
  6 MCTS* iterations a question, 96 tokens), seeds 0, 1, 2 (``rest_mcts.seed``, and the seeds of
  its policy SFT and value training). Each iteration records its generated tokens.
* **ReST-EM**: 3 iterations of 1 sample a question from the base (ReST-EM fine-tunes from the
  base each iteration), on the first N ``selftrain`` questions. N is chosen so its generated tokens
  match the same seed's ReST-MCTS\\*: N = (ReST-MCTS\\*'s mean generated tokens per iteration) /
  (the base's mean response tokens on ``valid``), capped at the split's 2,000. Both arms'
  actual tokens are reported, with their ratio.
* **Endpoint**: pass@1 (4 samples) on the 600 test problems (``test_seen`` + ``test_unseen``) of
  each arm's last policy, the mean over seeds, with the two-level bootstrap of
  ``experiments/code_rl_power.py``; greedy accuracy (the paper's self-training table reads the
  policy alone) is reported beside it.
* **Per iteration** (claims M1 and M4, added after seed 0's pilot and before any seed's iteration
  evaluations): the policies of iterations 1 and 2 of both arms are evaluated the same way, so the
  report also has the two arms at iteration 1 (M1) and ReST-MCTS\\*'s iteration 3 − iteration 1
  (M4). That bootstrap resamples each iteration's seeds independently although the seeds are the
  same runs: conservative.

Run it (resumable)::

    searchrl sft --config recipes/math/synthetic-tiny.yaml --run-dir runs/math-a
    python experiments/math_rest_mcts_power.py run
    python experiments/math_rest_mcts_power.py report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from searchrl.selftrain.loop import read_records  # noqa: E402
from code_rl_power import (arm_tables, diff, greedy, iteration_model, per_problem, run_unless_done, script_main,  # noqa: E402
                           seed_cell, seed_matrix, two_level_ci)

ROOT = "runs/mp"
BASE = "runs/math-a"
SEEDS = (0, 1, 2)
ITERATIONS = 3
SPLIT_SIZE = 2000
COMMON = ["--config", "recipes/math/synthetic-tiny.yaml", f"data_dir={BASE}/data", f"base_model={BASE}/sft/final",
          "eval.splits=[valid,test_seen,test_unseen]", "eval.n_samples=4", "eval.ks=[1,4]"]


def mcts_dir(root: Path, seed: int) -> Path:
    return root / f"mcts-s{seed}"


def em_dir(root: Path, seed: int) -> Path:
    return root / f"em-s{seed}"


def mcts_tokens(root: Path, seed: int) -> list[int]:
    """Generated tokens of each finished ReST-MCTS* iteration."""
    return [r["generated_tokens"] for r in read_records(mcts_dir(root, seed) / "rest-mcts", "stats.json")]


def em_tokens(root: Path, seed: int) -> list[int]:
    return [r["response_tokens"] for r in read_records(em_dir(root, seed) / "rest-em", "gen_stats.json")]


def base_tokens(root: Path) -> float:
    res = json.loads((root / "base" / "eval" / "results.json").read_text())["methods"]
    return float(next(iter(res.values()))["valid"]["mean_tokens"])


def em_problems(root: Path, seed: int) -> int:
    """ReST-EM's questions per iteration: the same seed's mean MCTS* tokens / the base's tokens a response."""
    toks = mcts_tokens(root, seed)
    if len(toks) < ITERATIONS:
        raise SystemExit(f"{mcts_dir(root, seed)}: ReST-MCTS* has not finished its {ITERATIONS} iterations; "
                         "ReST-EM's question count is matched to its tokens")
    return min(SPLIT_SIZE, round(sum(toks) / len(toks) / base_tokens(root)))


#: each arm: (its run directory, its method directory's name, the key its iteration records keep the policy under,
#: the directory of its last policy's evaluation)
ARMS = {"ReST-EM": (em_dir, "rest-em", "model", "rest-em-eval"),
        "ReST-MCTS*": (mcts_dir, "rest-mcts", "policy", "rest-mcts-eval")}


def iteration_policy(root: Path, arm: str, seed: int, n: int) -> Path:
    """The policy ``arm``'s iteration ``n`` of ``seed`` trained."""
    where, name, key, _ = ARMS[arm]
    return iteration_model(where(root, seed) / name, n, key)


def iteration_eval(root: Path, arm: str, seed: int, n: int) -> Path:
    where, _, _, last = ARMS[arm]
    if n == ITERATIONS:
        return where(root, seed) / last
    return Path(f"{where(root, seed)}-iter{n}") / "eval"


def run(root: Path, searchrl: list[str]) -> None:
    run_unless_done(searchrl, root / "base" / "eval", lambda: ["eval", "--run-dir", str(root / "base"), *COMMON])
    for seed in SEEDS:
        seeds = [f"rest_sft.seed={seed}"]
        run_unless_done(searchrl, mcts_dir(root, seed) / "rest-mcts-eval", lambda: [
            "rest-mcts", "--run-dir", str(mcts_dir(root, seed)), *COMMON, f"rest_mcts.iterations={ITERATIONS}",
            f"rest_mcts.seed={seed}", f"value.seed={seed}", *seeds, "--eval"])
        run_unless_done(searchrl, em_dir(root, seed) / "rest-em-eval", lambda: [  # built after ReST-MCTS* ran
            "selftrain", "--run-dir", str(em_dir(root, seed)), "--name", "rest-em", *COMMON,
            f"selftrain.iterations={ITERATIONS}", f"selftrain.seed={seed}",
            f"selftrain.n_problems={em_problems(root, seed)}", *seeds, "--eval"])
    for seed in SEEDS:  # the earlier iterations' policies (claims M1 and M4)
        for arm in ARMS:
            for n in range(1, ITERATIONS):
                out = iteration_eval(root, arm, seed, n)
                run_unless_done(searchrl, out, lambda out=out, arm=arm, seed=seed, n=n: [
                    "eval", "--run-dir", str(out.parent), *COMMON, "--model", str(iteration_policy(root, arm, seed, n))])


def report(root: Path) -> None:
    evals = {"SFT base": [root / "base" / "eval"], "ReST-EM": [em_dir(root, s) / "rest-em-eval" for s in SEEDS],
             "ReST-MCTS*": [mcts_dir(root, s) / "rest-mcts-eval" for s in SEEDS]}
    splits = {"test (600)": ("test_seen", "test_unseen"), "test_seen (300)": ("test_seen",),
              "test_unseen (300)": ("test_unseen",), "valid (300)": ("valid",)}

    for label, fn in (("pass@1", per_problem), ("greedy", greedy)):
        m = {(a, n): seed_matrix(evals[a], sp, fn) for a in evals for n, sp in splits.items()}
        print(f"\n{label} (%), mean over seeds (each seed's value in brackets)\n")
        arm_tables(m, evals, splits, (("SFT base", "ReST-EM"), ("SFT base", "ReST-MCTS*"), ("ReST-EM", "ReST-MCTS*")))
    iterations(root, splits)
    print("\ngenerated tokens per iteration (ReST-MCTS* / ReST-EM):")
    for s in SEEDS:
        mt, et = mcts_tokens(root, s), em_tokens(root, s)
        print(f"- seed {s}: {mt} / {et}; ratio {sum(et) / max(sum(mt), 1):.2f}")


def iterations(root: Path, splits: dict) -> None:
    """pass@1 of every iteration's policy, and the differences claims M1 (the arms at iteration 1) and M4
    (ReST-MCTS* over its iterations) read."""
    its = range(1, ITERATIONS + 1)
    m = {(a, n, s): seed_matrix([iteration_eval(root, a, seed, n) for seed in SEEDS], sp)
         for a in ARMS for n in its for s, sp in splits.items()}
    print("\npass@1 (%) by iteration, mean over seeds (each seed's value in brackets)\n")
    print("| arm | iteration | " + " | ".join(splits) + " |\n| :--- | ---: |" + " ---: |" * len(splits))
    for a in ARMS:
        for n in its:
            print(f"| {a} | {n} | " + " | ".join(seed_cell(m[a, n, s]) for s in splits) + " |")
    print("\n| difference | " + " | ".join(splits) + " |\n| :--- |" + " ---: |" * len(splits))
    rows = [(f"ReST-MCTS* − ReST-EM, iteration {n}", ("ReST-EM", n), ("ReST-MCTS*", n)) for n in its]
    rows += [(f"ReST-MCTS* iteration {n} − iteration {n - 1}", ("ReST-MCTS*", n - 1), ("ReST-MCTS*", n))
             for n in its[1:]]
    rows += [(f"ReST-MCTS* iteration {ITERATIONS} − iteration 1", ("ReST-MCTS*", 1), ("ReST-MCTS*", ITERATIONS))]
    for label, (xa, xn), (ya, yn) in rows:
        print(f"| {label} | " + " | ".join(diff(two_level_ci(m[xa, xn, s], m[ya, yn, s])) for s in splits) + " |")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
