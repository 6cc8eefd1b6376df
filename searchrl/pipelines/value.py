"""The value-model commands: ``value-data`` (four data makers) and ``train-value``.

Data makers (each resumable: records are written in shards under
``<run>/value-data/<source>-<key>/``, the key naming the policy, the value model that guided
the search if any, and every setting, so a changed setting makes new shards and a rerun skips
finished ones):

* ``orm``: ``samples`` complete responses per problem, each labelled 1.0 (correct) or 0.0
  (outcome labels on complete responses only). The ORM trained on them stands in for the
  papers' off-the-shelf outcome reward models (ReST-RL's Skywork ORM), which cannot be
  downloaded here.
* ``vgs`` (Value-Guided Search): ``samples`` roll-ins per problem (responses cut at a token
  position drawn uniformly from the response, seeded by name), ``rollouts`` roll-outs sampled
  from each cut, each labelled by the task's verifier: 1 correct, 2 incorrect, 0 incomplete
  (it hit the length limit) - the VGS class order.
* ``vm-mcts``: value targets of ReST-RL Algorithm 2 (:func:`searchrl.search.vm_mcts.collect_value_targets`).
* ``mcts-star``: value targets inferred from MCTS* trees (ReST-MCTS*,
  :func:`searchrl.search.mcts_star.collect_value_targets`), guided by a value model (``--value``).
* ``math-shepherd``: process reward labels (Wang et al., Math-Shepherd, "hard estimation"), the
  data of the PRM that ReST-RL's PRM-BoN baseline and ReST-MCTS*'s "SC + MS" row score with,
  made independently of every value model: ``samples`` responses per problem; at the end of each
  of a response's steps (actions: ``task.action_stop``) but the last, ``rollouts`` completions
  are sampled from the step, and the step's target is 1.0 when at least one of them is correct,
  else 0.0; the whole response's target is its own grade (:func:`_shepherd_records`).
* ``gold``: ReST-MCTS*'s initial value data D_V0 (:func:`gold_value_records`): the ``train``
  split's gold step-by-step solutions, each with one corrupted step per position, as a tree whose
  gold end is correct and whose corrupted steps are incorrect ends; targets by the same inference
  (:func:`searchrl.search.mcts_star.infer_value_targets`). No sampling: the policy only tokenizes.

Every maker counts the tokens its policy generated (its **data budget**, what ReST-RL's PRM and
value model are compared at): per shard in ``<shard>.tokens.json``, in all in ``summary.json``
(``generated_tokens``; None when a shard was made before it was counted).

Every record holds token ids (``prompt_ids``, ``state_ids``, and ``rollout_ids`` for vgs) plus
its ``target`` / ``label``, the problem ``index`` and the ``source``.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

from ..config import VALUE_SOURCES
from ..data import InputError, RecordError, iter_jsonl, read_json, read_jsonl, resumable_shards, write_json, write_jsonl
from ..rundir import problems_digest, rel, shard_key
from ..seeding import stable_seed
from .run import Run, logger

SUMMARY = "summary.json"


class _CountingGenerator:
    """A generator whose ``generate`` adds every sampled token to ``tokens`` (a maker's data budget)."""

    def __init__(self, gen):
        self._gen, self.tokens = gen, 0

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def generate(self, prompts, params=None, **kwargs):
        outs = self._gen.generate(prompts, params, **kwargs)
        self.tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
        return outs


def _tokens_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(".jsonl")] + ".tokens.json")


def _responses(gen, task, problems, start, cfg, name: str, advance=None) -> list:
    """``cfg.samples`` graded responses per problem (seeded by ``name`` and the problem's index), flat."""
    from ..engine import SamplingParams
    from ..rollout import rollout

    params = [SamplingParams(n=cfg.samples, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                             seed=stable_seed(cfg.seed, name, cfg.split, start + i)) for i in range(len(problems))]
    return [t for ts in rollout(gen, task, problems, params, indices=range(start, start + len(problems)),
                                advance=advance) for t in ts]


def _completions(gen, task, problems, start, cuts, cfg, seed_of) -> list[list[tuple]]:
    """Each ``(response, cut)`` continued from its first ``cut`` response tokens by ``cfg.rollouts``
    samples (at most the rest of ``cfg.max_tokens``; seed ``seed_of(response, cut)``), each graded
    together with that head by one batched ``task.score``: per cut, ``[(completion, correct)]``."""
    from ..engine import SamplingParams

    if not cuts:
        return []
    outs = gen.generate([t.prompt_ids + t.response_ids[:c] for t, c in cuts],
                        [SamplingParams(n=cfg.rollouts, temperature=cfg.temperature,
                                        max_tokens=max(1, cfg.max_tokens - c), seed=seed_of(t, c)) for t, c in cuts])
    tok = gen.tokenizer
    graded, texts = [], []
    for (t, c), o in zip(cuts, outs):
        for comp in o.outputs:
            graded.append(problems[t.index - start])
            texts.append(tok.decode(t.response_ids[:c] + list(comp.token_ids), skip_special_tokens=True))
    verdicts = iter(s.correct for s in task.score(graded, texts))
    return [[(comp, next(verdicts)) for comp in o.outputs] for o in outs]


def _orm_records(gen, task, problems, start, cfg, advance) -> list[dict]:
    return [{"source": "orm", "index": t.index, "prompt_ids": t.prompt_ids, "state_ids": t.response_ids,
             "target": 1.0 if t.correct else 0.0, "finish_reason": t.finish_reason}
            for t in _responses(gen, task, problems, start, cfg, "orm", advance)]


def _vgs_records(gen, task, problems, start, cfg, advance) -> list[dict]:
    """VGS roll-in / roll-out data (see module docs)."""
    rollins = _responses(gen, task, problems, start, cfg, "vgs-rollin")
    cuts = []
    for t in rollins:
        rng = random.Random(stable_seed(cfg.seed, "vgs-cut", cfg.split, t.index, t.sample))
        cuts.append((t, rng.randrange(len(t.response_ids)) if t.response_ids else 0))
    done = _completions(gen, task, problems, start, cuts, cfg,
                        lambda t, c: stable_seed(cfg.seed, "vgs-rollout", cfg.split, t.index, t.sample))
    records = [{"source": "vgs", "index": t.index, "prompt_ids": t.prompt_ids, "state_ids": t.response_ids[:c],
                "rollout_ids": list(comp.token_ids), "label": 1 if ok else (0 if comp.finish_reason == "length" else 2)}
               for (t, c), got in zip(cuts, done) for comp, ok in got]
    advance(len(problems) * cfg.samples)
    return records


def _shepherd_records(gen, task, problems, start, cfg, advance) -> list[dict]:
    """Math-Shepherd step labels (see module docs): a step is good (1.0) when a completion sampled from it
    reaches a correct answer."""
    from ..search.common import ActionSplitter

    responses = _responses(gen, task, problems, start, cfg, "shepherd")
    split = ActionSplitter(gen.tokenizer, task.action_stop)
    steps = [(t, end) for t in responses for _, end in split.actions(t.response_ids)[:-1]]
    done = _completions(gen, task, problems, start, steps, cfg,
                        lambda t, end: stable_seed(cfg.seed, "shepherd-completion", cfg.split, t.index, t.sample, end))
    records = [{"source": "math-shepherd", "index": t.index, "prompt_ids": t.prompt_ids,
                "state_ids": t.response_ids[:end], "target": 1.0 if any(ok for _, ok in got) else 0.0}
               for (t, end), got in zip(steps, done)]
    records += [{"source": "math-shepherd", "index": t.index, "prompt_ids": t.prompt_ids,  # the last step: the
                 "state_ids": t.response_ids, "target": 1.0 if t.correct else 0.0}      # response itself
                for t in responses]
    advance(len(problems) * cfg.samples)
    return records


def gold_value_records(task, tokenizer, problems: list[dict], start: int, seed: int) -> list[dict]:
    """D_V0 of ReST-MCTS* (see the module doc) for ``problems`` (indices from ``start``).

    A gold solution of K lines gives a path root -> l1 -> ... -> lK (the last one finished and
    correct); at every depth k a sibling holds line k corrupted (``task.corrupt(problem, line, rng)``
    where the task has it, else the same-depth line of the next problem's gold solution), an
    incorrect end. Inference then gives the gold steps 1/K, ..., 1 (eq. 2 with the code's signs)
    and each corrupted step less than its parent.
    """
    from ..rollout import chat_prompt
    from ..search.mcts_star import Tree, infer_value_targets

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    out = []
    for i, p in enumerate(problems):
        rng = random.Random(stable_seed(seed, "gold-value", start + i))
        lines = task.demonstration(p).split("\n")
        other = task.demonstration(problems[(i + 1) % len(problems)]).split("\n")
        tree = Tree(start + i, enc(chat_prompt(tokenizer, task, p)))
        node, correct = tree.root, set()
        for k, line in enumerate(lines):
            last = k == len(lines) - 1
            prefix = "\n".join(lines[:k]) + ("\n" if k else "")
            bad = task.corrupt(p, line, rng) if hasattr(task, "corrupt") else other[min(k, len(other) - 1)]
            if bad != line:
                tree.add(node, enc(prefix + bad + ("" if last else "\n")), finished=True)
            node = tree.add(node, enc(prefix + line + ("" if last else "\n")), finished=last)
        correct.add(node.id)
        out += [{"source": "gold", **r} for r in infer_value_targets(tree, lambda n: n.id in correct)]
    return out


def check_value_source(source: str, value: str | os.PathLike | None) -> None:
    """Refuse a maker without what it needs (mcts-star searches with a value model), before any work."""
    if source not in VALUE_SOURCES:
        raise InputError(f"value-data --source {source}: unknown; known: {', '.join(VALUE_SOURCES)}")
    if source == "mcts-star" and not value:
        raise InputError("value-data --source mcts-star: needs --value, the value model that guides the search")


def make_value_data(run: Run, source: str, policy: str | os.PathLike | None = None,
                    value: str | os.PathLike | None = None) -> tuple[Path, list[dict]]:
    """Make (or resume) ``source``'s value data from the policy ``policy`` (default: the run's base);
    returns its directory and records."""
    from ..fanout import LocalWorkers, Resources

    check_value_source(source, value)
    cfg, scfg = run.cfg.value_data, run.cfg.search
    path = run.policy_path(policy)
    run.ensure_data()
    tree_cfg = None
    n_problems = cfg.n_problems
    if source in ("vm-mcts", "mcts-star"):
        # a tree search's response limit is value_data.max_tokens, like the other makers'; its iterations
        # and problems are value_data's, its other settings the search's own
        base, iterations, n = ((scfg.vm_mcts, cfg.vm_mcts_iterations, cfg.vm_mcts_problems) if source == "vm-mcts"
                               else (scfg.mcts_star, cfg.mcts_star_iterations, cfg.mcts_star_problems))
        tree_cfg = dataclasses.replace(base, max_tokens=cfg.max_tokens, iterations=iterations)
        n_problems = n or cfg.n_problems
    if source == "math-shepherd":
        n_problems = cfg.shepherd_problems or cfg.n_problems
    tokenizer = None
    if source == "gold":  # D_V0 comes from the SFT split's gold solutions; the policy only tokenizes
        problems = run.task.problems("train")[: n_problems or None]
        key = shard_key(source=source, model=run.model_key(path), seed=cfg.seed, n_problems=n_problems,
                        problems=problems_digest(problems))
        tokenizer = run.tokenizer(path)
    else:
        problems = run.task.problems(cfg.split)
        if n_problems:
            problems = problems[:n_problems]
        settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in cfg.MAKER_FIELDS}
        settings["n_problems"] = n_problems
        if tree_cfg is not None:
            settings["search"] = dataclasses.asdict(tree_cfg)
        key = shard_key(source=source, model=run.model_key(path),
                        value=run.model_identity(value) if value else None, **settings)
    out = run.dir / "value-data" / f"{source}-{key}"
    unit_per = cfg.samples if source in ("orm", "vgs", "math-shepherd") else 1

    def produce(res, start: int, end: int, advance) -> list[dict]:
        chunk, task = problems[start:end], res.task
        found = _other_layout(out, start, end, problems, path_of)
        if found is not None:  # made with another shard_problems: read, never recomputed
            records = [r for f in found for r in read_jsonl(f)]
            counts = [_tokens_path(f) for f in found]
            if all(c.is_file() for c in counts):
                write_json(_tokens_path(path_of(start, end)),
                           {"generated_tokens": sum(read_json(c)["generated_tokens"] for c in counts)})
            write_jsonl(path_of(start, end), records)
            for f in found:
                f.unlink()
                _tokens_path(f).unlink(missing_ok=True)
            advance((end - start) * unit_per)
            return records
        if source == "gold":
            advance(end - start)
            return gold_value_records(task, tokenizer, chunk, start, cfg.seed)
        gen = _CountingGenerator(res.generator(path, cfg.batch_size))
        if source == "orm":
            records = _orm_records(gen, task, chunk, start, cfg, advance)
        elif source == "vgs":
            records = _vgs_records(gen, task, chunk, start, cfg, advance)
        elif source == "math-shepherd":
            records = _shepherd_records(gen, task, chunk, start, cfg, advance)
        else:
            if source == "vm-mcts":
                from ..search.vm_mcts import collect_value_targets

                per = collect_value_targets(gen, task, chunk, tree_cfg, indices=range(start, end))
            else:
                from ..search.mcts_star import collect_value_targets

                per = collect_value_targets(gen, res.scorer(value), task, chunk, tree_cfg, indices=range(start, end))
            advance(end - start)
            records = [{"source": source, **r} for recs in per for r in recs]
        write_json(_tokens_path(path_of(start, end)), {"generated_tokens": gen.tokens})
        return records

    def path_of(start: int, end: int) -> Path:
        return out / f"{start:06d}-{end - 1:06d}-{problems_digest(problems[start:end])}.jsonl"

    records = resumable_shards(len(problems), cfg.shard_problems, path_of, produce, desc=f"value data ({source})",
                               progress=run.progress, per_item=unit_per,
                               workers=run.workers() if source != "gold" else LocalWorkers(Resources(run.task)))
    if source != "gold":
        run.workers().release()
    label = "label" if source == "vgs" else "target"
    summary = {"source": source, "policy": rel(run.dir, path), "value": rel(run.dir, value) if value else None,
               "split": "train" if source == "gold" else cfg.split, "problems": len(problems), "records": len(records),
               "problems_with_records": len({r["index"] for r in records}),
               f"mean_{label}": (sum(float(r[label]) for r in records) / len(records)) if records else None}
    if source == "vgs":
        summary["labels"] = {str(k): sum(r["label"] == k for r in records) for k in (0, 1, 2)}
    spans = [(s, min(s + cfg.shard_problems, len(problems))) for s in range(0, len(problems), cfg.shard_problems)]
    summary["files"] = [path_of(s, e).name for s, e in spans]  # the data, for train-value
    counts = [_tokens_path(path_of(s, e)) for s, e in spans]
    summary["generated_tokens"] = (sum(read_json(c)["generated_tokens"] for c in counts)
                                   if source != "gold" and all(c.is_file() for c in counts) else None)
    write_json(out / SUMMARY, summary)
    logger.info("value data (%s): %d records from %d problems in %s", source, len(records), len(problems), out)
    return out, records


def _other_layout(out: Path, start: int, end: int, problems: list[dict], path_of) -> list[Path] | None:
    """Shards of another ``shard_problems`` that together hold problems ``[start, end)`` exactly
    (contiguous, each named by the digest of its own problems), or None."""
    import re

    spans = {}
    for f in out.glob("*.jsonl") if out.is_dir() else []:
        m = re.fullmatch(r"(\d{6})-(\d{6})-([0-9a-f]+)\.jsonl", f.name)
        if m:
            s, e = int(m.group(1)), int(m.group(2)) + 1
            if start <= s < e <= end and f == path_of(s, e):
                spans[s] = (e, f)
    chain, at = [], start
    while at in spans:
        at, f = spans[at]
        chain.append(f)
    return chain if chain and at == end else None


def read_value_data(paths: list[str | os.PathLike], kind: str) -> list[dict]:
    """Records of the ``*.jsonl`` files in ``paths`` (files or directories), checked for ``kind``;
    a bad record is an error naming its file, line and field."""
    from ..train.value import check_record

    records = []
    for f in value_data_files(paths):
        for line, rec in iter_jsonl(f):
            bad = check_record(rec, kind)
            if bad is not None:
                raise RecordError(f, line, bad[0], bad[1] + f" (a {kind} value record)")
            records.append(rec)
    return records


def value_data_files(paths: list[str | os.PathLike]) -> list[Path]:
    """The JSONL files of ``paths``: a data maker's directory lists its own (in ``summary.json``); a path
    that is not there, or no file at all, is refused (``train-value`` checks its ``--data`` with this
    before it records anything)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and (p / SUMMARY).is_file() and "files" in read_json(p / SUMMARY):
            files += [p / name for name in read_json(p / SUMMARY)["files"]]
        elif p.is_dir():
            files += sorted(p.glob("*.jsonl"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such value-data file or directory")
    if not files:
        raise FileNotFoundError(f"no *.jsonl value data in {', '.join(map(str, paths))}")
    return files


def run_train_value(run: Run, kind: str, data: list[str | os.PathLike], policy: str | os.PathLike | None = None,
                    name: str | None = None) -> Path:
    """Train a ``kind`` value model (initialised from ``policy``, default the run's base) on ``data``
    into ``<run>/value/<name or kind>/final``: a stage that records the policy, a digest of the
    data and the training settings, so a rerun with other ones is refused instead of reusing it."""
    import hashlib

    from ..models.value import ValueModel
    from ..rundir import Stage, trajectory_settings
    from ..train.value import train_value

    path = run.policy_path(policy)
    out = run.dir / "value" / (name or kind)
    digest = hashlib.sha256()
    for f in value_data_files(data):
        digest.update(f.read_bytes())
    cfg = dataclasses.replace(run.cfg.value, kind=kind, output_dir=str(out))
    stage = Stage(out, {"policy": run.model_identity(path), "data": digest.hexdigest()[:16],
                        "value": trajectory_settings(cfg)}, name=f"value model ({name or kind})")
    stage.check()  # other data or settings into a finished model's directory: refused, naming them
    if stage.done:
        return out / "final"
    stage.begin()
    records = read_value_data(data, kind)
    model, tok = run.load(path)
    # the head's initial weights from the seed, not from whatever this process drew before (sampling, searches)
    vm = ValueModel.from_policy(model, kind, cfg.dropout, seed=stable_seed("value-head", kind, cfg.seed))
    logger.info("training a %s value model from %s on %d records in %s", kind, path, len(records), out)
    summary = train_value(vm, tok, records, cfg, progress=run.progress)
    stage.finish(data=[rel(run.dir, d) for d in data], policy=rel(run.dir, path), records=len(records),
                 final_loss=summary.get("final_loss"))
    return out / "final"


#: the value models a comparison can build itself: setting -> (data source, head, name, guiding model)
BUILDS = {"value": ("vm-mcts", "scalar", "scalar", None), "orm": ("orm", "orm", "orm", None),
          "prm": ("math-shepherd", "scalar", "prm", None),
          "classifier": ("vgs", "3class", "3class", None),
          "mcts_star_value": ("mcts-star", "scalar", "mcts-star", "value")}


def ensure_value_models(run: Run, needs: list[str], policy: str | os.PathLike | None = None) -> dict[str, str]:
    """Paths of the value models ``needs`` names (``search.value``, ``search.orm``, ...): the configured
    one when set, else made in this run directory (its data with ``value_data``'s settings, then
    trained with ``value``'s): ``value`` from ReST-RL Algorithm 2 targets, ``orm`` from outcome
    labels, ``prm`` from Math-Shepherd step labels, ``classifier`` from VGS roll-outs,
    ``mcts_star_value`` from MCTS* targets (guided by ``value``). No setting stands in for another:
    each method scores with the model its claim names (the results' ``meta["models"]`` says which)."""
    c = run.cfg.search
    given = {"value": c.value, "orm": c.orm, "prm": c.prm, "classifier": c.classifier,
             "mcts_star_value": c.mcts_star_value}
    paths: dict[str, str] = {}

    def get(need: str) -> str:
        if need in paths:
            return paths[need]
        if given[need]:
            paths[need] = given[need]
            return paths[need]
        source, kind, name, guide = BUILDS[need]
        guide_path = get(guide) if guide else None
        data_dir, records = make_value_data(run, source, policy, guide_path)
        if not records:
            from ..data import InputError

            raise InputError(f"{data_dir}: the {source} data maker found nothing to learn from (MCTS* keeps only "
                             f"problems with a correct end state): give it more problems or iterations "
                             f"(value_data.mcts_star_problems, value_data.mcts_star_iterations), or set search.{need}")
        paths[need] = str(run_train_value(run, kind, [data_dir], policy, name))
        return paths[need]

    for need in needs:
        get(need)
    return paths


__all__ = ["BUILDS", "check_value_source", "value_data_files", "make_value_data", "gold_value_records", "read_value_data", "run_train_value",
           "ensure_value_models"]
