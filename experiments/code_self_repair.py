"""Guided-ReST's code self-repair on the synthetic code task: base vs ReST vs Guided-ReST, pass@k of episodes.

Why: the Guided-ReST paper (seed 001, "Code self-repair results") reports pass@k of 4-turn
self-repair episodes on CodeContests (Qwen2.5-7B-Instruct): base 4.5 / 25.8, ReST 9.4 / 30.4,
Guided-ReST 10.5 / 33.9 at k = 1 / 32. This is the same comparison at CPU scale. The runs
(``recipes/code/self-repair-tiny.yaml``: a tiny-1m model from scratch, 30% of its demonstrations
two-turn repairs; 2 iterations of episodes on the first 400 ``selftrain`` problems, SFT from the
base each iteration; evaluation: 8 episodes of up to 4 turns per problem, 150 problems per split):

    C="--config recipes/code/self-repair-tiny.yaml --run-dir runs/repair-tiny"
    searchrl sft $C
    searchrl eval $C                                                  # the base -> runs/repair-tiny/eval
    searchrl selftrain $C selftrain.guidance_rounds=0 --eval          # ReST -> rest, rest-eval
    searchrl selftrain $C --eval                                      # Guided-ReST -> guided-rest, guided-rest-eval

(the same with ``--run-dir runs/repair-guided task.repair_guided=0.5``: half of the repair
demonstrations also show the reference, so the base learns to use one) then ``python
experiments/code_self_repair.py [--run runs/repair-guided]`` prints, per split, pass@1 and pass@8 of whole episodes
with 95% bootstrap intervals, each method's paired difference to the base on the same problems,
the accuracy of the first turn alone, the mean number of turns, and what each iteration kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from searchrl.eval.metrics import compare_methods

ROWS = (("SFT base", "eval"), ("ReST", "rest-eval"), ("Guided-ReST", "guided-rest-eval"))
GEN = (("ReST", "rest"), ("Guided-ReST", "guided-rest"))


def _pct(v, ci=None) -> str:
    return f"{100 * v:.1f}" + (f" ({100 * ci[0]:.1f}..{100 * ci[1]:.1f})" if ci else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="directory the runs/ paths are relative to")
    ap.add_argument("--ks", default="1,8", help="the k of the pass@k columns")
    ap.add_argument("--run", default="runs/repair-tiny", help="the run directory (under --root) of the commands above")
    args = ap.parse_args(argv)
    root = Path(args.root) / args.run
    ks = args.ks.split(",")
    methods, episodes = {}, {}
    for name, path in ROWS:
        f = root / path / "results.json"
        if f.exists():
            methods[name] = next(iter(json.loads(f.read_text(encoding="utf-8"))["methods"].values()))
            episodes[name] = json.loads((root / path / "summary.json").read_text(encoding="utf-8")).get("episodes", {})
    if not methods:
        print("no results yet: run the commands in this script's docstring")
        return 1
    splits = [s for s in next(iter(methods.values())) if s != "episodes"]
    base = next(iter(methods))
    metrics = [f"pass@{k}" for k in ks]
    diffs = {(c["b"], c["split"], c["metric"]): c for c in compare_methods(methods, splits, metrics) if c["a"] == base}
    for split in splits:
        print(f"\n{split}\n")
        head = [f"pass@{k}" for k in ks] + [f"pass@{k} − base" for k in ks] + ["first turn", "turns"]
        print(f"| method ({split}) | " + " | ".join(head) + " |")
        print("| :--- |" + " ---: |" * len(head))
        for name, m in methods.items():
            s = m[split]
            row = [_pct(s["pass@k"][k], s["pass@k_ci"][k]) for k in ks]
            for k in ks:
                d = diffs.get((name, split, f"pass@{k}"))
                row.append("" if d is None else f"{100 * d['diff']:+.1f} ({100 * d['ci'][0]:+.1f}..{100 * d['ci'][1]:+.1f})")
            ep = episodes[name].get(split, {})
            row += [_pct(ep["first_turn_accuracy"]) if ep else "", f"{ep['turns_mean']:.2f}" if ep else ""]
            print(f"| {name} | " + " | ".join(row) + " |")
    print("\nself-training generation (per iteration: problems, kept, solved by round 0 = no guidance / 1..3)\n")
    for name, path in GEN:
        for f in sorted((root / path).glob("iter*/gen_stats.json")):
            st = json.loads(f.read_text(encoding="utf-8"))
            print(f"{name} {f.parent.name}: {st['kept']} of {st['problems']} kept, solved by round "
                  f"{st['solved_by_round']}, first turn correct {st.get('first_turn_correct')}, "
                  f"{st['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
