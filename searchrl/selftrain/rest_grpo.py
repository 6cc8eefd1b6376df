"""ReST-GRPO (ReST-RL, seed 004, Section 3.2 and Algorithm 1), and GRPO and ReST-DPO on the same loop.

Why: GRPO learns nothing from a group whose rewards are all equal (its advantages are 0), and as
a policy trains, more and more groups are like that (ReST-RL Figure 2). ReST-GRPO therefore
spends its steps on prompts that still carry a signal, and adds easier ones built from the
policy's own best solutions. One iteration:

1. **Sample** N solutions per question of ``split`` with the current policy (the paper's N = 30;
   ``samples`` here), graded by the task.
2. **Filter** (Algorithm 1): drop a question whose rewards have standard deviation < sigma_0
   (0.05). Section 3.2.2 also says questions whose rewards all fall below r_0 are filtered;
   Algorithm 1 and the published code keep *every* question with std >= sigma_0 and use r_0 only
   in step 3. We follow Algorithm 1 and the code.
3. **Assemble**: keep the bare question once; if its best reward is >= r_0 (0.9), draw
   ceil(beta |A|) partial states of the best solution with replacement (beta = 0.5; |A| = the
   solution's actions, i.e. lines), state j in 1..|A| with probability proportional to
   alpha^(j - 1) (eq. 3, alpha = 0.95; j = |A| is the whole solution), each the first j lines
   ending in ``"\\n"``. A partial-state prompt's response starts with that prefix: its reward
   grades prefix + completion, its loss covers the completion only
   (:func:`searchrl.train.rl.train_rl`'s ``prefixes``).
4. **Train** GRPO (eq. 4: the ``grpo`` section, per-sequence 1/|o_i| then 1/G) on all of the
   assembled prompts P_Q+ (Algorithm 1 line 19): ceil(|P_Q+| / ``grpo.prompts_per_step``) GRPO
   iterations, one pass (``rest_grpo.grpo_iterations`` sets a fixed number instead), from the
   previous iteration's policy. The iteration's record says how many prompts and training samples
   (prompts x group size) it used, so arms are compared at equal training samples.

With ``method=rest-dpo`` (ReST-RL's ReST-DPO baseline) step 1 is the same, and each question whose
sampled rewards are not all equal gives one preference pair, chosen = its best sample, rejected =
its worst (first of each in sample order on ties), trained with DPO (the ``dpo`` section) from the
previous iteration's policy, which is also the frozen reference.

With ``method=grpo`` steps 1-3 are skipped and every question of ``split`` is a prompt (each once
per iteration when ``grpo.iterations * grpo.prompts_per_step`` equals their number), so GRPO and
ReST-GRPO (and DAPO: ``method=grpo`` with the ``grpo`` section's DAPO settings) are compared at
equal training steps, as the paper's Figure 3a does. The sampling is resumable in shards, the
assembled prompts are written once, and GRPO resumes from its own checkpoints.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..data import read_jsonl, read_jsonl_log, write_json, write_jsonl
from ..rundir import model_fingerprint, problems_digest, shard_key
from ..seeding import stable_seed
from .loop import Context, Iteration, Loop, MethodBase, run_loop

METHODS = ("rest-grpo", "grpo", "rest-dpo")


def partial_states(response: str, n_draws: int, alpha: float, rng: random.Random) -> list[str]:
    """ReST-RL eq. 3: ``n_draws`` prefixes of ``response`` drawn with replacement, prefix j (the first
    j of its |A| lines, j in 1..|A|) with probability proportional to ``alpha ** (j - 1)``; every
    prefix ends in a newline."""
    lines = response.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a response ending in a newline has no empty last action
    if not lines:
        return []
    js = rng.choices(range(1, len(lines) + 1), weights=[alpha ** (j - 1) for j in range(1, len(lines) + 1)],
                     k=n_draws)
    return ["\n".join(lines[:j]) + "\n" for j in js]


def assemble(groups: Sequence[Sequence[dict]], cfg, seed: int) -> tuple[list[dict], dict]:
    """Algorithm 1's filter and partial-state assembly over sampled groups.

    ``groups[i]`` are question ``i``'s sampled records (``response``, ``reward``). Returns the
    prompts ``[{"problem": i, "prefix": str}]`` (the bare prompt has prefix ``""``) and statistics.
    """
    prompts: list[dict] = []
    stds, kept, with_states = [], 0, 0
    for i, group in enumerate(groups):
        rewards = np.array([r["reward"] for r in group], dtype=np.float64)
        std = float(rewards.std()) if len(rewards) else 0.0
        stds.append(std)
        if std < cfg.sigma0:
            continue
        kept += 1
        prompts.append({"problem": i, "prefix": ""})
        best = group[int(rewards.argmax())]
        if rewards.max() >= cfg.r0:
            lines = best["response"].split("\n")
            n_actions = len(lines) - (lines[-1] == "")
            rng = random.Random(stable_seed("rest-grpo-states", seed, i))
            states = partial_states(best["response"], math.ceil(cfg.beta * n_actions), cfg.alpha, rng)
            prompts += [{"problem": i, "prefix": s} for s in states]
            with_states += bool(states)
    stats = {"questions": len(groups), "kept": kept, "with_partial_states": with_states, "prompts": len(prompts),
             "reward_std_mean": float(np.mean(stds)) if stds else None,
             "below_sigma0": float(np.mean([s < cfg.sigma0 for s in stds])) if stds else None,
             "reward_std": [round(s, 4) for s in stds]}
    return prompts, stats


def preference_pairs(groups: Sequence[Sequence[dict]]) -> list[dict]:
    """ReST-DPO's pairs: per question with unequal rewards, ``{"problem", "chosen", "rejected"}`` = its
    best and its worst sampled response (the first of each in sample order)."""
    pairs = []
    for i, group in enumerate(groups):
        rewards = [r["reward"] for r in group]
        if not rewards or max(rewards) == min(rewards):
            continue
        pairs.append({"problem": i, "chosen": group[rewards.index(max(rewards))]["response"],
                      "rejected": group[rewards.index(min(rewards))]["response"]})
    return pairs


class ReSTGRPO(MethodBase):
    """ReST-GRPO, GRPO and ReST-DPO on the self-training skeleton (see the module doc): collect =
    sample, filter and assemble (or every question, for ``method=grpo``); train = GRPO or DPO from the
    previous iteration's policy."""

    paths = ("model",)

    def __init__(self, cfg, grpo_cfg, dpo_cfg, problems: list[dict]):
        self.cfg, self.grpo_cfg, self.dpo_cfg, self.problems = cfg, grpo_cfg, dpo_cfg, problems

    def collect(self, loop: Loop, it: Iteration, state: dict) -> list[dict]:
        from ..engine import SamplingParams
        from ..rollout import rollout

        cfg, grpo_cfg, problems, policy = self.cfg, self.grpo_cfg, self.problems, state["model"]
        prompts_path = it.dir / "prompts.jsonl"
        if cfg.method == "grpo":
            return [{"problem": i, "prefix": ""} for i in range(len(problems))]
        if prompts_path.exists():
            return read_jsonl(prompts_path)
        key = shard_key(policy=model_fingerprint(policy), n=cfg.samples, temperature=grpo_cfg.temperature,
                        max_tokens=grpo_cfg.max_tokens, seed=cfg.seed, iteration=it.number)

        def produce(res, s: int, e: int, advance) -> list[dict]:
            params = [SamplingParams(n=cfg.samples, temperature=grpo_cfg.temperature, max_tokens=grpo_cfg.max_tokens,
                                     seed=stable_seed("rest-grpo", cfg.seed, it.number, j)) for j in range(s, e)]
            outs = rollout(res.generator(policy, grpo_cfg.batch_size), res.task, problems[s:e], params,
                           indices=range(s, e), advance=advance)
            return [{"index": t.index, "sample": t.sample, "response": t.response, "reward": t.reward,
                     "correct": t.correct} for ts in outs for t in ts]

        recs = loop.shards(it, "samples", key, len(problems), cfg.shard_problems, produce, desc="sample",
                           per_item=cfg.samples)
        groups: list[list[dict]] = [[] for _ in problems]
        for r in recs:
            groups[r["index"]].append(r)
        if cfg.method == "rest-dpo":
            prompts = preference_pairs(groups)
            stats = {"questions": len(groups), "pairs": len(prompts)}
        else:
            prompts, stats = assemble(groups, cfg, stable_seed(cfg.seed, it.number))
        write_json(it.dir / "assembly.json", stats)
        write_jsonl(prompts_path, prompts)  # last: the assembled prompts are trusted once here
        return prompts

    def train(self, loop: Loop, it: Iteration, state: dict, prompts: list[dict]) -> dict:
        from ..rollout import chat_prompt

        cfg, policy = self.cfg, state["model"]
        if not prompts:
            return {"model": loop.rel(policy), "skipped": "no question passed the filter"}
        model, tok = loop.ctx.load_model(policy)
        if cfg.method == "rest-dpo":
            from ..train.dpo import train_dpo

            out = it.dir / "dpo"
            pairs = [{"prompt": chat_prompt(tok, loop.task, self.problems[p["problem"]]), "chosen": p["chosen"],
                      "rejected": p["rejected"]} for p in prompts]
            train_dpo(model, None, tok, pairs, replace(self.dpo_cfg, output_dir=str(out),
                                                       seed=stable_seed(self.dpo_cfg.seed, it.number)),
                      progress=loop.progress)
        else:
            from ..train.rl import train_rl

            out, grpo_cfg, make_generator = it.dir / "grpo", self.grpo_cfg, loop.ctx.generator_factory()
            if cfg.method == "rest-grpo":  # all of P_Q+ (Algorithm 1 line 19), or the fixed number asked for
                grpo_cfg = replace(grpo_cfg, iterations=cfg.grpo_iterations
                                   or math.ceil(len(prompts) / grpo_cfg.prompts_per_step))
            train_rl(model, tok, loop.task, [self.problems[p["problem"]] for p in prompts],
                     replace(grpo_cfg, output_dir=str(out), seed=stable_seed(grpo_cfg.seed, it.number)),
                     make_generator=lambda m: make_generator(m, tok, grpo_cfg.batch_size), progress=loop.progress,
                     prefixes=[p["prefix"] for p in prompts] if cfg.method == "rest-grpo" else None)
        info = {"model": loop.rel(out / "final"), "prompts": len(prompts)}
        if cfg.method != "rest-dpo":
            info.update(grpo_iterations=grpo_cfg.iterations, training_prompts=grpo_cfg.iterations
                        * grpo_cfg.prompts_per_step, training_samples=grpo_cfg.iterations * grpo_cfg.prompts_per_step
                        * grpo_cfg.samples_per_prompt)
        return info


def run_rest_grpo(ctx: Context, *, cfg, grpo_cfg, problems: list[dict], method_dir: str | Path, policy: str | Path,
                  dpo_cfg=None) -> Path:
    """Run (or resume) ``cfg.iterations`` iterations of ``cfg.method`` into ``method_dir``; returns the
    last policy.

    ``cfg`` is a :class:`~searchrl.config.RestGRPOConfig`, ``grpo_cfg`` the GRPO settings of each
    iteration's training (its ``temperature`` and ``max_tokens`` also sample step 1), ``dpo_cfg`` the
    DPO settings of ``method=rest-dpo``; ``ctx`` (:class:`~searchrl.selftrain.loop.Context`) brings the
    task, the loaders, what the run depends on and the workers of step 1's sampling. Each iteration
    continues from the previous one's policy.
    """
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    if cfg.method == "rest-dpo" and dpo_cfg is None:
        raise ValueError("method=rest-dpo needs dpo_cfg")
    trainer = ("dpo", dpo_cfg) if cfg.method == "rest-dpo" else ("grpo", grpo_cfg)
    settings = {"rest_grpo": asdict(cfg), trainer[0]: {k: v for k, v in asdict(trainer[1]).items() if k != "output_dir"},
                "policy": model_fingerprint(policy), "problems": problems_digest(problems)}
    loop = Loop(ctx, method_dir, settings, name=f"{cfg.method} ({Path(method_dir).name})")
    info = run_loop(loop, ReSTGRPO(cfg, grpo_cfg, dpo_cfg, problems), cfg.iterations, {"model": Path(policy)})
    return loop.resolve(info["model"])


def reward_std_by_step(method_dir: str | Path) -> list[tuple[int, list[float]]]:
    """The group reward stds GRPO logged, per training step, over all iterations of a run: what
    ReST-RL's Figure 2 plots."""
    out, offset = [], 0
    for it_dir in sorted(Path(method_dir).glob("iter*"), key=lambda p: int(p.name[4:])):
        metrics = it_dir / "grpo" / "metrics.jsonl"
        if not metrics.exists():
            continue
        last = 0
        for line in read_jsonl_log(metrics):
            if "groups/reward_std" in line:
                out.append((offset + line["step"], list(line["groups/reward_std"])))
                last = line["step"]
        offset += last
    return out


__all__ = ["partial_states", "assemble", "preference_pairs", "run_rest_grpo", "reward_std_by_step", "METHODS"]
