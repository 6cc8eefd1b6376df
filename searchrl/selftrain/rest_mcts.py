"""ReST-MCTS*'s self-training loop: a policy and a process value model improved from final answers alone.

ReST-MCTS* (Zhang et al. 2024; seed 002, Section 3 "Self-training" and Algorithm 1 of the
paper's appendix) trains both models from questions that have only a final answer:

0. **V0** (the paper's D_V0): an initial process value model trained on questions paired with a
   correct step-by-step solution; here the ``train`` split's gold solutions, each with one
   corrupted step per position, targets inferred by the same rule as the searches' (see
   :func:`searchrl.pipelines.value.gold_value_records`). Without it the first MCTS* would have no
   value guidance. ``rest_mcts.value_init`` starts from an existing model instead.
1. Per iteration ``k = 1..K`` (2 in the paper):

   * **search**: MCTS* in data-collection mode (every iteration runs, the end gate never stops it;
     :func:`searchrl.search.mcts_star.collect`) on the self-training questions, guided by the
     policy ``pi_{k-1}`` and the value model ``V_{k-1}``;
   * **policy data**: the correct end states (by final answer), highest value first, at most
     ``per_problem`` per question and, optionally, only those with value >= ``min_value`` (the
     paper's filter on the value model's score); the policy is fine-tuned on them, **continuing from
     the previous iteration's model** (unlike Guided-ReST, which restarts from the base);
   * **value data**: the per-step values inferred from each tree (eq. 2 with the code's signs,
     :func:`searchrl.search.mcts_star.infer_value_targets`); the value model is **retrained**: from
     the base checkpoint (the value models' common initialisation here) on D_V0 and every iteration's
     inferred targets so far.

Resumable as every loop here: each iteration's searches are written in shards of questions, its
policy and value models train on the core's checkpoints, and ``iterK/done.json`` (written last)
names the two models. The stage record names the base checkpoint, the questions and every setting,
so a rerun with other ones into the same directory is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ..data import read_json, read_jsonl, resumable_shards, write_json, write_jsonl
from ..rundir import Stage, model_fingerprint, problems_digest, rel, resolve, shard_key
from ..seeding import stable_seed


def policy_examples(collected: list[dict], per_problem: int, min_value: float, eos: int | None) -> list[dict]:
    """SFT examples from collected trees: per question its correct end states with value >= ``min_value``,
    highest value first (ties: the order found), at most ``per_problem``, duplicates once; EOS appended."""
    out = []
    for c in collected:
        seen, kept = set(), 0
        for end in sorted(c["correct"], key=lambda e: -e["value"]):
            key = tuple(end["ids"])
            if end["value"] < min_value or key in seen or kept >= per_problem:
                continue
            seen.add(key)
            kept += 1
            ids = list(end["ids"])
            if eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            out.append({"prompt_ids": list(c["prompt_ids"]), "response_ids": ids})
    return out


def run_rest_mcts(task, problems: list[dict], load_model: Callable, make_generator: Callable, load_value: Callable,
                  cfg, search_cfg, sft_cfg, value_cfg, method_dir: str | Path, base: str | Path,
                  v0_records: Callable[[], list[dict]], depends: dict | None = None, progress: bool = True,
                  workers=None, depends_defaults: dict | None = None) -> Path:
    """Run ReST-MCTS* (see the module doc) into ``method_dir``; returns the last iteration's directory
    (``policy/final`` and ``value/final`` in it, or as ``done.json`` names them).

    ``cfg``: :class:`~searchrl.config.RestMCTSConfig`; ``search_cfg``: the MCTS* settings (its
    ``iterations`` and ``max_tokens`` are ``cfg``'s); ``sft_cfg`` / ``value_cfg``: each iteration's
    policy and value training; ``load_model(path) -> (model, tokenizer)``; ``make_generator(model,
    tokenizer, batch_size)``; ``load_value(path)``: a value model as a scorer; ``v0_records()``: D_V0
    (called only when V0 is trained here); ``workers`` (:mod:`searchrl.fanout`) make the MCTS* shards
    (default: this process, with these loaders). ``depends`` adds what the caller knows the run depends on
    (the task's data and scoring settings) to the stage record, ``depends_defaults`` the values its keys had
    before they were recorded.
    """
    from ..models.value import ValueModel
    from ..search.mcts_star import collect
    from ..train.sft import train_sft
    from ..train.value import train_value

    if workers is None:
        from ..fanout import local_workers

        workers = local_workers(task, load_model, make_generator, load_value)
    method_dir = Path(method_dir)
    tree_cfg = dataclasses.replace(search_cfg, iterations=cfg.search_iterations, max_tokens=cfg.max_tokens,
                                   seed=cfg.seed)
    settings = {"rest_mcts": dataclasses.asdict(cfg), "search": dataclasses.asdict(tree_cfg),
                "sft": {k: v for k, v in dataclasses.asdict(sft_cfg).items() if k != "output_dir"},
                "value": {k: v for k, v in dataclasses.asdict(value_cfg).items() if k != "output_dir"},
                "base": model_fingerprint(base), "problems": problems_digest(problems), **(depends or {})}
    stage = Stage(method_dir, settings, name=f"rest-mcts ({method_dir.name})", defaults=depends_defaults)
    stage.check()
    if stage.done:
        return resolve(method_dir, stage.record()["last"])
    stage.begin()

    def train_value_model(records: list[dict], out: Path) -> Path:
        model, tok = load_model(base)
        vm = ValueModel.from_policy(model, "scalar", value_cfg.dropout,
                                    seed=stable_seed("value-head", "scalar", value_cfg.seed))
        train_value(vm, tok, records, dataclasses.replace(value_cfg, kind="scalar", output_dir=str(out)),
                    progress=progress)
        return out / "final"

    v0_path = method_dir / "v0-data.jsonl"
    if cfg.value_init:
        value = Path(cfg.value_init)
        value_data = []
    else:
        if not v0_path.exists():
            write_jsonl(v0_path, v0_records())
        value_data = read_jsonl(v0_path)
        value = train_value_model(value_data, method_dir / "v0")
    policy, last = Path(base), method_dir
    for it in range(1, cfg.iterations + 1):
        it_dir = method_dir / f"iter{it}"
        done = it_dir / "done.json"
        if done.exists():
            rec = read_json(done)
            policy, value, last = resolve(method_dir, rec["policy"]), resolve(method_dir, rec["value"]), it_dir
            value_data += read_jsonl(it_dir / "value-data.jsonl")
            continue
        key = shard_key(policy=model_fingerprint(policy), value=model_fingerprint(value), iteration=it,
                        search=dataclasses.asdict(tree_cfg))

        def produce(res, s: int, e: int, advance) -> list[dict]:
            got = collect(res.generator(policy, cfg.batch_size), res.scorer(value), res.task, problems[s:e], tree_cfg,
                          indices=range(s, e))
            advance(e - s)
            return got

        collected = resumable_shards(len(problems), cfg.shard_problems,
                                     lambda s, e: it_dir / "search" / key / f"{s:06d}-{e - 1:06d}.jsonl", produce,
                                     desc=f"{method_dir.name} iter {it} MCTS*", progress=progress, workers=workers)
        workers.release()  # the policy's and value model's weights, before training
        model = tok = None
        if any(c["correct"] for c in collected):  # the model SFT starts from (its tokenizer gives the EOS)
            model, tok = load_model(Path(base) if cfg.from_base else policy)
        examples = policy_examples(collected, cfg.per_problem, cfg.min_value, tok.eos_token_id if tok else None)
        targets = [t for c in collected for t in c["targets"]]
        stats = {"questions": len(problems), "solved": sum(bool(c["correct"]) for c in collected),
                 "correct_ends": sum(len(c["correct"]) for c in collected),
                 "ends": sum(c["ends"] for c in collected), "policy_examples": len(examples),
                 "value_records": len(targets)}
        write_json(it_dir / "stats.json", stats)
        if examples:
            train_sft(model, tok, examples, dataclasses.replace(sft_cfg, output_dir=str(it_dir / "policy")),
                      progress=progress)
            policy = it_dir / "policy" / "final"
        write_jsonl(it_dir / "value-data.jsonl", targets)
        value_data += targets
        value = train_value_model(value_data, it_dir / "value") if targets else value
        write_json(done, {"policy": rel(method_dir, policy), "value": rel(method_dir, value), **stats})
        last = it_dir
    stage.finish(last=rel(method_dir, last), policy=rel(method_dir, policy), value=rel(method_dir, value))
    return last


def read_iterations(method_dir: str | Path) -> list[dict]:
    """Each finished iteration's ``done.json`` (models and data counts), in order."""
    out = []
    for p in sorted(Path(method_dir).glob("iter*/done.json"), key=lambda p: int(p.parent.name[4:])):
        out.append(read_json(p))
    return out


__all__ = ["run_rest_mcts", "policy_examples", "read_iterations"]
