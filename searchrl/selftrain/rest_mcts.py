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

from ..data import read_jsonl, write_json, write_jsonl
from ..rundir import model_fingerprint, problems_digest, shard_key
from ..seeding import stable_seed
from .loop import Context, Iteration, Loop, MethodBase, read_records, run_loop


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


class ReSTMCTS(MethodBase):
    """ReST-MCTS* on the self-training skeleton (see the module doc): start = V0; collect = MCTS* data
    collection with the current policy and value model; train = the policy's SFT (continuing) and the
    value model's retraining on every target so far."""

    paths = ("policy", "value")

    def __init__(self, cfg, tree_cfg, sft_cfg, value_cfg, problems: list[dict], base: Path,
                 v0_records: Callable[[], list[dict]]):
        self.cfg, self.tree_cfg, self.sft_cfg, self.value_cfg = cfg, tree_cfg, sft_cfg, value_cfg
        self.problems, self.base, self.v0_records = problems, base, v0_records
        self.value_data: list[dict] = []

    def train_value_model(self, loop: Loop, records: list[dict], out: Path) -> Path:
        from ..models.value import ValueModel
        from ..train.value import train_value

        model, tok = loop.ctx.load_model(self.base)
        vm = ValueModel.from_policy(model, "scalar", self.value_cfg.dropout,
                                    seed=stable_seed("value-head", "scalar", self.value_cfg.seed))
        train_value(vm, tok, records, dataclasses.replace(self.value_cfg, kind="scalar", output_dir=str(out)),
                    progress=loop.progress)
        return out / "final"

    def start(self, loop: Loop, state: dict) -> None:
        if self.cfg.value_init:
            state["value"] = Path(self.cfg.value_init)
            return
        v0_path = loop.dir / "v0-data.jsonl"
        if not v0_path.exists():
            write_jsonl(v0_path, self.v0_records())
        self.value_data = read_jsonl(v0_path)
        state["value"] = self.train_value_model(loop, self.value_data, loop.dir / "v0")

    def resumed(self, loop: Loop, it: Iteration, record: dict, state: dict) -> None:
        self.value_data += read_jsonl(it.dir / "value-data.jsonl")

    def collect(self, loop: Loop, it: Iteration, state: dict) -> list[dict]:
        from ..search.mcts_star import collect

        policy, value, cfg, tree_cfg, problems = state["policy"], state["value"], self.cfg, self.tree_cfg, self.problems
        key = shard_key(policy=model_fingerprint(policy), value=model_fingerprint(value), iteration=it.number,
                        search=dataclasses.asdict(tree_cfg))

        def produce(res, s: int, e: int, advance) -> list[dict]:
            got = collect(res.generator(policy, cfg.batch_size), res.scorer(value), res.task, problems[s:e], tree_cfg,
                          indices=range(s, e))
            advance(e - s)
            return got

        return loop.shards(it, "search", key, len(problems), cfg.shard_problems, produce, desc="MCTS*")

    def train(self, loop: Loop, it: Iteration, state: dict, collected: list[dict]) -> dict:
        from ..train.sft import train_sft

        cfg, policy, value = self.cfg, state["policy"], state["value"]
        model = tok = None
        if any(c["correct"] for c in collected):  # the model SFT starts from (its tokenizer gives the EOS)
            model, tok = loop.ctx.load_model(self.base if cfg.from_base else policy)
        examples = policy_examples(collected, cfg.per_problem, cfg.min_value, tok.eos_token_id if tok else None)
        targets = [t for c in collected for t in c["targets"]]
        stats = {"questions": len(self.problems), "solved": sum(bool(c["correct"]) for c in collected),
                 "correct_ends": sum(len(c["correct"]) for c in collected),
                 "ends": sum(c["ends"] for c in collected), "policy_examples": len(examples),
                 # None for shards searched before generated tokens were recorded
                 "generated_tokens": (sum(c["generated_tokens"] for c in collected)
                                      if all("generated_tokens" in c for c in collected) else None),
                 "value_records": len(targets)}
        write_json(it.dir / "stats.json", stats)
        if examples:
            train_sft(model, tok, examples, dataclasses.replace(self.sft_cfg, output_dir=str(it.dir / "policy")),
                      progress=loop.progress)
            policy = it.dir / "policy" / "final"
        write_jsonl(it.dir / "value-data.jsonl", targets)
        self.value_data += targets
        value = self.train_value_model(loop, self.value_data, it.dir / "value") if targets else value
        return {"policy": loop.rel(policy), "value": loop.rel(value), **stats}

    def summary(self, loop: Loop, state: dict, last: Path) -> dict:
        return {"last": loop.rel(last), "policy": loop.rel(state["policy"]), "value": loop.rel(state["value"])}


def run_rest_mcts(ctx: Context, *, cfg, search_cfg, sft_cfg, value_cfg, problems: list[dict],
                  method_dir: str | Path, base: str | Path, v0_records: Callable[[], list[dict]]) -> dict[str, Path]:
    """Run (or resume) ReST-MCTS* (see the module doc) into ``method_dir``; returns ``{"last", "policy",
    "value"}``: the last iteration's directory (the method directory when there is none) and the models
    the run ended with.

    ``cfg``: :class:`~searchrl.config.RestMCTSConfig`; ``search_cfg``: the MCTS* settings (its
    ``iterations`` and ``max_tokens`` are ``cfg``'s); ``sft_cfg`` / ``value_cfg``: each iteration's
    policy and value training; ``v0_records()``: D_V0 (called only when V0 is trained here); ``ctx``
    (:class:`~searchrl.selftrain.loop.Context`) brings the task, the loaders (``load_value``: a value
    model as a scorer), what the run depends on and the workers of the MCTS* shards.
    """
    tree_cfg = dataclasses.replace(search_cfg, iterations=cfg.search_iterations, max_tokens=cfg.max_tokens,
                                   seed=cfg.seed)
    settings = {"rest_mcts": dataclasses.asdict(cfg), "search": dataclasses.asdict(tree_cfg),
                "sft": {k: v for k, v in dataclasses.asdict(sft_cfg).items() if k != "output_dir"},
                "value": {k: v for k, v in dataclasses.asdict(value_cfg).items() if k != "output_dir"},
                "base": model_fingerprint(base), "problems": problems_digest(problems)}
    loop = Loop(ctx, method_dir, settings, name=f"rest-mcts ({Path(method_dir).name})")
    method = ReSTMCTS(cfg, tree_cfg, sft_cfg, value_cfg, problems, Path(base), v0_records)
    info = run_loop(loop, method, cfg.iterations, {"policy": Path(base)})
    return {k: loop.resolve(info[k]) for k in ("last", "policy", "value")}


def read_iterations(method_dir: str | Path) -> list[dict]:
    """Each finished iteration's ``done.json`` (models and data counts), in order."""
    return read_records(method_dir)


__all__ = ["run_rest_mcts", "policy_examples", "read_iterations"]
