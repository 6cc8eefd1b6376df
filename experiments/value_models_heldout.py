"""How well do a run's value models tell good states from bad ones on problems they never saw?

For the run directory of ``searchrl compare-search`` (its value models under ``<run>/value/``), this
makes fresh value data on a held-out split (``valid`` by default: never trained on, never searched)
with the library's own makers, then reports for every value model the ROC AUC of its score:

* ``complete``: complete responses, labelled by the verifier (``orm`` data): how well the model
  ranks finished answers (what best-of-N and votes use);
* ``partial``: responses cut at a random token (``vgs`` roll-ins), labelled by whether a roll-out
  sampled from the cut was correct: how well it ranks unfinished states (what tree and beam search
  use). A state whose roll-outs disagree is counted once per roll-out.

0.5 is chance. Prints one JSON object and writes it to ``<run>/value/heldout.json``.

    python experiments/value_models_heldout.py --config recipes/countdown/search-tiny.yaml data_dir=runs/cd-data
"""

from __future__ import annotations

import argparse
import json
import sys


def auc(scores: list[float], labels: list[bool]) -> float | None:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos = sorted(s for s, y in zip(scores, labels) if y)
    neg = sorted(s for s, y in zip(scores, labels) if not y)
    if not pos or not neg:
        return None
    import bisect

    wins = sum(bisect.bisect_left(neg, p) + 0.5 * (bisect.bisect_right(neg, p) - bisect.bisect_left(neg, p))
               for p in pos)
    return wins / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="the recipe of the compare-search run")
    ap.add_argument("--run-dir", help="its run directory (default: the recipe's)")
    ap.add_argument("--split", default="valid", help="held-out split (default: valid)")
    ap.add_argument("--n-problems", type=int, default=100)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    from searchrl.data import write_json
    from searchrl.models.value import is_value_dir
    from searchrl.pipelines.run import Run, config_for_run_dir
    from searchrl.pipelines.value import make_value_data

    cfg = config_for_run_dir(args.run_dir, [args.config] if args.config else [],
                             [*args.overrides, f"value_data.split={args.split}",
                              f"value_data.n_problems={args.n_problems}"])
    run = Run(cfg, progress=True)
    _, complete = make_value_data(run, "orm")
    _, partial = make_value_data(run, "vgs")
    models = sorted(p for p in (run.dir / "value").glob("*/final") if is_value_dir(p))
    out = {"split": args.split, "problems": args.n_problems, "complete_responses": len(complete),
           "complete_correct": sum(r["target"] == 1.0 for r in complete), "partial_states": len(partial),
           "partial_correct": sum(r["label"] == 1 for r in partial), "auc": {}}
    for path in models:
        vm = run.load_value(path)
        s_complete = vm.score([r["prompt_ids"] for r in complete], [r["state_ids"] for r in complete])
        s_partial = vm.score([r["prompt_ids"] for r in partial], [r["state_ids"] for r in partial])
        out["auc"][path.parent.name] = {
            "complete": auc(s_complete, [r["target"] == 1.0 for r in complete]),
            "partial": auc(s_partial, [r["label"] == 1 for r in partial])}
    write_json(run.dir / "value" / "heldout.json", out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
