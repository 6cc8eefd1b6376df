"""The seeds' search claims, each read off one ``compare-search`` run with a verdict.

Each claim names the run it is read from (one verifier per claim: the run's config says which
model scores which row), the methods it compares, the paper's numbers and the direction it
claims. At every budget of that run this reports each method's accuracy with its 95% bootstrap
interval over problems, the tokens it actually generated, and the **paired difference** (the
claimed winner minus the other, on the same problems, paired bootstrap 95% interval), with a
verdict per budget:

* ``reproduced``: the interval lies above 0 (the claimed direction);
* ``refuted``: it lies below 0 (the opposite direction);
* ``inconclusive at this power``: it contains 0.

A claim's overall verdict is the budgets' common verdict, else ``mixed`` (naming each). Writes
Markdown (``--out``) and prints a JSON object.

    python experiments/search_claims.py --vgs runs/claims-vgs --rest-rl runs/claims-rest-rl \\
        --rest-mcts runs/claims-math --out docs/claims-search.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: (claim id, run key, the paper's statement, [(winner, loser, the paper's numbers)])
CLAIMS = [
    ("vgs", "vgs", "VGS: beam search (w = 2) with the value model and a weighted vote beats best-of-N and majority "
                   "vote at equal budget (45.7% over AIME/HMMT at budget 64, R1-Distill-1.5B)",
     [("beam", "bon-classifier", "beam > BoN (figure: all budgets)"),
      ("beam", "vote", "beam > majority vote (figure: all budgets)"),
      ("dvts", "bon-classifier", "DVTS > BoN"), ("dvts", "vote", "DVTS > majority vote"),
      ("classifier-vote", "vote", "weighted vote > majority vote")]),
    ("rest-rl-table2", "rest_rl", "ReST-RL Table 2 (Qwen3-8B, APPS-style code): VM-MCTS .615 > ORM-MCTS .538 > "
                                  "BoN-ORM .531 > BoN-PRM .516",
     [("vm-mcts", "orm-mcts", ".615 vs .538"), ("orm-mcts", "bon-orm", ".538 vs .531"),
      ("bon-orm", "prm-min", ".531 vs .516"), ("vm-mcts", "prm-min", ".615 vs .516"),
      ("vm-mcts", "bon-orm", ".615 vs .531 (Fig. 3b: VM-MCTS ahead of every other verifier)")]),
    ("rest-mcts-verifiers", "rest_mcts", "ReST-MCTS* verifiers (GSM8K / MATH500, Mistral-7B: MetaMATH policy): SC 83.9 / "
                                         "35.1 < SC + ORM 86.6 / 38.0, SC + MS 86.3 / 38.3 < SC + ReST-MCTS* value "
                                         "87.5 / 39.0",
     [("orm-vote", "vote", "SC + ORM 86.6 vs SC 83.9 (GSM8K)"), ("prm-vote", "vote", "SC + MS 86.3 vs 83.9"),
      ("prm-vote", "orm-vote", "SC + MS 38.3 vs SC + ORM 38.0 (MATH500; GSM8K the other way: 86.3 vs 86.6)"),
      ("mcts-star-vote", "vote", "SC + value 87.5 vs 83.9"), ("mcts-star-vote", "orm-vote", "87.5 vs 86.6"),
      ("mcts-star-vote", "prm-vote", "87.5 vs 86.3")]),
    ("rest-mcts-search", "rest_mcts", "ReST-MCTS*: MCTS* with its value model beats self-consistency at larger budgets "
                                      "(MATH: about 0.48 at about 40K tokens vs SC 0.425; SC better at low budgets)",
     [("mcts-star", "vote", "0.48 vs 0.425 at ~40K tokens"), ("mcts-star", "prm-min", "0.48 vs PRM-BoN 0.35"),
      ("mcts-star", "bon-orm", "0.48 vs ORM-BoN 0.345")]),
]


def verdict(ci: list[float] | None) -> str:
    if not ci:
        return "no data"
    if ci[0] > 0:
        return "reproduced"
    if ci[1] < 0:
        return "refuted"
    return "inconclusive at this power"


def load_run(run: Path) -> tuple[dict, dict[tuple[str, int], dict]]:
    """``(meta, {(method, budget): {"row", "problems"}})`` of a run's ``compare-search/results.json``,
    each row's per-problem records read from the method file that holds exactly that row."""
    out = run / "compare-search"
    results = json.loads((out / "results.json").read_text())
    by = {}
    for row in results["rows"]:
        for f in sorted((out / "methods").glob(f"{row['method']}-{row['budget_tokens']}-*.json")):
            rec = json.loads(f.read_text())
            if rec["row"] == row:
                by[(row["method"], row["budget_tokens"])] = rec
                break
        else:
            raise FileNotFoundError(f"{out / 'methods'}: no record of {row['method']} at {row['budget_tokens']}")
    return results["meta"], by


def claim_tables(runs: dict[str, Path]) -> dict:
    from searchrl.eval.metrics import paired_difference
    from searchrl.search.registry import label

    report = {"claims": []}
    for cid, key, statement, pairs in CLAIMS:
        if runs.get(key) is None:
            continue
        meta, by = load_run(runs[key])
        entry = {"id": cid, "statement": statement, "run": str(runs[key]), "title": meta["title"],
                 "models": meta["models"], "comparisons": []}
        for winner, loser, paper in pairs:
            for budget in meta["budgets"]:
                a, b = by.get((loser, budget)), by.get((winner, budget))
                if a is None or b is None:
                    continue
                pa = {r["index"]: float(r["correct"]) for r in a["problems"]}
                pb = {r["index"]: float(r["correct"]) for r in b["problems"]}
                common = sorted(pa.keys() & pb.keys())
                d = paired_difference([pa[i] for i in common], [pb[i] for i in common])
                entry["comparisons"].append({
                    "winner": winner, "loser": loser, "paper": paper, "budget": budget,
                    "winner_row": b["row"], "loser_row": a["row"], "diff": d["diff"], "ci": d["ci"],
                    "problems": d["problems"], "verdict": verdict(d["ci"])})
        for winner, loser, _ in pairs:
            got = [c["verdict"] for c in entry["comparisons"] if (c["winner"], c["loser"]) == (winner, loser)]
            entry.setdefault("verdicts", {})[f"{label(winner)} > {label(loser)}"] = (
                got[0] if got and len(set(got)) == 1 else
                "mixed: " + ", ".join(f"{v} at {c['budget']}" for v, c in zip(
                    got, [c for c in entry["comparisons"] if (c["winner"], c["loser"]) == (winner, loser)])))
        report["claims"].append(entry)
    return report


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(report: dict) -> str:
    lines = []
    for c in report["claims"]:
        lines += [f"### {c['statement']}", "", f"Run `{c['run']}`: {c['title']}. Models: "
                  + ", ".join(f"{k} = `{v}`" for k, v in c["models"].items()) + ".", "",
                  "| claim (paper) | budget | winner: acc. % (95% CI), tokens used | other: acc. % (95% CI), tokens used "
                  "| paired diff. (pp, 95% CI) | verdict |", "|---|---:|---|---|---|---|"]
        for x in c["comparisons"]:
            w, lo = x["winner_row"], x["loser_row"]
            lines.append(
                f"| {w['label']} > {lo['label']} ({x['paper']}) | {x['budget']} | {pct(w['accuracy'])} "
                f"({pct(w['ci_low'])}..{pct(w['ci_high'])}), {w['generated_tokens']:.0f} | {pct(lo['accuracy'])} "
                f"({pct(lo['ci_low'])}..{pct(lo['ci_high'])}), {lo['generated_tokens']:.0f} | "
                f"{100 * x['diff']:+.1f} ({100 * x['ci'][0]:+.1f}..{100 * x['ci'][1]:+.1f}) | {x['verdict']} |")
        lines += ["", "Verdicts: " + "; ".join(f"{k}: **{v}**" for k, v in c["verdicts"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vgs", type=Path, help="run directory of experiments/claims/countdown-vgs.yaml")
    ap.add_argument("--rest-rl", type=Path, help="run directory of experiments/claims/countdown-rest-rl.yaml")
    ap.add_argument("--rest-mcts", type=Path, help="run directory of experiments/claims/math-rest-mcts.yaml")
    ap.add_argument("--out", type=Path, help="write the tables as Markdown here")
    args = ap.parse_args(argv)
    runs = {"vgs": args.vgs, "rest_rl": args.rest_rl, "rest_mcts": args.rest_mcts}
    if not any(runs.values()):
        ap.error("give at least one run directory (--vgs, --rest-rl, --rest-mcts)")
    report = claim_tables(runs)
    if args.out:
        args.out.write_text(markdown(report))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
