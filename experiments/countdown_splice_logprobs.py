"""How likely the base policy finds the traces each method fine-tunes on (issue 9's study).

    python experiments/countdown_splice_logprobs.py --run-dir runs/study

Reads Guided-ReST's iteration-1 data of a study (or demo) run directory and scores every
response token under the base model the iteration sampled from: the trajectories it found
alone (round 0, what ReST also keeps) against the ones guidance rescued, whose guided prefix
carries a step of the optimal solution spliced into the model's own search. Prints one JSON
object: per group the mean token logprob, the median of each trace's least likely token (in
the guided prefix and in the model's continuation separately) and the share of tokens the
base gives less than 1% probability.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/countdown-study")
    ap.add_argument("--max", type=int, default=300, help="trajectories per group")
    args = ap.parse_args(argv)

    from searchrl.config import EngineConfig
    from searchrl.data import read_json, read_jsonl
    from searchrl.engine.factory import make_generator
    from searchrl.models.policy import load_policy
    from searchrl.rundir import resolve

    it = Path(args.run_dir) / "guided-rest" / "iter1"
    base = resolve(it.parent, read_json(it / "gen_stats.json")["policy"])
    generator = make_generator(EngineConfig(), *load_policy(str(base)))
    recs = read_jsonl(it / "data.jsonl")
    groups = {"own (round 0)": [r for r in recs if r["meta"]["solved_round"] == 0][: args.max],
              "rescued (rounds >= 1)": [r for r in recs if r["meta"]["solved_round"] > 0][: args.max]}
    out = {"base": str(base)}
    for name, rows in groups.items():
        if not rows:
            out[name] = {"n": 0}
            continue
        means, mins, low, pre, cont = [], [], [], [], []
        scored = generator.score_continuations([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows])
        for r, sc in zip(rows, scored):
            lp = sc.logprobs
            p = r["prefix_len"]
            means.append(statistics.fmean(lp))
            mins.append(min(lp))
            low.append(sum(x < math.log(0.01) for x in lp) / len(lp))
            if p:
                pre.append(min(lp[:p]))
                if lp[p:]:
                    cont.append(min(lp[p:]))
        out[name] = {"n": len(rows), "mean_token_logprob": statistics.fmean(means),
                     "median_least_likely_token_logprob": statistics.median(mins),
                     "median_least_likely_in_guided_prefix": statistics.median(pre) if pre else None,
                     "median_least_likely_in_continuation": statistics.median(cont) if cont else None,
                     "share_of_tokens_below_1pct": statistics.fmean(low)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
