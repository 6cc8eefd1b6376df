"""Guided-ReST's "2x token efficiency", read off the accuracy-vs-budget curves with an interval.

The Guided-ReST poster claims 2x token efficiency over ReST and SoS. Its evaluation counts a
sampled success only if it fits the token budget (accuracy at budget B = the share of samples that
are correct within B tokens, averaged over problems: ``accuracy_vs_budget``). From a run's
evaluation samples (``searchrl eval`` / ``searchrl demo``: ``<eval>/<method>/samples/<split>/sampled-*``)
this reports, for the method against each baseline, on the same problems:

* ``ratio``: the baseline's full budget B (default: the longest sample, i.e. the evaluation's
  response limit) over the smallest budget at which the method is at least as accurate as the
  baseline at B. "2x" is a ratio of 2. Its 95% interval comes from a paired bootstrap over
  problems (each resample draws the same problems for both); ``reached`` is the share of
  resamples where the method reaches the baseline's accuracy at all (the ratio is 0 where it does
  not).
* ``half_budget``: the paired difference, accuracy of the method at B/2 minus the baseline's at B,
  with its 95% interval: above 0 means the method does better on half the tokens.

    python experiments/token_efficiency.py --eval runs/demo/eval --budget 768
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_samples(eval_dir: Path, method: str, split: str) -> dict[int, list[tuple[bool, int]]]:
    """Problem index -> its sampled ``(correct, num_tokens)``, from the one ``sampled-*`` directory there."""
    base = eval_dir / method / "samples" / split
    dirs = sorted(base.glob("sampled-*"))
    if len(dirs) != 1:
        raise FileNotFoundError(f"{base}: expected one sampled-* directory, found {len(dirs)}")
    out: dict[int, list[tuple[bool, int]]] = {}
    for f in sorted(dirs[0].glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out.setdefault(int(r["index"]), []).append((bool(r["correct"]), int(r["num_tokens"])))
    return out


def accuracy_at(samples: list[list[tuple[bool, int]]], budget: float) -> list[float]:
    """Per problem: the share of its samples correct within ``budget`` tokens."""
    return [sum(c and t <= budget for c, t in s) / len(s) for s in samples]


def tokens_to_reach(samples: list[list[tuple[bool, int]]], target: float) -> int | None:
    """The smallest budget at which the mean accuracy over problems reaches ``target`` (None: never)."""
    steps = sorted((t, 1.0 / (len(samples) * len(s))) for s in samples for c, t in s if c)
    acc = 0.0
    for t, w in steps:
        acc += w
        if acc >= target - 1e-12:
            return t
    return None if target > 0 else 0


def ratio(method: list, base: list, budget: int) -> float:
    target = sum(accuracy_at(base, budget)) / len(base)
    need = tokens_to_reach(method, target)
    return 0.0 if need is None else budget / max(need, 1)


def compare(method: dict, base: dict, budget: int, resamples: int = 2000, seed: int = 0) -> dict:
    import numpy as np

    from searchrl.eval.metrics import paired_difference

    common = sorted(method.keys() & base.keys())
    if not common:
        raise ValueError("the two methods share no problem")
    m, b = [method[i] for i in common], [base[i] for i in common]
    point = ratio(m, b, budget)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = rng.integers(0, len(common), len(common))
        draws.append(ratio([m[i] for i in idx], [b[i] for i in idx], budget))
    lo, hi = np.quantile(draws, [0.025, 0.975])
    half = paired_difference(accuracy_at(b, budget), accuracy_at(m, budget / 2))
    return {"problems": len(common), "budget": budget,
            "method_accuracy": sum(accuracy_at(m, budget)) / len(m), "base_accuracy": sum(accuracy_at(b, budget)) / len(b),
            "ratio": point, "ratio_ci": [float(lo), float(hi)], "reached": float(np.mean([d > 0 for d in draws])),
            "half_budget": half}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", type=Path, required=True, help="a run's evaluation directory (runs/demo/eval)")
    ap.add_argument("--method", default="Guided-ReST")
    ap.add_argument("--baselines", nargs="+", default=["ReST", "SoS"])
    ap.add_argument("--splits", nargs="+", default=["test_seen", "test_unseen"])
    ap.add_argument("--budget", type=int, help="the baseline's full budget B (default: the longest sample)")
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args(argv)
    out = {}
    for split in args.splits:
        method = load_samples(args.eval, args.method, split)
        for name in args.baselines:
            base = load_samples(args.eval, name, split)
            budget = args.budget or max(t for s in [*method.values(), *base.values()] for _, t in s)
            r = compare(method, base, budget, args.resamples)
            out[f"{args.method} vs {name}, {split}"] = r
            h = r["half_budget"]
            print(f"{args.method} vs {name}, {split} ({r['problems']} problems, B = {budget}): ratio {r['ratio']:.2f} "
                  f"(95% CI {r['ratio_ci'][0]:.2f}..{r['ratio_ci'][1]:.2f}; reached in {100 * r['reached']:.0f}% of "
                  f"resamples); accuracy at B/2 minus {name} at B: {100 * h['diff']:+.1f} pp "
                  f"({100 * h['ci'][0]:+.1f}..{100 * h['ci'][1]:+.1f})", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
