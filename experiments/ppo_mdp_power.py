"""Guided-ReST's "operation-level MDP is essential" at the power issue #28 asks for: 3 seeds per arm.

Why: the demo's single PPO run per row cannot separate operation-level from token-level PPO
(claim P2 of ``docs/claims.md``). Here both MDPs train the shipped SoS base with 3 seeds each, at a
training budget where SoS + PPO is first shown to beat SoS on ``valid`` (the gate the issue sets).

**Protocol** (written down before any arm was run):

* Countdown as the demo has it (``searchrl/presets/demo-default.yaml``: 3 numbers, targets 10..59,
  5 unseen targets), the shipped SoS base (``builtin:sos-tiny-base``).
* Both arms: the demo's PPO, 8 iterations x 64 prompts from ``selftrain``, 1 response each at T 1.0,
  768 tokens, actor lr 1e-4 and critic lr 1e-3 (chosen on ``valid`` for operation-level PPO:
  ``experiments/rl_valid.py``), seeds 0, 1, 2 (``ppo.seed``). **Operation-level** is
  ``ppo.adv_estimator=gae_action`` (an action is a line: Guided-ReST's MDP), **token-level**
  ``gae`` (every token an action); nothing else differs. Token-level PPO was not given its own
  learning-rate search: both use the rate chosen for the paper's MDP.
* **Gate**: operation-level SoS + PPO minus SoS, pass@1 on 200 ``valid`` problems (4 samples),
  over the 3 seeds, must have its 95% interval above 0.
* **Endpoint** (P2): operation-level minus token-level pass@1 on 400 test problems (``test_seen``
  and ``test_unseen``, 200 each, 4 samples), averaged over seeds; the interval is the two-level
  bootstrap of ``experiments/code_rl_power.py`` (problems paired, seeds resampled within each arm).

Run it (resumable)::

    searchrl data --config searchrl/presets/demo-default.yaml --out runs/cd-data   # 4 min
    python experiments/ppo_mdp_power.py run
    python experiments/ppo_mdp_power.py report
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from code_rl_power import diff, run_unless_done, script_main, seed_cell, seed_matrix, two_level_ci  # noqa: E402

ROOT = "runs/ppo-pw"
ARMS = {"op": ("operation-level PPO", "gae_action"), "token": ("token-level PPO", "gae")}
SEEDS = (0, 1, 2)
COMMON = ["--config", "searchrl/presets/demo-default.yaml", "data_dir=runs/cd-data", "base_model=builtin:sos-tiny-base",
          "eval.splits=[valid,test_seen,test_unseen]", "eval.n_problems=200", "eval.n_samples=4", "eval.ks=[1,2,4]"]


def eval_dir(root: Path, arm: str, seed: int) -> Path:
    return root / f"{arm}-s{seed}" / "ppo-eval"


def run(root: Path, searchrl: list[str]) -> None:
    run_unless_done(searchrl, root / "base" / "eval", lambda: ["eval", "--run-dir", str(root / "base"), *COMMON])
    for seed in SEEDS:
        for arm, (_, est) in ARMS.items():
            run_unless_done(searchrl, eval_dir(root, arm, seed), lambda: [
                "ppo", "--run-dir", str(root / f"{arm}-s{seed}"), *COMMON, f"ppo.adv_estimator={est}",
                f"ppo.seed={seed}", "--eval"])


def matrix(root: Path, arm: str, splits) -> np.ndarray:
    return seed_matrix([root / "base" / "eval"] if arm == "base" else [eval_dir(root, arm, s) for s in SEEDS], splits)


def report(root: Path) -> None:
    splits = {"valid (200)": ("valid",), "test (400)": ("test_seen", "test_unseen"),
              "test_seen (200)": ("test_seen",), "test_unseen (200)": ("test_unseen",)}
    m = {(a, n): matrix(root, a, sp) for a in ("base", *ARMS) for n, sp in splits.items()}
    print("pass@1 (%), mean over seeds 0, 1, 2 (each seed's value in brackets)\n")
    print("| arm | " + " | ".join(splits) + " |\n| :--- |" + " ---: |" * len(splits))
    for a in ("base", *ARMS):
        name = "SoS base" if a == "base" else "SoS + " + ARMS[a][0]
        print(f"| {name} | " + " | ".join(seed_cell(m[a, n]) for n in splits) + " |")
    print("\n| difference | " + " | ".join(splits) + " |\n| :--- |" + " ---: |" * len(splits))
    for label, a, b in (("operation-level − SoS (the gate)", "base", "op"), ("token-level − SoS", "base", "token"),
                        ("operation-level − token-level (P2)", "token", "op")):
        print(f"| {label} | " + " | ".join(diff(two_level_ci(m[a, n], m[b, n])) for n in splits) + " |")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
