"""The bodies of the single-stage commands: data, sft, eval, generate.

Each takes a :class:`~searchrl.pipelines.run.Run` and works through the task interface;
none names a task.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from ..config import to_dict
from ..data import RecordError, write_json
from .run import Run, logger


def sft_examples(task, split: str = "train") -> list[dict]:
    """The task's demonstrations as SFT examples: the chat prompt, then the demonstration.

    A problem without one is an error naming its file, line and field.
    """
    from ..tasks.base import MissingField, where

    examples = []
    for i, p in enumerate(task.problems(split)):
        try:
            response = task.demonstration(p)
        except MissingField as e:
            path, line = where(task, split, i)
            raise RecordError(path, line, e.field, str(e)) from None
        examples.append({"problem": p, "response": response})
    return examples


def run_data(task_cfg, out: str | os.PathLike, progress: bool = True) -> dict | None:
    """Write the task's splits into ``out`` (nothing to do when they are there)."""
    from ..tasks import make_task

    return make_task(task_cfg, out).prepare(out, progress=progress)


def demonstration_example(tokenizer, task, problem: dict, demo: str | list[dict]) -> dict[str, str]:
    """One SFT example: the chat prompt, then the demonstration. A demonstration given as messages (a
    multi-turn one, e.g. a self-repair) trains its last assistant turn, the earlier ones in the prompt."""
    from ..rollout import chat_prompt

    if isinstance(demo, str):
        return {"prompt": chat_prompt(tokenizer, task, problem), "response": demo}
    if not demo or demo[-1].get("role") != "assistant":
        raise ValueError(f"task {task.name!r}: a multi-turn demonstration must end with an assistant message")
    return {"prompt": chat_prompt(tokenizer, task, problem, demo[:-1]), "response": demo[-1]["content"]}


def run_sft(run: Run) -> Path:
    """Train the SFT base model on the task's demonstrations (``<run_dir>/sft/final``)."""
    from ..train.sft import train_sft

    stage = run.sft_stage()
    if stage.done:
        return run.sft_dir / "final"
    run.check_model(run.cfg.model.name)
    run.ensure_data()
    model, tok = run.load()
    examples = [demonstration_example(tok, run.task, e["problem"], e["response"]) for e in sft_examples(run.task)]
    stage.begin()  # only now: everything it needs is there
    logger.info("SFT of %s on %d demonstrations in %s", run.cfg.model.name, len(examples), run.sft_dir)
    train_sft(model, tok, examples, dataclasses.replace(run.cfg.sft, output_dir=str(run.sft_dir)),
              progress=run.progress)
    stage.finish()
    return run.sft_dir / "final"


def run_eval(run: Run, model_dir: str | os.PathLike | None = None, out_name: str = "eval",
             method: str | None = None, by_path: bool = False) -> dict:
    """Greedy and sampled pass@k of a checkpoint on the eval splits; writes the report (``method``: the
    name tables and plots give it, default the checkpoint's path when ``by_path``, else ``eval.method``)."""
    from ..eval.evaluate import sampling_note
    from ..eval.report import SPLIT_TITLES, machine, write_report
    from ..rundir import rel

    cfg = run.cfg
    out = run.dir / out_name
    path = run.policy_path(model_dir)
    run.ensure_data()
    t0 = time.perf_counter()
    summary = run.evaluate(path, out)
    results = {"methods": {method or (run.short(path) if by_path else cfg.eval.method): summary},
               "meta": {"model": rel(run.dir, path), "eval": to_dict(cfg)["eval"],
                        "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}}
    write_report(out, results, splits=list(cfg.eval.splits), ks=list(cfg.eval.ks), sampling=sampling_note(cfg.eval),
                 machine=results["meta"]["machine"], split_titles=getattr(run.task, "split_titles", SPLIT_TITLES),
                 model=results["meta"]["model"])
    return results


def run_generate(run: Run, split: str, model_dir: str | os.PathLike | None, n: int, temperature: float,
                 out_name: str = "generate") -> Path:
    """Sample ``n`` graded completions per problem of ``split`` (resumable shards)."""
    from ..eval.evaluate import generate_split

    cfg = run.cfg
    out = run.dir / out_name
    path = run.policy_path(model_dir)
    run.ensure_data()
    problems = run.task.problems(split)
    if cfg.eval.n_problems:
        problems = problems[: cfg.eval.n_problems]
    mode = "greedy" if temperature == 0 else "sampled"
    recs = generate_split(run.workers(), run.task, split, problems, mode, n, temperature, cfg.eval.top_p,
                          cfg.eval.max_tokens, cfg.eval.seed, out, run.model_key(path), cfg.eval.shard_problems,
                          run.progress, policy=path, batch_size=cfg.eval.batch_size)
    solved = sum(bool(r["correct"]) for r in recs)
    write_json(out / f"{split}-{mode}-summary.json",
               {"split": split, "mode": mode, "samples": len(recs), "correct": solved,
                "accuracy": solved / max(len(recs), 1)})
    return out


def run_export_verl(run: Run, split: str, out: str | os.PathLike, n: int = 0) -> tuple[Path, int]:
    """``searchrl export-verl``: the first ``n`` problems (0 = all) of the run's ``split`` as a verl parquet
    file (:func:`searchrl.tasks.verl.export_parquet`); returns the file and its number of rows."""
    from ..tasks.verl import export_parquet

    run.ensure_data()
    path = export_parquet(run.task, split, out, n)
    return path, (n or len(run.task.problems(split)))
