"""GRPO training speed: searchrl.train.rl.train_rl vs TRL's GRPOTrainer, side by side in one run.

Both sides train a fresh copy of the same policy (by default the shipped Stream-of-Search
Countdown model ``builtin:sos-tiny-base``, 1.05M parameters, fp32) with GRPO on the same
Countdown problems, one after the other in this process. "Same workload" means, per step:

* the same ``--prompts`` (8) prompts per step, each sampled ``--group`` (8) times at
  ``--temperature`` (1.0, top-p 1, no top-k) with a ``--max-tokens`` (768, the demo's) response
  budget, decoded as one batch of prompts x group rows (our sampler: ``batch_size``; TRL: its
  generation batch, one ``model.generate`` call);
* the same prompt text (``searchrl.rollout.chat_prompt``; both tokenize it to the same ids);
  the run uses the first ``prompts x (warmup + steps)`` problems of ``--split`` of the task's
  data, each exactly once, but each side orders them its own way (our seeded prompt stream,
  TRL's shuffled sampler);
* the same reward: the Countdown grader (ours calls ``task.score``; TRL calls
  ``searchrl.tasks.reward.trl_reward(task)``, which calls ``task.score``);
* GRPO advantages (group mean / std), clipped ratio 0.2, per-response token mean (our
  ``loss_agg="seq-mean-action-mean"``, TRL ``loss_type="grpo"``), no dual clip, no KL and no
  reference model (``kl_coef=0`` / ``beta=0``), no entropy bonus, constant lr ``--lr`` (1e-6),
  grad clip 1.0, fp32, no gradient checkpointing;
* exactly ONE optimizer step per rollout batch, one pass over it (our ``minibatch_size`` =
  ``ppo_epochs`` x responses; TRL ``per_device_train_batch_size`` = prompts x group,
  ``gradient_accumulation_steps`` = ``steps_per_generation`` = ``num_iterations`` = 1, so its
  generation batch is one optimizer step).

Old log-probabilities: ours are the sampler's (no recompute, ``recompute_old_logprobs=False``);
TRL, with generation and optimization aligned as here, computes none either (its ratio is
``exp(logp - logp.detach())``). So neither side spends a forward pass on them.

Samples differ (different random streams), so responses differ in length: ``samples_s``
counts responses, ``tokens_s`` generated response tokens (EOS included on both sides). The first
``--warmup`` (1) step of each side is left out (first-call overheads, allocator, kernels), and
each side's time is the sum of its remaining steps:

* ours: ``time/generate_s`` (sampling + grading) + ``time/prepare_s`` (advantages) +
  ``time/train_s`` (forward/backward/optimizer step, weight sync to the sampler) from
  ``train_rl``'s per-iteration logs;
* TRL: ``on_step_begin`` to ``on_step_end`` of each trainer step, split into
  ``model.generate`` (timed by wrapping the policy's ``generate``), the rest of
  ``_generate_and_score_completions`` (decode, reward, advantages: ``prepare``) and the rest of
  the step (``train``: loss forward/backward, optimizer step).

The last line of output is one JSON object (``ratio`` = ours / TRL samples/s; > 1: ours faster).

    python benchmarks/rl.py                  # 1+4 steps per side, 64 x 768-token responses each
    python benchmarks/rl.py --quick          # smoke test: 1+1 steps, 2 prompts x 2, 64 tokens
    python benchmarks/rl.py --only ours      # one side only (no ratio)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_task(args, needed: int, tmp: str):
    """The Countdown task and its first ``needed`` problems of ``args.split``."""
    from searchrl.tasks.countdown import CountdownConfig, CountdownTask

    data_dir = Path(args.data_dir) if args.data_dir else None
    if data_dir is not None and (data_dir / "stats.json").exists():
        task = CountdownTask(CountdownConfig(), data_dir)
        source = str(data_dir)
    else:  # the demo's testbed (numbers 1..19, targets 10..59), as small as the run needs
        cfg = CountdownConfig(n_train=10, n_selftrain=needed, n_valid=needed, n_valid_unseen=0, n_test=needed,
                              min_target=10, max_target=59, max_number=19, workers=1)
        task = CountdownTask(cfg, Path(tmp) / "data")
        task.prepare(progress=False)
        source = "generated"
    problems = task.problems(args.split)
    if len(problems) < needed:
        raise SystemExit(f"{args.split} of {source} has {len(problems)} problems; the run needs {needed}")
    return task, problems[:needed], source


def run_ours(args, task, problems, out_dir: str) -> dict:
    from searchrl.models import load_policy, resolve_model_path
    from searchrl.train.config import RLConfig
    from searchrl.train.rl import train_rl

    policy, tok = load_policy(str(resolve_model_path(args.model)))
    n = args.prompts * args.group
    cfg = RLConfig(output_dir=out_dir, adv_estimator="grpo", policy_loss="ppo_clip", loss_agg="seq-mean-action-mean",
                   dual_clip=None, samples_per_prompt=args.group, prompts_per_step=args.prompts,
                   iterations=args.warmup + args.steps, max_tokens=args.max_tokens, temperature=args.temperature,
                   recompute_old_logprobs=args.temperature != 1.0, batch_size=n, minibatch_size=n, ppo_epochs=1,
                   lr=args.lr, warmup_steps=0, min_lr_ratio=1.0, grad_clip=1.0, kl_coef=0.0, entropy_coef=0.0,
                   mixed_precision="no", save_every=0, log_every=1, seed=args.seed)
    logs: list[dict] = []
    t0 = time.perf_counter()
    train_rl(policy, tok, task, problems, cfg, callback=lambda it, lg: logs.append(dict(lg)), progress=False)
    wall = time.perf_counter() - t0
    keep = logs[args.warmup:]
    gen, prep, train = (sum(lg[k] for lg in keep) for k in ("time/generate_s", "time/prepare_s", "time/train_s"))
    secs = gen + prep + train
    samples = len(keep) * n
    tokens = sum(lg["response/length_mean"] * n for lg in keep)
    return {"seconds": secs, "samples": samples, "tokens": tokens, "generate_s": gen, "prepare_s": prep,
            "train_s": train, "step_s": [round(lg["time/generate_s"] + lg["time/prepare_s"] + lg["time/train_s"], 3)
                                          for lg in keep],
            "reward": float(np.mean([lg["reward/task_mean"] for lg in keep])),
            "truncated": float(np.mean([lg["response/truncated"] for lg in keep])),
            "wall_s": wall, "warmup_s": sum(lg["time/generate_s"] + lg["time/prepare_s"] + lg["time/train_s"]
                                            for lg in logs[:args.warmup])}


def run_trl(args, task, problems, out_dir: str) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from searchrl.models import load_policy, resolve_model_path
    from searchrl.rollout import chat_prompt
    from searchrl.tasks.reward import trl_reward

    model, tok = load_policy(str(resolve_model_path(args.model)))
    dataset = Dataset.from_list([{"prompt": chat_prompt(tok, task, p), **p} for p in problems])
    n = args.prompts * args.group
    state = {"step": -1}  # the trainer step being timed (0-based)
    per_step: dict[int, dict] = {}

    def bucket() -> dict:
        return per_step.setdefault(state["step"], {"generate_s": 0.0, "score_s": 0.0, "step_s": 0.0,
                                                   "lengths": [], "rewards": [], "truncated": 0})

    generate = model.generate

    def timed_generate(*a, **kw):  # TRL's non-vLLM path calls the (unwrapped) policy's generate once per batch
        t = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            bucket()["generate_s"] += time.perf_counter() - t

    model.generate = timed_generate

    base = trl_reward(task)

    def reward(prompts, completions, completion_ids=None, **kw):
        out = base(prompts, completions, completion_ids=completion_ids, **kw)
        b = bucket()
        b["lengths"] += [len(c) for c in completion_ids]
        b["rewards"] += out
        b["truncated"] += sum(len(c) >= args.max_tokens and (not c or c[-1] != tok.eos_token_id)
                              for c in completion_ids)
        return out

    reward.__name__ = base.__name__

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            state["step"] += 1
            state["t"] = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            bucket()["step_s"] += time.perf_counter() - state["t"]

    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    no_ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    gcfg = GRPOConfig(
        output_dir=out_dir, max_steps=args.warmup + args.steps, per_device_train_batch_size=n,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, num_generations=args.group,
        max_completion_length=args.max_tokens, temperature=args.temperature, top_p=1.0, top_k=0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        beta=0.0, epsilon=0.2, loss_type="grpo", scale_rewards="group",
        report_to=[], use_cpu=True, bf16=False, save_strategy="no", logging_steps=1, disable_tqdm=True,
        seed=args.seed, dataloader_num_workers=0, **{no_ckpt: False})
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=gcfg, train_dataset=dataset, processing_class=tok,
                          callbacks=[StepTimer()])
    trainer.remove_callback(PrinterCallback)  # its per-step log dicts (logging_steps=1 feeds step_time) are noise here
    gas = trainer._generate_and_score_completions

    def timed_gas(*a, **kw):  # generation + decoding + reward + advantages
        t = time.perf_counter()
        try:
            return gas(*a, **kw)
        finally:
            bucket()["score_s"] += time.perf_counter() - t

    trainer._generate_and_score_completions = timed_gas
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    steps = [per_step[i] for i in sorted(per_step)]
    assert len(steps) == args.warmup + args.steps and all(s["generate_s"] > 0 for s in steps), per_step.keys()
    assert all(len(s["lengths"]) == n for s in steps), [len(s["lengths"]) for s in steps]
    keep = steps[args.warmup:]
    secs = sum(s["step_s"] for s in keep)
    gen = sum(s["generate_s"] for s in keep)
    prep = sum(s["score_s"] for s in keep) - gen
    return {"seconds": secs, "samples": sum(len(s["lengths"]) for s in keep),
            "tokens": sum(sum(s["lengths"]) for s in keep), "generate_s": gen, "prepare_s": prep,
            "train_s": secs - gen - prep, "step_s": [round(s["step_s"], 3) for s in keep],
            "reward": float(np.mean([r for s in keep for r in s["rewards"]])),
            "truncated": sum(s["truncated"] for s in keep) / max(sum(len(s["lengths"]) for s in keep), 1),
            "wall_s": wall, "warmup_s": sum(s["step_s"] for s in steps[:args.warmup])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:sos-tiny-base",
                    help="HF model directory, or builtin:NAME for a checkpoint shipped with searchrl")
    ap.add_argument("--data-dir", default="runs/demo/data",
                    help="a prepared Countdown data directory; if it has no stats.json, a small one is generated "
                         "in a temporary directory (the demo's settings)")
    ap.add_argument("--split", default="selftrain", help="split the prompts come from")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="responses per prompt (GRPO group size)")
    ap.add_argument("--max-tokens", type=int, default=768, help="response budget (tokens)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (rollout batch + one optimizer step) per side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them, per side")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (0: torch's default). Default 1: on a shared 2-core box, "
                         "2 OpenMP threads stall whenever another process holds a core")
    ap.add_argument("--only", choices=["ours", "trl"], default=None, help="run one side only")
    ap.add_argument("--trl-first", action="store_true", help="run TRL before ours (default: ours first)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: --steps 1 --prompts 2 --group 2 --max-tokens 64")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.prompts, args.group, args.max_tokens = 1, 2, 2, 64
    if args.steps < 1 or args.warmup < 0 or args.prompts < 1 or args.group < 2:
        ap.error("need --steps >= 1, --warmup >= 0, --prompts >= 1, --group >= 2")

    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("searchrl").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    sides = [args.only] if args.only else (["trl", "ours"] if args.trl_first else ["ours", "trl"])
    needed = args.prompts * (args.warmup + args.steps)
    res = {}
    with tempfile.TemporaryDirectory(prefix="searchrl-bench-rl-") as tmp:
        task, problems, source = build_task(args, needed, tmp)
        from searchrl.engine import kernels

        print(f"model {args.model}; {len(problems)} {args.split} problems ({source}); {args.prompts} prompts x "
              f"{args.group} per step, max_tokens {args.max_tokens}, {args.warmup}+{args.steps} steps per side; "
              f"torch threads {torch.get_num_threads()}, decode attention "
              f"{'kernel' if kernels.available() else 'sdpa'}; load avg {os.getloadavg()[0]:.2f}", flush=True)
        for side in sides:
            fn = run_ours if side == "ours" else run_trl
            r = fn(args, task, problems, os.path.join(tmp, side))
            res[side] = r
            print(f"{side:4s} | {r['samples'] / r['seconds']:6.2f} samples/s, {r['tokens'] / r['seconds']:8,.0f} "
                  f"tokens/s | {r['seconds']:7.1f} s over {args.steps} steps: generate {r['generate_s']:.1f} s, "
                  f"prepare {r['prepare_s']:.1f} s, train {r['train_s']:.1f} s | mean length "
                  f"{r['tokens'] / r['samples']:.1f}, truncated {r['truncated']:.1%}, reward {r['reward']:.3f} | "
                  f"warm-up step {r['warmup_s']:.1f} s, whole call {r['wall_s']:.1f} s; "
                  f"load avg {os.getloadavg()[0]:.2f}", flush=True)

    out = {}
    for side, r in res.items():
        out.update({f"{side}_samples_s": round(r["samples"] / r["seconds"], 3),
                    f"{side}_tokens_s": round(r["tokens"] / r["seconds"], 1)})
    if len(res) == 2:
        out["ratio"] = round(out["ours_samples_s"] / out["trl_samples_s"], 3)
        out["ratio_tokens"] = round(out["ours_tokens_s"] / out["trl_tokens_s"], 3)
    for side, r in res.items():
        out.update({f"{side}_mean_length": round(r["tokens"] / r["samples"], 1),
                    f"{side}_truncated": round(r["truncated"], 4), f"{side}_reward": round(r["reward"], 4),
                    f"{side}_seconds": round(r["seconds"], 2),
                    f"{side}_generate_s": round(r["generate_s"], 2), f"{side}_prepare_s": round(r["prepare_s"], 2),
                    f"{side}_train_s": round(r["train_s"], 2),
                    f"{side}_generate_frac": round(r["generate_s"] / r["seconds"], 3),
                    f"{side}_step_s": r["step_s"], f"{side}_warmup_s": round(r["warmup_s"], 2),
                    f"{side}_wall_s": round(r["wall_s"], 2)})
    out.update(model=args.model, split=args.split, prompts=args.prompts, group=args.group,
               max_tokens=args.max_tokens, temperature=args.temperature, steps=args.steps, warmup=args.warmup,
               lr=args.lr, order=sides, threads=torch.get_num_threads(), load_avg=round(os.getloadavg()[0], 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
