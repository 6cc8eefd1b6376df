"""ReST-MCTS*'s self-training comparison on the synthetic math task: ReST-EM vs a DPO baseline vs ReST-MCTS*.

Why: ReST-MCTS* (seed 002, Table 2) reports that its self-training beats ReST-EM and Self-Rewarding
over two iterations (Llama-3-8B average: 29.02 against ReST-EM's 26.83 at iteration 2), and that
its value model is the better verifier (GSM8K: SC 83.9, SC + ORM 86.6, SC + value 87.5). This is the
same comparison at CPU scale (``recipes/math/synthetic-tiny.yaml``: a tiny-1m model from scratch on
20,000 gold solutions, 800 SFT steps; each method 2 iterations on the same first 300 ``selftrain``
questions, final answers only):

    C="--config recipes/math/synthetic-tiny.yaml"; R=runs/math-tiny
    E="$C data_dir=$R/data base_model=$R/sft/final"
    searchrl sft $C --run-dir $R && searchrl eval $C --run-dir $R
    searchrl rest-mcts $C --run-dir $R --eval                   # ReST-MCTS*
    searchrl selftrain $C --run-dir $R --name rest-em --eval    # ReST-EM (1 sample a question, keep correct)
    searchrl rest-grpo $C --run-dir $R --eval                   # DPO on answer-correctness pairs
    searchrl eval $E --run-dir runs/math-rest-em-it1 --model $R/rest-em/iter1/sft/final
    searchrl eval $E --run-dir runs/math-dpo-it1 --model $R/rest-dpo/iter1/dpo/final
    searchrl eval $E --run-dir runs/math-rest-mcts-it1 --model $R/rest-mcts/iter1/policy/final
    searchrl compare-search $C --run-dir $R --model $R/rest-mcts/iter2/policy/final \\
        search.value=$R/rest-mcts/iter2/value/final search.mcts_star_value=$R/rest-mcts/iter2/value/final

then ``python experiments/math_rest_mcts.py`` prints, per test split, each policy's greedy accuracy
(the paper's self-training table reads the policy alone), pass@1 and pass@4 of 4 samples, with 95%
bootstrap intervals and paired differences to the SFT base (via ``experiments/rl_valid.py``), then
ReST-MCTS* paired against ReST-EM at iteration 2, what each ReST-MCTS* iteration collected, and the
verifier comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import rl_valid  # noqa: E402

ROWS = (("SFT base", "runs/math-tiny/eval"),
        ("ReST-EM, iteration 1", "runs/math-rest-em-it1/eval"), ("ReST-EM, iteration 2", "runs/math-tiny/rest-em-eval"),
        ("DPO (answer pairs), iteration 1", "runs/math-dpo-it1/eval"),
        ("DPO (answer pairs), iteration 2", "runs/math-tiny/rest-dpo-eval"),
        ("ReST-MCTS*, iteration 1", "runs/math-rest-mcts-it1/eval"),
        ("ReST-MCTS*, iteration 2", "runs/math-tiny/rest-mcts-eval"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="directory the runs/ paths are relative to")
    args = ap.parse_args(argv)
    root = Path(args.root)
    rl_valid.test_tables(root, ROWS)
    print("\nReST-MCTS* against ReST-EM at iteration 2 (the paper's comparison), paired on the same problems")
    rl_valid.test_tables(root, (ROWS[2], ROWS[6]))
    print("\nReST-MCTS* iterations\n")
    for f in sorted((root / "runs/math-tiny/rest-mcts").glob("iter*/done.json")):
        print(f.parent.name, json.loads(f.read_text(encoding="utf-8")))
    cs = root / "runs/math-tiny/compare-search/results.md"
    if cs.exists():
        print("\n" + cs.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
