"""Guided-ReST's last stage at 3 PPO seeds: does PPO improve ReST (claim P1) and Guided-ReST (claim P3)?

Why: the demo trains one PPO run per row, so P1 ("ReST does not benefit from PPO") and P3 ("PPO on
top of Guided-ReST improves it") each rest on one seed (``docs/claims.md``, command D8). Here PPO
runs 3 seeds from each model, as ``experiments/ppo_mdp_power.py`` did from the SoS base.

**Protocol** (written down before any arm was run):

* Countdown as the demo has it (``searchrl/presets/demo-default.yaml``), the shipped SoS base.
* **ReST** and **Guided-ReST**: the demo's default self-training (3 iterations of 500 ``selftrain``
  problems, fine-tuning from the SoS base each iteration; ReST is ``selftrain.guidance_rounds=0``),
  one run each (seed 0): they are the fixed starting points, as the SoS base was in
  ``ppo_mdp_power.py``.
* **PPO** from each: the demo's operation-level PPO (8 iterations x 64 prompts from ``selftrain``, 1
  response each at T 1.0, 768 tokens, actor lr 1e-4 and critic lr 1e-3, the rate chosen on
  ``valid`` in ``experiments/rl_valid.py``), seeds 0, 1, 2 (``ppo.seed``).
* **Endpoint**: pass@1 (4 samples) on 400 test problems (``test_seen`` and ``test_unseen``, 200
  each); P1 is ReST + PPO − ReST, P3 Guided-ReST + PPO − Guided-ReST, the mean over PPO seeds, with
  the two-level bootstrap of ``experiments/code_rl_power.py`` (the starting model is one evaluation,
  so only the PPO arm's seeds are resampled). ``valid`` (200 problems) is reported beside it.
* P1 claims no benefit: an interval above 0 refutes it; an interval containing 0 agrees with it but
  cannot reproduce it without an equivalence margin, and none is set.

Run it (resumable; about 45 min here, the data included)::

    python experiments/ppo_from_rest_power.py run
    python experiments/ppo_from_rest_power.py report
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from code_rl_power import (diff, iteration_model, run_command, run_unless_done, script_main, seed_cell,  # noqa: E402
                           seed_matrix, two_level_ci)

ROOT = "runs/ppo-rest"
SEEDS = (0, 1, 2)
ITERATIONS = 3
#: name: (label, the selftrain settings that make it)
STARTS = {"rest": ("ReST", ["selftrain.guidance_rounds=0"]), "guided-rest": ("Guided-ReST", [])}
COMMON = ["--config", "searchrl/presets/demo-default.yaml", "data_dir=runs/cd-data", "base_model=builtin:sos-tiny-base",
          "eval.splits=[valid,test_seen,test_unseen]", "eval.n_problems=200", "eval.n_samples=4", "eval.ks=[1,2,4]"]


def start_policy(root: Path, name: str) -> Path:
    """The self-training run's last policy."""
    return iteration_model(root / "start" / name, ITERATIONS, "model")


def ppo_eval(root: Path, name: str, seed: int) -> Path:
    return root / f"ppo-{name}-s{seed}" / "ppo-eval"


def run(root: Path, searchrl: list[str]) -> None:
    run_command(searchrl, ["data", "--config", "searchrl/presets/demo-default.yaml", "--out", "runs/cd-data"])  # once
    for name, (_, settings) in STARTS.items():
        run_unless_done(searchrl, root / "start" / f"{name}-eval", lambda: [
            "selftrain", "--run-dir", str(root / "start"), "--name", name, *COMMON,
            f"selftrain.iterations={ITERATIONS}", *settings, "--eval"])
    for seed in SEEDS:
        for name in STARTS:
            run_unless_done(searchrl, ppo_eval(root, name, seed), lambda: [
                "ppo", "--run-dir", str(ppo_eval(root, name, seed).parent), *COMMON, f"ppo.seed={seed}",
                "--model", str(start_policy(root, name)), "--eval"])


def report(root: Path) -> None:
    splits = {"test (400)": ("test_seen", "test_unseen"), "test_seen (200)": ("test_seen",),
              "test_unseen (200)": ("test_unseen",), "valid (200)": ("valid",)}
    m = {}
    for name, (label, _) in STARTS.items():
        for n, sp in splits.items():
            m[label, n] = seed_matrix([root / "start" / f"{name}-eval"], sp)
            m[f"{label} + PPO", n] = seed_matrix([ppo_eval(root, name, s) for s in SEEDS], sp)
    arms = list(dict.fromkeys(a for a, _ in m))
    print("pass@1 (%), mean over PPO seeds (each seed's value in brackets)\n")
    print("| arm | " + " | ".join(splits) + " |\n| :--- |" + " ---: |" * len(splits))
    for a in arms:
        print(f"| {a} | " + " | ".join(seed_cell(m[a, n]) for n in splits) + " |")
    print("\n| difference | " + " | ".join(splits) + " |\n| :--- |" + " ---: |" * len(splits))
    for claim, (label, _) in zip(("P1", "P3"), STARTS.values()):
        print(f"| {claim}: {label} + PPO − {label} | "
              + " | ".join(diff(two_level_ci(m[label, n], m[f"{label} + PPO", n])) for n in splits) + " |")
    print("| Guided-ReST + PPO − ReST + PPO | "
          + " | ".join(diff(two_level_ci(m["ReST + PPO", n], m["Guided-ReST + PPO", n])) for n in splits) + " |")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
