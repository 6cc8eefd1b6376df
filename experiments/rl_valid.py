"""RL from the SoS base on `valid`: which settings to ship, and PPO vs GRPO vs DAPO at equal samples.

The runs (each trains the shipped SoS base on `selftrain` for 8 iterations of 64 responses, then
evaluates 200 `valid` problems with 4 samples each and greedy):

    D="data_dir=runs/cd-data base_model=builtin:sos-tiny-base eval.splits=[valid] eval.n_problems=200 \
       eval.n_samples=4 eval.ks=[1,4]"
    searchrl eval --run-dir runs/probe-a $D                                      # the base
    searchrl ppo --run-dir runs/valid-rl --name ppo-lr3e-5 --eval $D ppo.iterations=8 \
        ppo.prompts_per_step=64 ppo.minibatch_size=32 ppo.tokens_per_batch=4096 ppo.lr=3e-5 ppo.critic_lr=1e-4
    searchrl ppo --run-dir runs/valid-rl --name ppo-lr1e-4 --eval $D (the same with) ppo.lr=1e-4 ppo.critic_lr=1e-3
    searchrl grpo --run-dir runs/probe-grpo --eval $D grpo.iterations=8 grpo.prompts_per_step=8 \
        grpo.samples_per_prompt=8 grpo.minibatch_size=32 grpo.tokens_per_batch=4096 grpo.lr=1e-4
    searchrl grpo --run-dir runs/probe-grpo --name dapo --eval $D (the same with) grpo.policy_loss=dapo \
        grpo.clip_high=0.28 grpo.loss_agg=action-mean grpo.dynamic_sampling=true grpo.overlong_buffer=128

then this script prints each one's pass@1, pass@4 and greedy accuracy with 95% bootstrap intervals
and its paired difference to the base on the same problems:

    python experiments/rl_valid.py "SoS base=runs/probe-a/eval" "PPO lr 3e-5=runs/valid-rl/ppo-lr3e-5-eval" \
        "PPO lr 1e-4=runs/valid-rl/ppo-lr1e-4-eval" "GRPO lr 1e-4=runs/probe-grpo/grpo-eval" \
        "DAPO lr 1e-4=runs/probe-grpo/dapo-eval"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from searchrl.eval.metrics import compare_methods


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("evals", nargs="+", metavar="NAME=DIR", help="eval output directories (results.json); the "
                    "first is the base the others are compared with")
    ap.add_argument("--split", default="valid")
    args = ap.parse_args(argv)
    methods = {}
    for item in args.evals:
        name, _, path = item.partition("=")
        res = json.loads((Path(path) / "results.json").read_text(encoding="utf-8"))["methods"]
        methods[name] = next(iter(res.values()))
    base = next(iter(methods))
    metrics = ["pass@1", "pass@4", "greedy"]
    diffs = {(c["b"], c["metric"]): c for c in compare_methods(methods, [args.split], metrics) if c["a"] == base}

    def cell(v, ci):
        return f"{100 * v:.1f} ({100 * ci[0]:.1f}..{100 * ci[1]:.1f})"

    print(f"| {args.split} (problems) | pass@1 | pass@4 | greedy | pass@1 − base | pass@4 − base | greedy − base |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, m in methods.items():
        s = m[args.split]
        row = [cell(s["pass@k"]["1"], s["pass@k_ci"]["1"]), cell(s["pass@k"]["4"], s["pass@k_ci"]["4"]),
               cell(s["greedy"], s["greedy_ci"])]
        for metric in metrics:
            d = diffs.get((name, metric))
            row.append("" if d is None else f"{100 * d['diff']:+.1f} ({100 * d['ci'][0]:+.1f}..{100 * d['ci'][1]:+.1f})")
        print(f"| {name} ({s['num_problems']}) | " + " | ".join(row) + " |")
    return 0


def test_tables(root: Path, rows: tuple[tuple[str, str], ...], splits=("test_seen", "test_unseen")) -> None:
    """The table above for each of ``splits``, over the ``(name, eval dir under root)`` rows that exist
    (the first is the base); what the experiment scripts print."""
    found = [f"{name}={root / path}" for name, path in rows if (root / path / "results.json").exists()]
    for split in splits:
        print(f"\n{split}\n")
        main([*found, "--split", split])


if __name__ == "__main__":
    raise SystemExit(main())
