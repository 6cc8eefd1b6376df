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

Multi-turn self-repair (``turns > 1``; Guided-ReST's code experiments): each trajectory is an
episode of up to ``turns`` assistant turns answered by the task's feedback, and a guidance round
inserts the reference solution after turn ``s`` instead of splicing a trace
(:func:`searchrl.episodes.run_episodes`); an episode is kept when its last turn is correct (the
recipe keeps ``score > 0`` with a 0/1 score; our code reward is a pass rate, so "correct" is that
rule), and SFT trains every assistant turn of it (:func:`searchrl.episodes.episode_examples`).

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
from collections.abc import Callable
from pathlib import Path

from ..config import SelfTrainConfig
from ..data import InputError, read_json, read_jsonl, resumable_shards, write_json, write_jsonl
from ..rollout import Trajectory, rollout, sft_example
from ..rundir import (Stage, flat_defaults, model_fingerprint, problems_digest, rel, resolve, shard_key,
                      trajectory_settings)
from ..seeding import stable_seed

#: settings that do not change what a self-training run produces
NOT_RESULT = ("shard_problems", "batch_size")


def generate_guided(generator, task, problems: list[dict], start: int, cfg: SelfTrainConfig,
                    iteration: int, advance=None) -> list[Trajectory]:
    """Sample one trajectory per problem, then run the guidance rounds on the failures.

    Returns one trajectory per problem: the last response tried (a guided one starts with its
    prefix, ``prefix_len`` tokens), ``meta["solved_round"]`` the round that solved it (``-1``
    if none; 0 = the plain sample). ``advance(k)`` (progress) counts one unit per problem and
    round, ``1 + guidance_rounds`` per problem in all when no round ends early.
    """
    from ..engine import SamplingParams

    tok = generator.tokenizer
    params = [SamplingParams(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                             seed=stable_seed(cfg.seed, iteration, 0, start + i)) for i in range(len(problems))]
    trajs = [ts[0] for ts in rollout(generator, task, problems, params, indices=range(start, start + len(problems)),
                                     advance=advance)]
    for t in trajs:
        t.meta["solved_round"] = 0 if t.correct else -1
    for rnd in range(1, cfg.guidance_rounds + 1):
        todo, prefixes, cont_params = [], [], []
        for i, (p, t) in enumerate(zip(problems, trajs)):
            if t.correct:
                continue
            rng = random.Random(stable_seed(cfg.seed, iteration, rnd, start + i, "guide"))
            prefix = task.guide(p, t.response, rng=rng)
            n_prefix = len(tok(prefix, add_special_tokens=False)["input_ids"])
            if n_prefix >= cfg.max_tokens:  # the prefix alone fills the budget
                continue
            todo.append(i)
            prefixes.append(prefix)
            cont_params.append(SamplingParams(n=1, temperature=cfg.temperature, max_tokens=cfg.max_tokens - n_prefix,
                                              seed=stable_seed(cfg.seed, iteration, rnd, start + i)))
        if advance is not None:  # one progress unit per problem and round: those not continued are done
            advance(len(problems) - len(todo))
        if not todo:
            break
        outs = rollout(generator, task, [problems[i] for i in todo], cont_params,
                       indices=[start + i for i in todo], prefixes=prefixes, advance=advance)
        for i, ts in zip(todo, outs):
            t = ts[0]
            t.meta["solved_round"] = rnd if t.correct else -1
            trajs[i] = t
    return trajs


def selftrain_stage(method_dir: str | os.PathLike, cfg: SelfTrainConfig, sft_cfg, base_model: str | os.PathLike,
                    depends: dict | None = None, depends_defaults: dict | None = None) -> Stage:
    """The run-directory stage of a self-training run: what its models depend on
    (``depends_defaults``: the values keys of ``depends`` had before they existed, see
    :class:`~searchrl.rundir.Stage`)."""
    sft_settings = trajectory_settings(sft_cfg)
    return Stage(method_dir, {"selftrain": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RESULT},
                              "sft": sft_settings, "base_model": model_fingerprint(base_model), **(depends or {})},
                 defaults={**flat_defaults("selftrain", SelfTrainConfig()),
                           **{f"selftrain.{k}": v for k, v in SelfTrainConfig.RECORDED_DEFAULTS.items()},
                           **flat_defaults("sft", type(sft_cfg)(output_dir="")), **(depends_defaults or {})})


def run_selftrain(task, load_model: Callable, sft_cfg, method_dir: str | os.PathLike, base_model: str | os.PathLike,
                  cfg: SelfTrainConfig, progress: bool = True, make_generator: Callable | None = None,
                  depends: dict | None = None, run_root: str | os.PathLike | None = None,
                  depends_defaults: dict | None = None, workers=None) -> Path:
    """Run the iterations into ``method_dir``; returns the last iteration's model directory.

    ``task`` is any task (guidance rounds need its ``guide``); ``load_model(path) -> (model,
    tokenizer)``; ``make_generator(model, tokenizer, batch_size)`` (default: the default
    ``engine`` settings' generator); ``sft_cfg`` is the
    :class:`~searchrl.train.sft.SFTConfig` of each iteration's fine-tuning. ``depends`` adds
    what the caller knows the run depends on (e.g. the task's data settings) to the stage
    record, besides these settings and the base model's fingerprint (``depends_defaults``: the
    values its keys had before they existed, for records made then). Paths written into
    ``method_dir`` are relative when they lie inside ``run_root`` (default: its parent, the
    run directory), so a copied run directory keeps working. ``workers`` (:mod:`searchrl.fanout`)
    make the generation shards (default: this process, with ``load_model`` and ``make_generator``).
    """
    from ..train.sft import train_sft

    if make_generator is None:
        from ..config import EngineConfig
        from ..engine.factory import make_generator as make

        def make_generator(model, tok, batch_size):
            return make(EngineConfig(), model, tok, batch_size)

    name = getattr(task, "name", task)
    if cfg.turns > 1 and not hasattr(task, "feedback"):
        raise ValueError(f"task {name!r} gives no feedback(); multi-turn episodes (selftrain.turns > 1) need it")
    if cfg.guidance_rounds and not hasattr(task, "reference" if cfg.turns > 1 else "guide"):
        raise ValueError(f"task {name!r} has no {'reference' if cfg.turns > 1 else 'guide'}(); use "
                         f"guidance_rounds=0 (ReST)")
    if workers is None:
        from ..fanout import local_workers

        workers = local_workers(task, load_model, make_generator)
    method_dir = Path(method_dir)
    base_model = Path(base_model)
    root = Path(run_root) if run_root is not None else method_dir.parent

    def rel_(path):
        return rel(method_dir, path, root)

    problems = task.problems(cfg.split)
    if cfg.n_problems > len(problems):
        raise InputError(f"selftrain.n_problems={cfg.n_problems}, but split {cfg.split!r} has only "
                         f"{len(problems)} problems (make more, e.g. task.n_selftrain for Countdown, or lower it)")
    if cfg.n_problems:
        problems = problems[: cfg.n_problems]
    stage = selftrain_stage(method_dir, cfg, sft_cfg, base_model, depends, depends_defaults)
    stage.begin()
    policy = base_model
    for it in range(1, cfg.iterations + 1):
        it_dir = method_dir / f"iter{it}"
        done = it_dir / "done.json"
        if done.exists():
            policy = resolve(method_dir, read_json(done)["model"])
            continue
        sft_dir = it_dir / "sft"
        data_path = it_dir / "data.jsonl"
        if not (it_dir / "gen_stats.json").exists():
            key = shard_key(policy=model_fingerprint(policy), iteration=it, temperature=cfg.temperature,
                            max_tokens=cfg.max_tokens, guidance_rounds=cfg.guidance_rounds, seed=cfg.seed,
                            problems=problems_digest(problems), **({"turns": cfg.turns} if cfg.turns > 1 else {}))
            t0 = time.perf_counter()
            if cfg.turns > 1:
                from ..episodes import run_episodes, units

                def produce(res, s, e, advance):
                    eps = run_episodes(res.generator(policy, cfg.batch_size), res.task, problems[s:e], n=1, turns=cfg.turns, max_tokens=cfg.max_tokens,
                                       temperature=cfg.temperature, guidance_rounds=cfg.guidance_rounds, seed=cfg.seed,
                                       tag=("selftrain", it), indices=range(s, e), advance=advance)
                    return [ep[0].to_record() for ep in eps]

                per_item, unit = units(1, cfg.turns, cfg.guidance_rounds), "turn"
            else:
                def produce(res, s, e, advance):
                    return [t.to_record() for t in generate_guided(res.generator(policy, cfg.batch_size), res.task,
                                                                   problems[s:e], s, cfg, it, advance)]

                per_item = 1 + cfg.guidance_rounds
                unit = "problem" if not cfg.guidance_rounds else "problem-round"
            recs = resumable_shards(
                len(problems), cfg.shard_problems,
                lambda s, e: it_dir / "gen" / key / f"shard-{s:06d}-{e - 1:06d}.jsonl", produce,
                desc=f"{method_dir.name} iter {it} generate", progress=progress, per_item=per_item, unit=unit,
                workers=workers)
            workers.release()  # the sampler's weights and caches, before training
            write_jsonl(data_path, [r for r in recs if r["correct"]])
            write_json(it_dir / "gen_stats.json", generation_stats(recs, cfg.guidance_rounds,
                                                                   time.perf_counter() - t0,
                                                                   rel_(policy)))
        start = base_model if cfg.from_base else policy
        kept = read_jsonl(data_path)
        if kept:
            model, tok = load_model(start)
            if cfg.turns > 1:
                from ..episodes import episode_examples

                examples = [x for r in kept for x in episode_examples(tok, task, problems[r["index"]], r)]
            else:
                examples = [sft_example(Trajectory.from_record(r), tok.eos_token_id) for r in kept]
            train_sft(model, tok, examples, dataclasses.replace(sft_cfg, output_dir=str(sft_dir)), progress=progress)
            policy = sft_dir / "final"
            write_json(done, {"model": rel_(policy), "initialised_from": rel_(start),
                              "examples": len(examples), "kept": len(kept)})
        else:
            # nothing correct to learn from: the policy stays as it was (and the record says so)
            write_json(done, {"model": rel_(policy), "initialised_from": None, "examples": 0,
                              "skipped": "no correct trajectory in this iteration"})
    stage.finish(model=rel_(policy))
    return policy


def generation_stats(recs: list[dict], rounds: int, seconds: float, policy: str) -> dict:
    """How many problems each round solved, and the token lengths of the kept traces (episodes: also
    how many were solved at the first turn and the mean number of turns)."""
    n = len(recs)
    solved_by = [sum(r["meta"]["solved_round"] == k for r in recs) for k in range(rounds + 1)]
    kept = sorted(r["num_tokens"] for r in recs if r["correct"])
    extra = {}
    if recs and "n_turns" in recs[0]:
        extra = {"first_turn_correct": sum(bool(r["first_correct"]) for r in recs),
                 "turns_mean": round(sum(r["n_turns"] for r in recs) / n, 3)}
    return {**extra,
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
