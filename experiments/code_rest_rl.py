"""ReST-RL's comparison on the synthetic code task: ReST-GRPO against GRPO, DAPO and ReST-DPO at equal steps.

Why: ReST-RL (seed 004, Table 1) reports ReST-GRPO .655 > GRPO .590 > ReST-DPO .526 > base .503
(Qwen3-8B), and Figure 2 that ReST-GRPO keeps more groups with a reward spread than GRPO. This is
the same comparison at CPU scale: a tiny-1m model trained from scratch (``searchrl sft --config
recipes/code/synthetic-tiny.yaml --run-dir runs/code-a``, 600 steps, 2 min), then from it, on the
first 160 ``selftrain`` questions, 2 iterations of 20 GRPO steps (8 questions x G = 8 per step, so
GRPO sees each question once per iteration) for every method:

    C="--config recipes/code/synthetic-tiny.yaml data_dir=runs/code-a/data base_model=runs/code-a/sft/final"
    E="eval.n_samples=4 eval.ks=[1,2,4]"
    G="grpo.iterations=20 grpo.prompts_per_step=8 grpo.samples_per_prompt=8 grpo.minibatch_size=64 \\
       grpo.max_tokens=96 grpo.lr=1e-4 grpo.tokens_per_batch=4096 grpo.save_every=5"
    R="rest_grpo.n_problems=160 rest_grpo.samples=8 rest_grpo.iterations=2 rest_grpo.grpo_iterations=20"
    searchrl eval --run-dir runs/code-base $C $E
    searchrl rest-grpo --run-dir runs/code-rg $C $E $G $R --eval
    searchrl eval --run-dir runs/code-rg-it1 $C $E --model runs/code-rg/rest-grpo/iter1/grpo/final
    searchrl rest-grpo --run-dir runs/code-grpo $C $E $G $R rest_grpo.method=grpo --eval
    searchrl rest-grpo --run-dir runs/code-dpo $C $E $G $R rest_grpo.method=rest-dpo dpo.max_steps=20 \\
        dpo.lr=1e-4 dpo.warmup_steps=0 dpo.tokens_per_batch=4096 dpo.max_seq_len=256 --eval
    searchrl rest-grpo --run-dir runs/code-dapo $C $E $G $R rest_grpo.method=grpo grpo.policy_loss=dapo \\
        grpo.clip_high=0.28 grpo.loss_agg=action-mean grpo.dynamic_sampling=true grpo.overlong_buffer=16 --eval

then ``python experiments/code_rest_rl.py`` prints the table (pass@1, pass@4 and greedy on
``test_seen`` and ``test_unseen`` with 95% bootstrap intervals, each paired with the base on the same
problems, via ``experiments/rl_valid.py``) and draws ``runs/code-rg/reward_std_vs_grpo.png``
(Figure 2: the reward std of the groups GRPO trained on, ReST-GRPO against GRPO).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import rl_valid  # noqa: E402

from searchrl.eval.report import plot_reward_std  # noqa: E402
from searchrl.selftrain.rest_grpo import reward_std_by_step  # noqa: E402

ROWS = (("SFT base", "runs/code-base/eval"), ("ReST-GRPO, iteration 1", "runs/code-rg-it1/eval"),
        ("ReST-GRPO, iteration 2", "runs/code-rg/rest-grpo-eval"), ("GRPO", "runs/code-grpo/grpo-eval"),
        ("DAPO", "runs/code-dapo/grpo-eval"), ("ReST-DPO", "runs/code-dpo/rest-dpo-eval"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="directory the runs/ paths are relative to")
    args = ap.parse_args(argv)
    root = Path(args.root)
    rl_valid.test_tables(root, ROWS)
    out = root / "runs/code-rg/reward_std_vs_grpo.png"
    plot_reward_std({"ReST-GRPO": reward_std_by_step(root / "runs/code-rg/rest-grpo"),
                     "GRPO": reward_std_by_step(root / "runs/code-grpo/grpo")}, out, 0.05,
                    "Reward std of the groups GRPO trained on (8 per step, G = 8), synthetic code task")
    print(f"\n{out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
