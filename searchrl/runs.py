"""The commands' bodies: data, SFT, generation and evaluation inside a run directory.

A run directory holds its resolved config (``config.yaml``); every stage writes through
temporary files renamed into place and leaves a completion marker, so rerunning the same
command resumes and recomputes nothing finished. Rerunning with a different config into
the same directory is refused (``--force-config`` overrides, at the user's risk).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, to_dict
from .data import write_json, write_text

DTYPES = ("float32", "bfloat16", "float16")


class RunDirError(RuntimeError):
    pass


def prepare_run_dir(cfg: Config, force: bool = False) -> Path:
    """Create the run directory and record the config; refuse a different one."""
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    path = run / "config.yaml"
    text = yaml.safe_dump(to_dict(cfg), sort_keys=True)
    if path.exists() and not force:
        old = yaml.safe_load(path.read_text())
        new = yaml.safe_load(text)
        if old != new:
            # a setting added by a newer searchrl, left at its default, is not a change
            defaults = to_dict(type(cfg)())
            if not isinstance(old, dict):
                diff = ["(not a mapping of settings)"]
            else:
                diff = sorted(k for k in _diff(old, new) if not (
                    _missing(old, k) and not _missing(new, k) and _get(new, k) == _get(defaults, k)))
            if diff:
                raise RunDirError(
                    f"{run} was made with a different config ({path}); differing keys: {', '.join(diff[:10])}. "
                    f"Use another --run-dir, restore the config, or pass --force-config.")
            write_text(path, text)  # record the new settings' defaults
        return run
    write_text(path, text)
    return run


_MISSING = object()


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _missing(d: Any, dotted: str) -> bool:
    return _get(d, dotted) is _MISSING


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def data_dir(cfg: Config) -> Path:
    return Path(cfg.data_dir) if cfg.data_dir else Path(cfg.run_dir) / "data"


def ensure_data(cfg: Config, progress: bool = True) -> Path:
    """The Countdown data of the run, generated once (``stats.json`` is written last)."""
    from .tasks.countdown import write_splits

    d = data_dir(cfg)
    if not (d / "stats.json").exists():
        if cfg.data_dir:
            raise FileNotFoundError(f"{d}: no Countdown data there (stats.json missing); "
                                    f"make it with `searchrl countdown data --out {d}`")
        write_splits(d, cfg.data, progress=progress)
    return d


def load_model(cfg: Config, name: str | None = None):
    import torch

    from .models import load_policy

    if cfg.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {DTYPES}, got {cfg.model.dtype!r}")
    dtype = getattr(torch, cfg.model.dtype)
    device = cfg.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_policy(name or cfg.model.name, number_digits=cfg.model.number_digits,
                       max_seq_len=cfg.model.max_seq_len, seed=cfg.seed, dtype=dtype, device=device)


def sos_examples(problems: list[dict], tokenizer) -> list[dict]:
    """Stream-of-Search SFT examples: the problem prompt, then the whole search trace."""
    from .models.tokenizer import prompt_for
    from .tasks.countdown import prompt_text

    return [{"prompt": prompt_for(tokenizer, prompt_text(p)), "response": p["trace"]} for p in problems]


def run_sft(cfg: Config, progress: bool = True) -> Path:
    """Train the Stream-of-Search base model (``<run_dir>/sft/final``)."""
    from .tasks.countdown import CountdownTask
    from .train.sft import is_complete, train_sft

    out = Path(cfg.run_dir) / "sft"
    if is_complete(out):
        return out / "final"
    task = CountdownTask(ensure_data(cfg, progress))
    model, tok = load_model(cfg)
    examples = sos_examples(task.problems("train"), tok)
    sft_cfg = dataclasses.replace(cfg.sft, output_dir=str(out))
    train_sft(model, tok, examples, sft_cfg, progress=progress)
    return out / "final"


def _task_and_policy(cfg: Config, model_dir: str | os.PathLike | None, progress: bool):
    """The run's Countdown task and the policy in ``model_dir`` (default: the run's SFT model)."""
    from .tasks.countdown import CountdownTask

    model_dir = Path(model_dir) if model_dir else Path(cfg.run_dir) / "sft" / "final"
    task = CountdownTask(ensure_data(cfg, progress))
    model, tok = load_model(cfg, str(model_dir))
    return task, model_dir, model, tok


def run_eval(cfg: Config, model_dir: str | os.PathLike | None = None, out_name: str = "eval",
             progress: bool = True) -> dict:
    """Greedy and sampled pass@k of a checkpoint on the test splits; writes the report."""
    from .eval.evaluate import evaluate
    from .eval.report import write_report

    out = Path(cfg.run_dir) / out_name
    task, model_dir, model, tok = _task_and_policy(cfg, model_dir, progress)
    t0 = time.perf_counter()
    summary = evaluate(model, tok, task, cfg.eval, out, progress=progress)
    results = {"methods": {cfg.eval.method: summary},
               "meta": {"model": str(model_dir), "eval": to_dict(cfg)["eval"],
                        "seconds": round(time.perf_counter() - t0, 1)}}
    write_report(out, results, splits=list(cfg.eval.splits), ks=list(cfg.eval.ks))
    return results


def run_generate(cfg: Config, split: str, model_dir: str | os.PathLike | None, n: int,
                 temperature: float, out_name: str = "generate", progress: bool = True) -> Path:
    """Sample ``n`` graded completions per problem of ``split`` (resumable shards)."""
    from .engine import Sampler
    from .eval.evaluate import generate_split

    out = Path(cfg.run_dir) / out_name
    task, _, model, tok = _task_and_policy(cfg, model_dir, progress)
    problems = task.problems(split)
    if cfg.eval.n_problems:
        problems = problems[: cfg.eval.n_problems]
    sampler = Sampler(model, tok, max_batch_size=cfg.eval.batch_size)
    mode = "greedy" if temperature == 0 else "sampled"
    recs = generate_split(sampler, tok, task, split, problems, mode, n, temperature, cfg.eval.top_p,
                          cfg.eval.max_tokens, cfg.eval.seed, out, cfg.eval.shard_problems, progress)
    solved = sum(r["reward"] > 0 for r in recs)
    write_json(out / f"{split}-{mode}-summary.json",
               {"split": split, "mode": mode, "samples": len(recs), "correct": solved,
                "accuracy": solved / max(len(recs), 1)})
    return out
