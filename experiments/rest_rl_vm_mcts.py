"""ReST-RL's last row of Table 2 (claim T13): a ReST-GRPO policy decoded with VM-MCTS against VM-MCTS
on the policy it started from (issue #28).

The paper (Qwen3-8B, code) reports ReST-RL .689 against VM-MCTS .615: ReST-GRPO trains the policy,
then VM-MCTS decodes it, each policy with a value model of its own ("a classifier head on the base
policy ... one per policy"). The other rows of Table 2 (T8-T12) were measured on Countdown with
``experiments/claims/countdown-rest-rl.yaml`` (the shipped SoS base); this runs the missing row on
the same testbed, problems and search settings.

**Protocol** (written before the runs):

* Testbed: Countdown with the task settings and data of ``experiments/claims/countdown-vgs.yaml``
  (``runs/claims-data``), the shipped SoS base (``builtin:sos-tiny-base``).
* ReST-GRPO from the SoS base: 2 iterations (the paper's), 32 ``selftrain`` questions an iteration,
  8 samples a question for the filter, one GRPO pass over all of P_Q+ (Algorithm 1 line 19), 8
  prompts x 8 samples a step, learning rate 1e-4: the GRPO rate chosen on Countdown ``valid``
  (``experiments/rl_valid.py``, GRPO +6.1 there), temperature 1.0 as there. Seed 0.
* Gate, reported whatever it says: the ReST-GRPO policy against the base on 200 ``valid`` problems
  (4 samples and greedy). T13 asks whether decoding a better policy with VM-MCTS helps; if the policy
  is not better on ``valid`` the comparison says so.
* Both arms: ``searchrl compare-search`` with ``countdown-rest-rl.yaml`` and ``search.methods=[vm-mcts]``
  (budgets 1,024 and 4,096 generated tokens a problem, the same 300 ``test_seen`` problems, T 0.7),
  each policy with its own value model made the same way from its own weights and its own
  samples (Algorithm 2 targets: 125 ``selftrain`` problems, 12 iterations).
* Endpoint: VM-MCTS accuracy at each budget, the paired difference ReST-RL − VM-MCTS over the same
  problems with its bootstrap 95% interval; verdict reproduced / refuted / inconclusive per budget.
* **Seeds** (added after seed 0 had run, because a claim about a trained policy needs 3 training
  seeds, as the RL claims do; seed 0 alone gave −3.7 (−9.0..+1.3) at 1,024 and −8.0 (−13.7..−2.7)
  at 4,096): the ReST arm is run with seeds 1 and 2 too (``rest_grpo.seed``, ``grpo.seed``, and
  ``value_data.seed`` and ``value.seed`` of its value model). The base arm is one fixed policy and
  value model. The interval for the mean over seeds is the two-level bootstrap of
  ``experiments/code_rl_power.py`` (problems paired, seeds resampled).

Run it (resumable; about 45 min here for seed 0 and both arms, then 17 min a further seed)::

    python experiments/rest_rl_vm_mcts.py run
    python experiments/rest_rl_vm_mcts.py report
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from code_rl_power import (diff, greedy, per_problem, run_command, run_unless_done, script_main,  # noqa: E402
                           seed_cell, seed_matrix, two_level_ci)
from search_claims import load_run, verdict  # noqa: E402

ROOT = "runs/t13"
CONFIG = "experiments/claims/countdown-rest-rl.yaml"
DATA = "runs/claims-data"
VALID = ["eval.splits=[valid]", "eval.n_problems=200", "eval.n_samples=4", "eval.ks=[1,4]"]
REST_GRPO = ["rest_grpo.iterations=2", "rest_grpo.n_problems=32", "rest_grpo.samples=8", "grpo.lr=1e-4",
             "grpo.prompts_per_step=8", "grpo.samples_per_prompt=8", "grpo.minibatch_size=32",
             "grpo.tokens_per_batch=4096"]


SEEDS = (0, 1, 2)


def rest_dir(root: Path, seed: int) -> Path:
    return root / ("rest" if seed == 0 else f"rest-s{seed}")


def vm_rest_dir(root: Path, seed: int) -> Path:
    return root / ("vm-rest" if seed == 0 else f"vm-rest-s{seed}")


def seeded(seed: int) -> list[str]:
    """The ReST arm's seeds (seed 0: the defaults, as the first run had them)."""
    return [] if seed == 0 else [f"rest_grpo.seed={seed}", f"grpo.seed={seed}", f"value_data.seed={seed}",
                                 f"value.seed={seed}"]


def policy(root: Path, seed: int) -> Path:
    """The ReST-GRPO run's last policy (its iteration 2)."""
    return rest_dir(root, seed) / "rest-grpo" / "iter2" / "grpo" / "final"


def run(root: Path, searchrl: list[str]) -> None:
    common = ["--config", CONFIG, f"data_dir={DATA}"]
    run_command(searchrl, ["data", "--config", "experiments/claims/countdown-vgs.yaml", "--out", DATA])  # once
    run_unless_done(searchrl, root / "base" / "eval", lambda: ["eval", "--run-dir", str(root / "base"), *common, *VALID])
    methods = ["search.methods=[vm-mcts]"]
    for seed in SEEDS:
        run_unless_done(searchrl, rest_dir(root, seed) / "rest-grpo-eval", lambda: [
            "rest-grpo", "--run-dir", str(rest_dir(root, seed)), *common, *REST_GRPO, *seeded(seed), *VALID, "--eval"])
        if seed == 0:
            run_unless_done(searchrl, root / "vm-base" / "compare-search", lambda: [
                "compare-search", "--run-dir", str(root / "vm-base"), *common, *methods])
        run_unless_done(searchrl, vm_rest_dir(root, seed) / "compare-search", lambda: [
            "compare-search", "--run-dir", str(vm_rest_dir(root, seed)), *common, *methods, *seeded(seed),
            "--model", str(policy(root, seed))])


def gate(root: Path) -> None:
    """The ReST-GRPO policies against the base on ``valid``."""
    base, rest = [root / "base" / "eval"], [rest_dir(root, s) / "rest-grpo-eval" for s in SEEDS]
    print("Gate, `valid` (200 problems, 4 samples; each seed's value in brackets):\n")
    for label, fn in (("pass@1", per_problem), ("greedy", greedy)):
        a, b = seed_matrix(base, ["valid"], fn), seed_matrix(rest, ["valid"], fn)
        print(f"- {label}: SoS base {100 * a.mean():.1f}, ReST-GRPO {seed_cell(b)}; "
              f"ReST-GRPO − base {diff(two_level_ci(a, b))}")


def correct(by: dict, budget: int) -> np.ndarray:
    """Per-problem correctness (by problem index) of VM-MCTS at ``budget``, from a run's :func:`load_run` records."""
    return np.asarray([float(r["correct"]) for r in sorted(by[("vm-mcts", budget)]["problems"], key=lambda r: r["index"])])


def report(root: Path) -> None:
    from searchrl.eval.metrics import paired_difference

    gate(root)
    meta, base = load_run(root / "vm-base")
    runs = {s: load_run(vm_rest_dir(root, s)) for s in SEEDS}  # seed -> (meta, records)
    print("\nVM-MCTS on 300 `test_seen` problems: accuracy % (each seed's in brackets), generated tokens a problem "
          "used (the mean over seeds)\n")
    print("| budget | VM-MCTS (SoS base) | ReST-RL (ReST-GRPO + VM-MCTS) | ReST-RL − VM-MCTS (pp) | verdict |")
    print("| ---: | :--- | :--- | :--- | :--- |")
    for budget in meta["budgets"]:
        a = correct(base, budget)[None]
        b = np.stack([correct(by, budget) for _, by in runs.values()])
        tokens = np.mean([by[("vm-mcts", budget)]["row"]["generated_tokens"] for _, by in runs.values()])
        d = two_level_ci(a, b)
        print(f"| {budget:,} | {100 * a.mean():.1f}, {base[('vm-mcts', budget)]['row']['generated_tokens']:.0f} | "
              f"{seed_cell(b)}, {tokens:.0f} | {diff(d)} | {verdict([d[1], d[2]])} |")
    print("\nEach seed against the base (paired bootstrap over problems):")
    for s, (_, by) in runs.items():
        cells = []
        for budget in meta["budgets"]:
            p = paired_difference(correct(base, budget), correct(by, budget))
            cells.append(f"{budget:,}: {diff((p['diff'], *p['ci']))}")
        print(f"- seed {s}: " + "; ".join(cells))
    for name, m in [("SoS base", meta)] + [(f"ReST-GRPO seed {s}", m) for s, (m, _) in runs.items()]:
        print(f"- {name}: policy {m['policy']}, value model {m['models']}")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
