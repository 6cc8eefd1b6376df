"""The skeleton every self-training method runs on: iterations of collect, then train, resumable.

ReST / Guided-ReST (:mod:`.rest`), ReST-GRPO (:mod:`.rest_grpo`) and ReST-MCTS* (:mod:`.rest_mcts`)
share one shape (DESIGN.md: "one iteration of any self-training method is: sample (or search) on
a problem set, score, turn the scored trajectories into a training set, train, write a
checkpoint"). What they share lives here, once:

* the **stage** of the method's directory (what its models depend on; a rerun with other
  settings is refused, a finished one returns what it recorded);
* the **workers** that make the collection's shards (:mod:`searchrl.fanout`; by default this
  process, over the caller's loaders), released before each training so the sampler's weights
  and caches are gone when the trainer needs the memory;
* **per-iteration resume**: ``iterN/done.json`` is written last, after everything the iteration
  made; an iteration with it is skipped and its record restores the loop's state (the models it
  names), so a killed run continues where it stopped;
* **sharded collection** into the iteration's directory, keyed by what produced the shards
  (:func:`searchrl.rundir.shard_key`), so changed settings never reuse stale shards;
* paths written into the directory relative to the run directory (a copied run still works);
* the command's **trackers** (:mod:`searchrl.tracking`): each iteration's statistics (its record and
  the statistics files it wrote, :func:`iteration_stats`) at step = the iteration, and a table of
  all iterations when the loop ends.

A method supplies only what differs (:class:`Method`): which state entries are model paths,
how an iteration collects its data with the current models, and how it trains the next ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import tracking
from ..data import read_json, resumable_shards, write_json
from ..rundir import Stage, rel, resolve

DONE = "done.json"


@dataclass(frozen=True)
class Context:
    """What a self-training method gets from its caller (a :class:`~searchrl.pipelines.run.Run` makes
    one with ``Run.selftrain_context()``).

    ``load_model(path) -> (model, tokenizer)``; ``make_generator(model, tokenizer, batch_size)``;
    ``load_value(path)``: a value model as a scorer (methods that search with one); ``depends``: what
    the caller knows the run depends on (the task's data and scoring settings, the dtype and backend),
    added to the stage record; ``depends_defaults``: the values its keys had before they were recorded;
    ``workers``: where collection shards are made (default: this process, over these loaders).
    """

    task: Any
    load_model: Callable
    make_generator: Callable | None = None
    load_value: Callable | None = None
    depends: dict = field(default_factory=dict)
    depends_defaults: dict = field(default_factory=dict)
    workers: Any = None
    progress: bool = True

    def generator_factory(self) -> Callable:
        """``make_generator``, or the default engine's (``engine.backend=searchrl``)."""
        if self.make_generator is not None:
            return self.make_generator
        from ..engine.factory import make_generator

        return lambda model, tok, batch_size: make_generator(None, model, tok, batch_size)


@dataclass(frozen=True)
class Iteration:
    """One iteration: its number (1-based) and directory (``<method_dir>/iter<number>``)."""

    number: int
    dir: Path


class Method(Protocol):
    """What a self-training method supplies to :func:`run_loop`.

    ``paths``: the state entries that are model paths (``done.json`` stores them relative to the
    method directory; a resumed iteration restores them). ``start(loop, state)`` runs once before
    the first iteration (ReST-MCTS*: train V0); ``collect(loop, it, state)`` makes the iteration's
    data with the current models; ``train(loop, it, state, data)`` trains the next ones and returns
    the iteration's record (model paths through ``loop.rel``); ``resumed(loop, it, record, state)``
    takes what a finished iteration left besides its models; ``summary(loop, state, last)`` is what
    the finished stage records.
    """

    paths: tuple[str, ...]

    def start(self, loop: Loop, state: dict) -> None: ...

    def collect(self, loop: Loop, it: Iteration, state: dict) -> Any: ...

    def train(self, loop: Loop, it: Iteration, state: dict, data: Any) -> dict: ...

    def resumed(self, loop: Loop, it: Iteration, record: dict, state: dict) -> None: ...

    def summary(self, loop: Loop, state: dict, last: Path) -> dict: ...


class MethodBase:
    """Defaults for the optional hooks of :class:`Method`."""

    paths: tuple[str, ...] = ("model",)

    def start(self, loop: Loop, state: dict) -> None:
        return None

    def resumed(self, loop: Loop, it: Iteration, record: dict, state: dict) -> None:
        return None

    def summary(self, loop: Loop, state: dict, last: Path) -> dict:
        return {k: loop.rel(state[k]) for k in self.paths}


class Loop:
    """A method's directory, stage, workers and progress: what its hooks use (see module doc).

    ``settings``: what the method's output depends on besides ``ctx.depends``; ``run_root``: paths
    inside it are written relative (default: the method directory's parent, the run directory).
    """

    def __init__(self, ctx: Context, method_dir: str | os.PathLike, settings: dict, name: str,
                 defaults: dict | None = None, run_root: str | os.PathLike | None = None):
        self.ctx = ctx
        self.dir = Path(method_dir)
        self.root = Path(run_root) if run_root is not None else self.dir.parent
        self.stage = Stage(self.dir, {**settings, **ctx.depends}, name=name,
                           defaults={**(defaults or {}), **ctx.depends_defaults})
        self._workers = ctx.workers

    @property
    def task(self):
        return self.ctx.task

    @property
    def progress(self) -> bool:
        return self.ctx.progress

    @property
    def workers(self):
        if self._workers is None:
            from ..fanout import local_workers

            self._workers = local_workers(self.ctx.task, self.ctx.load_model, self.ctx.generator_factory(),
                                          self.ctx.load_value)
        return self._workers

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` as the method directory's records store it (relative inside the run directory)."""
        return rel(self.dir, path, self.root)

    def resolve(self, stored: str | os.PathLike) -> Path:
        """A path the method directory's records store, as a path to load (``iter1/../sft/final``
        normalised: a model's recorded ``_name_or_path`` should not depend on how it was reached)."""
        return Path(os.path.normpath(resolve(self.dir, stored)))

    def shards(self, it: Iteration, subdir: str, key: str, n: int, shard_size: int, produce: Callable, *,
               desc: str, per_item: int = 1, unit: str = "problem", prefix: str = "") -> list[dict]:
        """The iteration's collection: ``n`` items in resumable shards of ``shard_size``, made by
        ``produce(resources, start, end, advance)`` on the workers, into
        ``<iter>/<subdir>/<key>/<prefix>SSSSSS-EEEEEE.jsonl``; then the workers' models are released."""
        recs = resumable_shards(n, shard_size, lambda s, e: it.dir / subdir / key / f"{prefix}{s:06d}-{e - 1:06d}.jsonl",
                                produce, desc=f"{self.dir.name} iter {it.number} {desc}", progress=self.progress,
                                per_item=per_item, unit=unit, workers=self.workers)
        self.workers.release()  # the sampler's (and value model's) weights and caches, before training
        return recs


def run_loop(loop: Loop, method: Method, iterations: int, state: dict) -> dict:
    """Run (or resume) ``iterations`` iterations of ``method`` from ``state`` (the models entering the
    first iteration, by the names in ``method.paths``); returns what the finished stage recorded."""
    loop.stage.check()
    if loop.stage.done:
        return loop.stage.info()
    loop.stage.begin()
    with tracking.start(loop.dir, config=loop.stage.depends, kind="selftrain") as tracker:
        method.start(loop, state)
        last, rows = loop.dir, []
        for n in range(1, iterations + 1):
            it = Iteration(n, loop.dir / f"iter{n}")
            done = it.dir / DONE
            if done.exists():
                record = read_json(done)
                method.resumed(loop, it, record, state)
            else:
                record = method.train(loop, it, state, method.collect(loop, it, state))
                write_json(done, record)  # last: the iteration is trusted from here on
            state.update({k: loop.resolve(record[k]) for k in method.paths if k in record})
            last = it.dir
            if tracker.enabled:
                stats = iteration_stats(it, record)
                tracker.log_metrics(tracking.flat_numbers(stats), step=n)
                rows.append({"iteration": n, **stats})
        tracker.log_table("iterations", rows)
    loop.stage.finish(**method.summary(loop, state, last))
    return loop.stage.info()


def iteration_stats(it: Iteration, record: dict) -> dict:
    """What the trackers show of a finished iteration: its record (``done.json``) and the statistics files it
    wrote at its top level (ReST's ``gen_stats.json``, ReST-GRPO's ``assembly.json``, ReST-MCTS*'s
    ``stats.json``), each key under its file's name (``gen_stats/kept_fraction``)."""
    stats = dict(record)
    for path in sorted(it.dir.glob("*.json")):
        if path.name != DONE:
            data = read_json(path)
            if isinstance(data, dict):
                stats.update({f"{path.stem}/{k}": v for k, v in data.items()})
    return stats


def read_records(method_dir: str | os.PathLike, name: str = DONE) -> list[dict]:
    """A file of every finished iteration (``iterN/<name>``), in iteration order."""
    paths = Path(method_dir).glob(f"iter*/{name}")
    return [read_json(p) for p in sorted(paths, key=lambda p: int(p.parent.name[4:]))]


__all__ = ["Context", "Iteration", "Loop", "Method", "MethodBase", "run_loop", "read_records", "iteration_stats",
           "DONE"]
