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
from pathlib import Path

from ..config import SelfTrainConfig
from ..data import InputError, read_jsonl, write_json, write_jsonl
from ..rollout import Trajectory, rollout, sft_example
from ..rundir import flat_defaults, model_fingerprint, problems_digest, shard_key, trajectory_settings
from ..seeding import stable_seed
from .loop import Context, Iteration, Loop, MethodBase, read_records, run_loop

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


def selftrain_settings(cfg: SelfTrainConfig, sft_cfg, base_model: str | os.PathLike) -> tuple[dict, dict]:
    """What a self-training run's models depend on (besides the caller's ``Context.depends``), and the
    values its keys had before they were recorded (see :class:`~searchrl.rundir.Stage`)."""
    settings = {"selftrain": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RESULT},
                "sft": trajectory_settings(sft_cfg), "base_model": model_fingerprint(base_model)}
    defaults = {**flat_defaults("selftrain", SelfTrainConfig()),
                **{f"selftrain.{k}": v for k, v in SelfTrainConfig.RECORDED_DEFAULTS.items()},
                **flat_defaults("sft", type(sft_cfg)(output_dir=""))}
    return settings, defaults


def selftrain_loop(ctx: Context, *, cfg: SelfTrainConfig, sft_cfg, method_dir: str | os.PathLike,
                   base_model: str | os.PathLike, run_root: str | os.PathLike | None = None) -> Loop:
    """The :class:`~searchrl.selftrain.loop.Loop` of a self-training run (its stage is what a command
    checks before it starts)."""
    settings, defaults = selftrain_settings(cfg, sft_cfg, base_model)
    return Loop(ctx, method_dir, settings, name=Path(method_dir).name, defaults=defaults, run_root=run_root)


class ReST(MethodBase):
    """ReST / Guided-ReST on the self-training skeleton (see the module doc): collect = generate (with
    guidance rounds, or multi-turn episodes) and keep the correct; train = SFT on what was kept."""

    paths = ("model",)

    def __init__(self, cfg: SelfTrainConfig, sft_cfg, problems: list[dict], base_model: Path):
        self.cfg, self.sft_cfg, self.problems, self.base = cfg, sft_cfg, problems, base_model

    def collect(self, loop: Loop, it: Iteration, state: dict) -> Path:
        cfg, problems, policy = self.cfg, self.problems, state["model"]
        data_path = it.dir / "data.jsonl"
        if (it.dir / "gen_stats.json").exists():  # written after data.jsonl: the generation is done
            return data_path
        key = shard_key(policy=model_fingerprint(policy), iteration=it.number, temperature=cfg.temperature,
                        max_tokens=cfg.max_tokens, guidance_rounds=cfg.guidance_rounds, seed=cfg.seed,
                        problems=problems_digest(problems), **({"turns": cfg.turns} if cfg.turns > 1 else {}))
        t0 = time.perf_counter()
        if cfg.turns > 1:
            from ..episodes import run_episodes, units

            def produce(res, s, e, advance):
                eps = run_episodes(res.generator(policy, cfg.batch_size), res.task, problems[s:e], n=1,
                                   turns=cfg.turns, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                                   guidance_rounds=cfg.guidance_rounds, seed=cfg.seed, tag=("selftrain", it.number),
                                   indices=range(s, e), advance=advance)
                return [ep[0].to_record() for ep in eps]

            per_item, unit = units(1, cfg.turns, cfg.guidance_rounds), "turn"
        else:
            def produce(res, s, e, advance):
                return [t.to_record() for t in generate_guided(res.generator(policy, cfg.batch_size), res.task,
                                                               problems[s:e], s, cfg, it.number, advance)]

            per_item = 1 + cfg.guidance_rounds
            unit = "problem" if not cfg.guidance_rounds else "problem-round"
        recs = loop.shards(it, "gen", key, len(problems), cfg.shard_problems, produce, desc="generate",
                           per_item=per_item, unit=unit, prefix="shard-")
        write_jsonl(data_path, [r for r in recs if r["correct"]])
        write_json(it.dir / "gen_stats.json", generation_stats(recs, cfg.guidance_rounds, time.perf_counter() - t0,
                                                               loop.rel(policy)))
        return data_path

    def train(self, loop: Loop, it: Iteration, state: dict, data: Path) -> dict:
        from ..train.sft import train_sft

        policy = state["model"]
        start = self.base if self.cfg.from_base else policy
        kept = read_jsonl(data)
        if not kept:  # nothing correct to learn from: the policy stays as it was (and the record says so)
            return {"model": loop.rel(policy), "initialised_from": None, "examples": 0,
                    "skipped": "no correct trajectory in this iteration"}
        model, tok = loop.ctx.load_model(start)
        if self.cfg.turns > 1:
            from ..episodes import episode_examples

            examples = [x for r in kept for x in episode_examples(tok, loop.task, self.problems[r["index"]], r)]
        else:
            examples = [sft_example(Trajectory.from_record(r), tok.eos_token_id) for r in kept]
        sft_dir = it.dir / "sft"
        train_sft(model, tok, examples, dataclasses.replace(self.sft_cfg, output_dir=str(sft_dir)),
                  progress=loop.progress)
        return {"model": loop.rel(sft_dir / "final"), "initialised_from": loop.rel(start),
                "examples": len(examples), "kept": len(kept)}


def run_selftrain(ctx: Context, *, cfg: SelfTrainConfig, sft_cfg, method_dir: str | os.PathLike,
                  base_model: str | os.PathLike, run_root: str | os.PathLike | None = None) -> Path:
    """Run (or resume) ``cfg.iterations`` ReST / Guided-ReST iterations into ``method_dir`` from
    ``base_model``; returns the last iteration's model directory.

    ``ctx`` (:class:`~searchrl.selftrain.loop.Context`) brings the task (guidance rounds need its
    ``guide``, episodes its ``feedback`` and ``reference``), the loaders, what the run depends on and
    the workers; ``sft_cfg`` is each iteration's :class:`~searchrl.train.config.SFTConfig`. Paths
    written into ``method_dir`` are relative when they lie inside ``run_root`` (default: its parent).
    """
    task, name = ctx.task, getattr(ctx.task, "name", ctx.task)
    if cfg.turns > 1 and not hasattr(task, "feedback"):
        raise ValueError(f"task {name!r} gives no feedback(); multi-turn episodes (selftrain.turns > 1) need it")
    if cfg.guidance_rounds and not hasattr(task, "reference" if cfg.turns > 1 else "guide"):
        raise ValueError(f"task {name!r} has no {'reference' if cfg.turns > 1 else 'guide'}(); use "
                         f"guidance_rounds=0 (ReST)")
    problems = task.problems(cfg.split)
    if cfg.n_problems > len(problems):
        raise InputError(f"selftrain.n_problems={cfg.n_problems}, but split {cfg.split!r} has only "
                         f"{len(problems)} problems (make more, e.g. task.n_selftrain for Countdown, or lower it)")
    if cfg.n_problems:
        problems = problems[: cfg.n_problems]
    base_model = Path(base_model)
    loop = selftrain_loop(ctx, cfg=cfg, sft_cfg=sft_cfg, method_dir=method_dir, base_model=base_model,
                          run_root=run_root)
    info = run_loop(loop, ReST(cfg, sft_cfg, problems, base_model), cfg.iterations, {"model": base_model})
    return loop.resolve(info["model"])


def generation_stats(recs: list[dict], rounds: int, seconds: float, policy: str) -> dict:
    """How many problems each round solved, the token lengths of the kept traces, and the response tokens
    of every record (kept or not: the generation compute ReST-EM is compared with ReST-MCTS* at; a guided
    response's prefix counts too) (episodes: also how many were solved at the first turn and the mean
    number of turns)."""
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
        "response_tokens": sum(r["num_tokens"] for r in recs),
        "seconds": round(seconds, 1),
    }


def read_stats(method_dir: str | os.PathLike) -> list[dict]:
    """Each finished generation's statistics (``iterN/gen_stats.json``), in iteration order."""
    return read_records(method_dir, "gen_stats.json")
