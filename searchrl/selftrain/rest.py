"""ReST and Guided-ReST: generate, (guide,) keep what the verifier accepts, fine-tune, repeat.

ReST / ReST-EM (Gulcehre et al. 2023; Singh et al. 2023; seed 001 eq. "ReST"): one
iteration samples one trajectory per training problem at temperature 1.0, grades it,
keeps the correct ones and fine-tunes on them:

    max_theta  E_{q ~ D, Z ~ pi_theta(.|q)} [ 1{R(Z|q) > tau} log pi_theta(Z | q) ]

Guided-ReST (Moon, Park & Song 2025; seed 001 "Guided reinforced self-training", Steps
1-3; the published ``main_gen.py``) adds guidance rounds to the generation: every failed
trajectory is spliced by the task's ``guide`` (for Countdown: the next step of the
optimal solution replaces one explored node, the trace is cut after it) and the model
continues from the returned prefix, within the response budget (a prefix that already
fills it is skipped); graded again; repeated ``guidance_rounds`` times. With
``guidance_rounds = 0`` this is plain ReST.

As in the published recipe, each iteration fine-tunes from the *base* checkpoint on that
iteration's kept data (``from_base=True``; ``False`` continues from the previous
iteration's model), and generation in iteration ``k`` uses the model of iteration
``k - 1``.

Everything is resumable: generation is written in shards of problems (all guidance
rounds of a shard together), the kept data set is written once, and SFT resumes from its
own checkpoints. Each request is seeded from ``(seed, iteration, round, problem index)``,
so a regenerated shard equals the lost one.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data import read_json, read_jsonl, resumable_shards, write_json, write_jsonl
from ..seeding import stable_seed


@dataclass
class SelfTrainConfig:
    """Settings of one ReST / Guided-ReST run (besides the SFT settings, ``rest_sft``)."""

    iterations: int = field(default=3, metadata={"help": "generate-filter-train iterations (the paper: 3)"})
    guidance_rounds: int = field(default=3, metadata={"help": "Guided-ReST guidance rounds per generation (0 = ReST)"})
    n_problems: int = field(default=2000, metadata={"help": "training problems sampled per iteration (0 = all)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the generation"})
    max_tokens: int = field(default=896, metadata={"help": "response budget incl. any guided prefix (tokens)"})
    from_base: bool = field(default=True, metadata={"help": "each iteration fine-tunes from the base checkpoint"})
    shard_problems: int = field(default=256, metadata={"help": "problems per resumable generation shard"})
    batch_size: int = field(default=64, metadata={"help": "rows decoded together by the sampler"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling and of the guide's random choices"})


def generate_guided(sampler, tokenizer, task, problems: list[dict], start: int, cfg: SelfTrainConfig,
                    iteration: int) -> list[dict]:
    """Sample one trajectory per problem, then run the guidance rounds on the failures.

    Returns one record per problem: the final response, its reward and token count, the
    round that solved it (``-1`` if none; 0 = the plain sample), and the prefix length of
    the last guided continuation.
    """
    from ..engine import SamplingParams
    from ..models.tokenizer import prompt_for

    prompts = [prompt_for(tokenizer, task.prompt(p)) for p in problems]
    params = [SamplingParams(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                             seed=stable_seed(cfg.seed, iteration, 0, start + i)) for i in range(len(problems))]
    outs = sampler.generate(prompts, params)
    recs = []
    for i, (p, o) in enumerate(zip(problems, outs)):
        c = o.outputs[0]
        r = task.reward(p, c.text)
        recs.append({"index": start + i, "response": c.text, "num_tokens": len(c.token_ids), "reward": r,
                     "solved_round": 0 if r > 0 else -1, "prefix_tokens": 0})
    for rnd in range(1, cfg.guidance_rounds + 1):
        todo, cont_prompts, cont_params, prefixes = [], [], [], []
        for i, (p, rec) in enumerate(zip(problems, recs)):
            if rec["reward"] > 0:
                continue
            rng = random.Random(stable_seed(cfg.seed, iteration, rnd, start + i, "guide"))
            prefix = task.guide(p, rec["response"], rng=rng)
            n_prefix = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
            if n_prefix >= cfg.max_tokens:
                continue
            todo.append(i)
            prefixes.append((prefix, n_prefix))
            cont_prompts.append(prompts[i] + prefix)
            cont_params.append(SamplingParams(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens - n_prefix,
                                              seed=stable_seed(cfg.seed, iteration, rnd, start + i)))
        if not todo:
            break
        outs = sampler.generate(cont_prompts, cont_params)
        for i, (prefix, n_prefix), o in zip(todo, prefixes, outs):
            c = o.outputs[0]
            response = prefix + c.text
            r = task.reward(problems[i], response)
            recs[i].update({"response": response, "num_tokens": n_prefix + len(c.token_ids), "reward": r,
                            "prefix_tokens": n_prefix, "solved_round": rnd if r > 0 else -1})
    return recs


def run_selftrain(task, load_model, sft_cfg, method_dir: str | os.PathLike, base_model: str | os.PathLike,
                  cfg: SelfTrainConfig, progress: bool = True) -> Path:
    """Run the iterations into ``method_dir``; returns the last iteration's model directory.

    ``task`` is any task with ``problems("train")``, ``prompt``, ``reward`` and (for
    guidance rounds) ``guide``; ``load_model(path) -> (model, tokenizer)``; ``sft_cfg`` is
    the :class:`~searchrl.train.sft.SFTConfig` of each iteration's fine-tuning.
    """
    from ..engine import Sampler
    from ..models.tokenizer import prompt_for
    from ..train.sft import train_sft

    if cfg.guidance_rounds and not hasattr(task, "guide"):
        raise ValueError(f"task {getattr(task, 'name', task)!r} has no guide(); use guidance_rounds=0 (ReST)")
    method_dir = Path(method_dir)
    problems = task.problems("train")
    if cfg.n_problems:
        problems = problems[: cfg.n_problems]
    policy = Path(base_model)
    for it in range(1, cfg.iterations + 1):
        it_dir = method_dir / f"iter{it}"
        done = it_dir / "done.json"
        if done.exists():
            policy = Path(read_json(done)["model"])
            continue
        sft_dir = it_dir / "sft"
        data_path = it_dir / "data.jsonl"
        if not (it_dir / "gen_stats.json").exists():
            model, tok = load_model(policy)
            sampler = Sampler(model, tok, max_batch_size=cfg.batch_size)
            t0 = time.perf_counter()
            recs = resumable_shards(
                len(problems), cfg.shard_problems,
                lambda s, e: it_dir / "gen" / f"shard-{s:06d}-{e - 1:06d}.jsonl",
                lambda s, e: generate_guided(sampler, tok, task, problems[s:e], s, cfg, it),
                desc=f"{method_dir.name} iter {it} generate", progress=progress)
            kept = [r for r in recs if r["reward"] > 0]
            write_jsonl(data_path, [{"prompt": prompt_for(tok, task.prompt(problems[r["index"]])),
                                     "response": r["response"], "index": r["index"],
                                     "num_tokens": r["num_tokens"], "solved_round": r["solved_round"]}
                                    for r in kept])
            write_json(it_dir / "gen_stats.json", generation_stats(recs, cfg.guidance_rounds,
                                                                   time.perf_counter() - t0, str(policy)))
        examples = [{"prompt": r["prompt"], "response": r["response"]} for r in read_jsonl(data_path)]
        start = base_model if cfg.from_base else policy
        if examples:
            model, tok = load_model(start)
            train_sft(model, tok, examples, dataclasses.replace(sft_cfg, output_dir=str(sft_dir)), progress=progress)
            policy = sft_dir / "final"
            write_json(done, {"model": str(policy), "initialised_from": str(start), "examples": len(examples)})
        else:
            # nothing correct to learn from: the policy stays as it was (and the record says so)
            write_json(done, {"model": str(policy), "initialised_from": None, "examples": 0,
                              "skipped": "no correct trajectory in this iteration"})
    return policy


def generation_stats(recs: list[dict], rounds: int, seconds: float, policy: str) -> dict:
    """How many problems each round solved, and the token lengths of the kept traces."""
    n = len(recs)
    solved_by = [sum(r["solved_round"] == k for r in recs) for k in range(rounds + 1)]
    kept = sorted(r["num_tokens"] for r in recs if r["reward"] > 0)
    return {
        "policy": policy, "problems": n, "kept": len(kept), "kept_fraction": len(kept) / max(n, 1),
        "solved_by_round": solved_by,  # round 0 = plain sampling; k = rescued by guidance round k
        "kept_tokens_mean": sum(kept) / len(kept) if kept else None,
        "kept_tokens_median": kept[len(kept) // 2] if kept else None,
        "seconds": round(seconds, 1),
    }


def read_stats(method_dir: str | os.PathLike) -> list[dict]:
    out = []
    for p in sorted(Path(method_dir).glob("iter*/gen_stats.json"), key=lambda p: int(p.parent.name[4:])):
        out.append(read_json(p))
    return out
