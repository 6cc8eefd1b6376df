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
  One seed of ReST-GRPO training: the interval is over problems, not training seeds.

Run it (resumable; about 70 min here)::

    python experiments/rest_rl_vm_mcts.py run
    python experiments/rest_rl_vm_mcts.py report
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from code_rl_power import run_unless_done, script_main  # noqa: E402
from search_claims import load_run, verdict  # noqa: E402

ROOT = "runs/t13"
CONFIG = "experiments/claims/countdown-rest-rl.yaml"
DATA = "runs/claims-data"
VALID = ["eval.splits=[valid]", "eval.n_problems=200", "eval.n_samples=4", "eval.ks=[1,4]"]
REST_GRPO = ["rest_grpo.iterations=2", "rest_grpo.n_problems=32", "rest_grpo.samples=8", "grpo.lr=1e-4",
             "grpo.prompts_per_step=8", "grpo.samples_per_prompt=8", "grpo.minibatch_size=32",
             "grpo.tokens_per_batch=4096"]


def policy(root: Path) -> Path:
    """The ReST-GRPO run's last policy (its iteration 2)."""
    return root / "rest" / "rest-grpo" / "iter2" / "grpo" / "final"


def run(root: Path, searchrl: list[str]) -> None:
    common = ["--config", CONFIG, f"data_dir={DATA}"]
    cmd = [*searchrl, "data", "--config", "experiments/claims/countdown-vgs.yaml", "--out", DATA]  # once
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    run_unless_done(searchrl, root / "base" / "eval", lambda: ["eval", "--run-dir", str(root / "base"), *common, *VALID])
    run_unless_done(searchrl, root / "rest" / "rest-grpo-eval", lambda: [
        "rest-grpo", "--run-dir", str(root / "rest"), *common, *REST_GRPO, *VALID, "--eval"])
    methods = ["search.methods=[vm-mcts]"]
    run_unless_done(searchrl, root / "vm-base" / "compare-search", lambda: [
        "compare-search", "--run-dir", str(root / "vm-base"), *common, *methods])
    run_unless_done(searchrl, root / "vm-rest" / "compare-search", lambda: [
        "compare-search", "--run-dir", str(root / "vm-rest"), *common, *methods, "--model", str(policy(root))])


def gate(root: Path) -> None:
    from searchrl.eval.metrics import compare_methods

    evals = {"SoS base": root / "base" / "eval", "ReST-GRPO": root / "rest" / "rest-grpo-eval"}
    methods = {k: next(iter(json.loads((p / "results.json").read_text())["methods"].values()))
               for k, p in evals.items()}
    print("Gate, `valid` (200 problems, 4 samples):\n")
    for name, m in methods.items():
        s = m["valid"]
        print(f"- {name}: pass@1 {100 * s['pass@k']['1']:.1f}, greedy {100 * s['greedy']:.1f}")
    for c in compare_methods(methods, ["valid"], ["pass@1", "greedy"]):
        if c["a"] == "SoS base":
            print(f"- ReST-GRPO − base, {c['metric']}: {100 * c['diff']:+.1f} "
                  f"({100 * c['ci'][0]:+.1f}..{100 * c['ci'][1]:+.1f})")


def report(root: Path) -> None:
    from searchrl.eval.metrics import paired_difference

    gate(root)
    _, base = load_run(root / "vm-base")
    _, rest = load_run(root / "vm-rest")
    print("\nVM-MCTS on 300 `test_seen` problems: accuracy % (95% CI), generated tokens a problem used\n")
    print("| budget | VM-MCTS (SoS base) | ReST-RL (ReST-GRPO + VM-MCTS) | ReST-RL − VM-MCTS (pp) | verdict |")
    print("| ---: | :--- | :--- | :--- | :--- |")
    for (method, budget), a in sorted(base.items(), key=lambda kv: kv[0][1]):
        b = rest[(method, budget)]
        pa = {r["index"]: float(r["correct"]) for r in a["problems"]}
        pb = {r["index"]: float(r["correct"]) for r in b["problems"]}
        common = sorted(pa.keys() & pb.keys())
        d = paired_difference([pa[i] for i in common], [pb[i] for i in common])

        def cell(row: dict) -> str:
            return (f"{100 * row['accuracy']:.1f} ({100 * row['ci_low']:.1f}..{100 * row['ci_high']:.1f}), "
                    f"{row['generated_tokens']:.0f}")

        print(f"| {budget:,} | {cell(a['row'])} | {cell(b['row'])} | {100 * d['diff']:+.1f} "
              f"({100 * d['ci'][0]:+.1f}..{100 * d['ci'][1]:+.1f}) | {verdict(d['ci'])} |")
    for name, path in (("SoS base", root / "vm-base"), ("ReST-GRPO", root / "vm-rest")):
        meta = json.loads((path / "compare-search" / "results.json").read_text())["meta"]
        print(f"\n{name}: value model {meta['models']}")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__, ROOT, run, report, argv)


if __name__ == "__main__":
    sys.exit(main())
