"""Fan-out: the same shards of problems, made in this process or by a pool of Ray actors.

Every long loop over problems in searchrl — self-training generation (ReST, Guided-ReST,
ReST-GRPO sampling, ReST-MCTS* data collection), evaluation, value-data making and every
search of ``compare-search`` — is :func:`searchrl.data.resumable_shards`: problems
``[start, end)`` at a time, each shard written atomically to the run directory. A shard is
made by a *job*, ``job(resources, start, end, advance) -> records``, which takes the task,
the policy's generator and value models from its :class:`Resources` instead of capturing
them, so the same job runs

- here (:class:`LocalWorkers`, the default): shards one after another, with the generators
  the caller's own loaders build; or
- on a pool of Ray actors (:class:`RayWorkers`, ``engine.workers=N``, ``pip install
  'searchrl[ray]'``): each actor builds its own :class:`Resources` once (a generator per
  policy, value models by path, loaded where the actor runs: its CPU or GPU) and takes the
  next missing shard as soon as it finishes one. The driver writes each shard as it
  arrives, so a crash loses only the shards in flight and a rerun (with any number of
  workers) makes only the missing ones.

Results do not depend on where a shard is made: every random choice is seeded by name
(problem index, sample index; :func:`searchrl.seeding.stable_seed`), the shards are the
same spans whatever the number of workers, and our sampler's samples do not depend on their
batch companions. ``tests/test_fanout.py`` checks that 2 Ray workers write byte-identical
shards to a single process.

Multi-node: start Ray on each machine (``ray start --head`` on one, ``ray start --address
HEAD:6379`` on the others), put the run directory on a filesystem every node mounts at the
same path, and run any command with ``engine.workers=N engine.ray_address=auto`` (add
``engine.gpus_per_worker=1`` to give each actor a GPU).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Span = tuple[int, int]
Job = Callable[..., list[dict]]  # job(resources, start, end, advance) -> records


class Resources:
    """What a job reads: the task, a generator per policy, value models by path; each loaded once.

    ``load_generator(policy, batch_size)`` and ``load_scorer(path)`` build them on first use;
    a process holds one policy's generator at a time (asking for another frees the first), so
    a worker that moves to the next self-training iteration does not keep the old weights.
    ``generator`` (with no loader) is a fixed generator handed in by a caller that already
    has one: every policy name then gets it.
    """

    def __init__(self, task: Any = None, load_generator: Callable | None = None,
                 load_scorer: Callable | None = None, generator: Any = None):
        self.task = task
        self._load_generator = load_generator
        self._load_scorer = load_scorer
        self._fixed = generator
        self._generators: dict[tuple[str, int], Any] = {}
        self._scorers: dict[str, Any] = {}

    def generator(self, policy: str | os.PathLike | None = None, batch_size: int = 64):
        if self._load_generator is None or policy is None:
            if self._fixed is None:
                raise ValueError("these resources hold no generator: give load_generator (or a generator)")
            return self._fixed
        key = (os.path.abspath(policy), int(batch_size))
        if key not in self._generators:
            self._generators.clear()
            self._generators[key] = self._load_generator(policy, batch_size)
        return self._generators[key]

    def scorer(self, path: str | os.PathLike):
        if self._load_scorer is None:
            raise ValueError("these resources load no value model: give load_scorer")
        key = os.path.abspath(path)
        if key not in self._scorers:
            self._scorers[key] = self._load_scorer(path)
        return self._scorers[key]

    def release(self) -> None:
        """Drop the loaded generators and value models (before training reuses the memory)."""
        self._generators.clear()
        self._scorers.clear()


class LocalWorkers:
    """Shards one after another in this process (the default)."""

    n = 1

    def __init__(self, resources: Resources | None = None):
        self.resources = resources if resources is not None else Resources()

    def map(self, job: Job, spans: Iterable[Span], advance: Callable[[Span, int], None] | None = None
            ) -> Iterator[tuple[Span, list[dict]]]:
        for span in spans:
            step = (lambda k, span=span: advance(span, k)) if advance is not None else (lambda k: None)
            yield span, job(self.resources, span[0], span[1], step)

    def release(self) -> None:
        self.resources.release()

    def close(self) -> None:
        self.release()


def local_workers(task: Any, load_model: Callable, make_generator: Callable,
                  load_scorer: Callable | None = None) -> LocalWorkers:
    """Workers in this process over a trainer's loaders: ``load_model(path) -> (model, tokenizer)``,
    ``make_generator(model, tokenizer, batch_size)``, ``load_scorer(path)``."""
    return LocalWorkers(Resources(task, lambda path, bs: make_generator(*load_model(path), bs), load_scorer))


def as_workers(source: Any, task: Any = None) -> LocalWorkers | RayWorkers:
    """``source`` if it is already workers, else local workers over the generator ``source``."""
    if isinstance(source, (LocalWorkers, RayWorkers)):
        return source
    return LocalWorkers(Resources(task, generator=source))


class _Actor:
    """One Ray actor: its own :class:`Resources`, built once by ``make_resources()``."""

    def __init__(self, make_resources: Callable[[], Resources], cwd: str):
        os.chdir(cwd)  # the driver's relative run-directory paths mean the same here
        self.resources = make_resources()

    def run(self, job: Job, start: int, end: int) -> list[dict]:
        return job(self.resources, start, end, lambda k: None)

    def release(self) -> None:
        self.resources.release()

    def ready(self) -> bool:
        return True


_POOLS: weakref.WeakSet = weakref.WeakSet()


def close_all() -> None:
    """Stop every Ray worker pool this process started (the CLI calls it as a command ends)."""
    for pool in list(_POOLS):
        pool.close()


class RayWorkers:
    """``n`` Ray actors, each with ``cpus`` CPUs and ``gpus`` GPUs, making shards as they free up.

    ``make_resources`` is a picklable function that builds a worker's :class:`Resources`
    (:func:`searchrl.pipelines.run.worker_resources` for a run's config). Ray is started
    here unless it already is: ``address`` empty = a local Ray with ``n * cpus`` CPUs,
    ``"auto"`` or ``HOST:PORT`` = a running cluster (``ray start``).
    """

    def __init__(self, make_resources: Callable[[], Resources], n: int, address: str = "",
                 cpus: float = 1.0, gpus: float = 0.0):
        try:
            import ray
        except ImportError:
            raise ImportError("engine.workers > 0 fans work out over Ray actors: pip install 'searchrl[ray]'") from None
        if n < 1:
            raise ValueError(f"RayWorkers needs n >= 1 workers, got {n}")
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, round(n * cpus)), include_dashboard=False, log_to_driver=False)
        self._ray = ray
        self.n = n
        actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Actor)
        self.actors = [actor.remote(make_resources, os.getcwd()) for _ in range(n)]
        _POOLS.add(self)
        ray.get([a.ready.remote() for a in self.actors])  # fail here if a worker cannot build its resources

    def map(self, job: Job, spans: Iterable[Span], advance: Callable[[Span, int], None] | None = None
            ) -> Iterator[tuple[Span, list[dict]]]:
        """Each span's records as it finishes (completion order); one shard in flight per actor."""
        ray = self._ray
        queue = list(spans)
        if not queue:
            return
        if not self.actors:
            raise RuntimeError("this worker pool was closed")
        ref = ray.put(job)
        idle = list(self.actors)
        pending: dict[Any, tuple[Any, Span]] = {}
        try:
            while queue or pending:
                while queue and idle:
                    actor, span = idle.pop(), queue.pop(0)
                    pending[actor.run.remote(ref, *span)] = (actor, span)
                (done,), _ = ray.wait(list(pending), num_returns=1)
                actor, span = pending.pop(done)
                idle.append(actor)
                yield span, ray.get(done)
        finally:
            for r in pending:  # an error or Ctrl-C: nothing left running for a shard nobody will write
                try:
                    ray.cancel(r)
                except Exception:  # already finished, or the actor is gone
                    pass

    def release(self) -> None:
        self._ray.get([a.release.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
        _POOLS.discard(self)
