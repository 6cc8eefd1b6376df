"""Countdown problem sets: generation, seen/unseen split, Stream-of-Search training traces, I/O.

Generation follows the published Stream-of-Search generator (``countdown_generate.py``):
targets ``min_target..max_target``; a seeded shuffle holds out 10% of them (``len // 10``)
as *unseen* targets; a problem picks a target from its split's targets, then draws
``n_numbers`` starting numbers from ``1..max_target-1`` (``1..max_number`` when
``max_number`` is set, a setting the published code does not have) until the exhaustive
search finds a solution (the first one in the published order is stored).

Splits: ``train``, ``selftrain``, ``valid`` and ``test_seen`` use the training targets,
``valid_unseen`` and ``test_unseen`` the held-out ones (``valid_unseen`` is for choosing
settings by their effect on held-out targets without touching the test; no training split
ever holds a held-out target). ``selftrain`` holds the problems self-training and RL
sample from, as the Guided-ReST paper keeps its RL set (countdown-rl) apart from the SFT
set (countdown-sft): no ``selftrain`` problem is in ``train``, so the SFT base never saw
them. No evaluation problem (same target and same multiset of numbers) appears in
``train``, ``selftrain`` or another evaluation split; ``train`` may repeat a problem, as
the published generator does. The evaluation splits are drawn first, then ``selftrain``,
so a training set that covers most of a small problem space still leaves them their
problems.

Problem ``i`` of a split is drawn from its own generator seeded by ``(seed, split, i,
attempt)``, so the output does not depend on how many worker processes made it.

Records are JSON Lines with ``nums``, ``target``, ``solution``; training records also
carry a Stream-of-Search ``trace`` with ``strategy``, ``heuristic``, ``beam_width`` and
``trace_seed`` (the mixed training set of Stream of Search: per problem a random heuristic
and a random strategy, DFS or BFS with a random beam width 1..5). :func:`read_problems`
also reads the layout of the published Guided-ReST datasets, where the fields sit under
``extra_info`` (JSONL or parquet).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...data import InputError, RecordError, iter_jsonl, type_name, write_json, write_jsonl
from .core import solve
from .grader import grade
from .traces import sos_trace

SPLITS = ("train", "selftrain", "valid", "valid_unseen", "test_seen", "test_unseen")


@dataclass
class CountdownDataConfig:
    """The data settings of the Countdown task (``searchrl data``; the ``task`` section without ``name``/``number_digits``)."""

    n_train: int = field(default=100_000, metadata={"help": "training problems (with SoS traces)"})
    n_valid: int = field(default=1_000, metadata={"help": "validation problems (seen targets)"})
    n_valid_unseen: int = field(default=1_000, metadata={
        "help": "validation problems on the held-out targets (split valid_unseen; none of them in test_unseen)"})
    n_test: int = field(default=1_000, metadata={"help": "problems in each of test_seen and test_unseen"})
    n_numbers: int = field(default=3, metadata={"help": "starting numbers per problem (the papers use 4)"})
    min_target: int = field(default=10, metadata={"help": "smallest target"})
    max_target: int = field(default=100, metadata={"help": "largest target"})
    max_number: int = field(default=0, metadata={
        "help": "numbers are drawn from 1..max_number (0 = 1..max_target-1, the published generator)"})
    n_selftrain: int = field(default=10_000, metadata={
        "help": "self-training problems (split 'selftrain', seen targets, no traces), none of them in train"})
    seed: int = field(default=0, metadata={"help": "seed of the target split and of every problem"})
    traces: bool = field(default=True, metadata={"help": "write a Stream-of-Search trace with each training problem"})
    workers: int = field(default=0, metadata={"help": "worker processes (0 = all available cores)"})
    max_attempts: int = field(default=1000, metadata={"help": "redraws of one evaluation problem to avoid a repeat"})

    def __post_init__(self):
        # checked when the settings are made (a config being read, before any command records it)
        if self.n_numbers < 2:
            raise InputError(f"n_numbers must be >= 2, got {self.n_numbers}")
        if not 1 <= self.min_target <= self.max_target:
            raise InputError(f"need 1 <= min_target <= max_target, got {self.min_target}..{self.max_target}")
        if self.max_target - self.min_target + 1 < 10:
            raise InputError(f"targets {self.min_target}..{self.max_target} are too few to hold out 10% (need >= 10)")
        if self.max_number < 0:
            raise InputError(f"max_number must be >= 0 (0 = max_target-1), got {self.max_number}")
        for name in ("n_train", "n_selftrain", "n_valid", "n_valid_unseen", "n_test"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")


def split_targets(min_target: int, max_target: int, seed: int) -> tuple[list[int], list[int]]:
    """``(seen, unseen)`` targets: a seeded shuffle, the first 10% held out."""
    targets = list(range(min_target, max_target + 1))
    random.Random(seed).shuffle(targets)
    k = len(targets) // 10
    return targets[k:], targets[:k]


def number_range(cfg: CountdownDataConfig | dict) -> int:
    """The largest starting number: ``max_number``, or ``max_target - 1`` (the published generator) when 0."""
    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    return c.get("max_number") or c["max_target"] - 1


def generate_problem(rng: random.Random, targets: list[int], n_numbers: int, max_number: int) -> dict:
    """One solvable problem: a target from ``targets``, numbers from ``1..max_number`` resampled until solvable."""
    target = rng.choice(targets)
    while True:
        nums = [rng.randint(1, max_number) for _ in range(n_numbers)]
        solution = solve(target, nums)
        if solution is not None:
            return {"nums": nums, "target": target, "solution": solution}


def random_trace_settings(rng: random.Random) -> dict:
    """Stream of Search's mixed strategy: random heuristic; DFS, or BFS of random width 1..5."""
    heuristic = rng.choice(["sum", "mult"])
    strategy = rng.choice(["dfs", "bfs"])
    beam_width = rng.choice([1, 2, 3, 4, 5]) if strategy == "bfs" else 1
    return {"strategy": strategy, "heuristic": heuristic, "beam_width": beam_width,
            "trace_seed": rng.randrange(2**31)}


def add_trace(problem: dict, settings: dict) -> dict:
    trace = sos_trace(problem["target"], problem["nums"], strategy=settings["strategy"],
                      heuristic=settings["heuristic"], beam_width=settings["beam_width"],
                      seed=settings["trace_seed"])
    return {**problem, "trace": trace, **settings}


def _make_one(args: tuple) -> dict:
    cfg, split, targets, i, attempt = args
    rng = random.Random(f"{cfg['seed']}:{split}:{i}:{attempt}")
    problem = generate_problem(rng, targets, cfg["n_numbers"], number_range(cfg))
    if split == "train" and cfg["traces"]:
        problem = add_trace(problem, random_trace_settings(rng))
    return problem


def _key(problem: dict) -> tuple:
    return problem["target"], tuple(sorted(problem["nums"]))


def generate_splits(cfg: CountdownDataConfig, progress: bool = True) -> dict[str, list[dict]]:
    """All splits as lists of records (see the module doc for the guarantees)."""
    from tqdm.auto import tqdm

    seen, unseen = split_targets(cfg.min_target, cfg.max_target, cfg.seed)  # settings checked in __post_init__
    sizes = {"train": cfg.n_train, "selftrain": cfg.n_selftrain, "valid": cfg.n_valid, "valid_unseen": cfg.n_valid_unseen,
             "test_seen": cfg.n_test, "test_unseen": cfg.n_test}
    split_t = {"train": seen, "selftrain": seen, "valid": seen, "valid_unseen": unseen, "test_seen": seen,
               "test_unseen": unseen}
    workers = cfg.workers or os.cpu_count() or 1
    c = asdict(cfg)
    out: dict[str, list[dict]] = {}
    taken: set[tuple] = set()   # problems of the evaluation and self-training splits made so far
    total = sum(sizes.values())
    # Evaluation splits first, then the self-training problems, so a large training set can
    # never exhaust the problems they need; training problems then avoid all of them.
    with ProcessPoolExecutor(workers) if workers > 1 else _Inline() as pool, \
            tqdm(total=total, desc="countdown data", unit="problem", disable=not progress) as bar:
        for split in ("test_unseen", "valid_unseen", "test_seen", "valid", "selftrain", "train"):
            n = sizes[split]
            records: list[dict | None] = [None] * n
            attempts = [0] * n
            todo = list(range(n))
            while todo:
                jobs = [(c, split, split_t[split], i, attempts[i]) for i in todo]
                made = pool.map(_make_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
                redo = []
                for i, problem in zip(todo, made):
                    key = _key(problem)
                    if key in taken:
                        attempts[i] += 1
                        if attempts[i] >= cfg.max_attempts:
                            raise ProblemSpaceExhausted(
                                f"{split}: no new problem after {cfg.max_attempts} draws; the problem space "
                                f"(n_numbers={cfg.n_numbers}, numbers 1..{number_range(cfg)}, targets "
                                f"{cfg.min_target}..{cfg.max_target}) "
                                f"is too small for the requested split sizes")
                        redo.append(i)
                        continue
                    if split != "train":
                        taken.add(key)
                    records[i] = problem
                    bar.update(1)
                todo = redo
            out[split] = records  # type: ignore[assignment]
    return {split: out[split] for split in SPLITS}


class ProblemSpaceExhausted(InputError):
    """The requested number of distinct evaluation problems does not exist."""


class _Inline:
    """A stand-in for a process pool that maps in this process (workers == 1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items, chunksize=1):
        return map(fn, items)


def statistics(splits: dict[str, list[dict]]) -> dict[str, Any]:
    """Counts, trace lengths and search success of a generated data set."""
    stats: dict[str, Any] = {}
    for split, recs in splits.items():
        s: dict[str, Any] = {"problems": len(recs), "targets": len({r["target"] for r in recs})}
        traced = [r for r in recs if "trace" in r]
        if traced:
            lengths = sorted(len(r["trace"]) for r in traced)
            solved = sum(grade(r["trace"], r["target"], r["nums"]) for r in traced)
            s.update({
                "traces": len(traced),
                "trace_solved": solved / len(traced),
                "trace_chars_mean": sum(lengths) / len(lengths),
                "trace_chars_median": lengths[len(lengths) // 2],
                "trace_chars_max": lengths[-1],
                "strategies": _count(f"{r['strategy']}{r['beam_width'] if r['strategy'] == 'bfs' else ''}"
                                     for r in traced),
            })
        stats[split] = s
    return stats


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


def write_splits(out_dir: str | os.PathLike, cfg: CountdownDataConfig, progress: bool = True) -> dict:
    """Generate and write ``{split}.jsonl``, ``stats.json`` and ``config.json`` into ``out_dir``."""
    t0 = time.perf_counter()
    splits = generate_splits(cfg, progress=progress)
    elapsed = time.perf_counter() - t0
    out = Path(out_dir)
    for split, recs in splits.items():
        write_jsonl(out / f"{split}.jsonl", recs)
    stats = statistics(splits)
    seen, unseen = split_targets(cfg.min_target, cfg.max_target, cfg.seed)
    stats["_run"] = {"seconds": round(elapsed, 2),
                     "problems_per_s": round(sum(len(r) for r in splits.values()) / max(elapsed, 1e-9), 1),
                     "workers": cfg.workers or os.cpu_count() or 1,
                     "unseen_targets": sorted(unseen)}
    write_json(out / "config.json", asdict(cfg))
    write_json(out / "stats.json", stats)
    return stats


# ---------------------------------------------------------------------------------------
# Reading problems (ours and the published Guided-ReST layout)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_problem(rec: dict, path: str | os.PathLike, line: int) -> dict:
    """One record as ``{"nums", "target", "solution"?, "trace"?, ...}`` or a RecordError naming the file,
    line and field (``missing (expected an integer)``, ``expected an integer, got str '12'``). Nothing is
    coerced: the only change is that the published layout's ``extra_info`` fields move to the top (its
    other fields stay); a ``solution`` that is ``null`` counts as absent."""
    if "target" not in rec and isinstance(rec.get("extra_info"), dict):
        src, prefix = rec["extra_info"], "extra_info."
    else:
        src, prefix = rec, ""

    def get(name, check, expected):
        if name not in src:
            raise RecordError(path, line, prefix + name, f"missing (expected {expected})")
        value = src[name]
        if not check(value):
            shown = "" if value is None else f" {value!r:.60}"
            raise RecordError(path, line, prefix + name, f"expected {expected}, got {type_name(value)}{shown}")
        return value

    target = get("target", _is_int, "an integer")
    nums = get("nums", lambda v: isinstance(v, list) and len(v) >= 2 and all(_is_int(n) and n >= 0 for n in v),
                 "a list of at least 2 non-negative integers")
    out = {k: v for k, v in rec.items() if k != "extra_info"}
    out.update({"target": target, "nums": list(nums)})
    if src.get("solution") is None:
        out.pop("solution", None)
    else:
        out["solution"] = list(get("solution", lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                                     "a list of operation strings like '14+15=29'"))
    if "trace" in src:
        out["trace"] = get("trace", lambda v: isinstance(v, str), "a Stream-of-Search trace (a string)")
    return out


def _iter_parquet(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise RecordError(path, 0, None, "reading parquet needs pyarrow (pip install pyarrow)") from None
    for i, rec in enumerate(pq.read_table(path).to_pylist(), start=1):
        yield i, rec


def read_problems(path: str | os.PathLike, lines: list[int] | None = None) -> list[dict]:
    """Problems from a JSONL(.gz) or parquet file; errors name the file, line and field.

    ``lines``, when given, receives the 1-based line (parquet: row) of every problem, so
    later errors about a problem can name where it came from.
    """
    rows = _iter_parquet(path) if str(path).endswith(".parquet") else iter_jsonl(path)
    out = []
    for line, rec in rows:
        out.append(validate_problem(rec, path, line))
        if lines is not None:
            lines.append(line)
    return out


__all__ = ["CountdownDataConfig", "SPLITS", "split_targets", "generate_problem", "generate_splits",
           "random_trace_settings", "add_trace", "statistics", "write_splits", "read_problems",
           "validate_problem"]
