"""Ray fan-out of a search: the same VM-MCTS over many problems in one process, on 1 and on 2 Ray workers.

What is measured: ``compare-search``'s tree-search shards (``search.shard_problems`` problems each)
for the shipped tiny Countdown policy with a value head, at one token budget, made three ways
side by side in one run: in this process (``engine.workers=0``, one torch thread), and by a local
Ray cluster with 1 and with 2 actors (one CPU, one torch thread each). Workers are started and
have loaded the policy and value model before the clock starts (reported as ``startup_s``);
each repeat starts from freshly loaded generators (no prefix cache carried over) and the
fastest repeat of each is kept.
Prints one JSON line: seconds of each, the speedup of 2 workers over 1 (target >= 1.7 on this
2-core machine), Ray's overhead per shard (the round trip of an empty job through the 2-worker
pool: submitting, the pickled job, the result back) and whether all three made the same records.

    python benchmarks/ray_search.py [--problems 24] [--shard 2] [--budget 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SMOKE = Path(__file__).resolve().parents[1] / "searchrl" / "presets" / "search-smoke.yaml"


def warm(policy, value, batch_size):
    """A job that only loads what the search's shards use."""
    def job(res, start, end, advance):
        res.generator(policy, batch_size)
        res.scorer(value)
        return []

    return job


def noop(res, start, end, advance):
    return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--shard", type=int, default=2, help="problems per shard (the unit a worker takes)")
    ap.add_argument("--budget", type=int, default=400, help="generated tokens per problem")
    ap.add_argument("--method", default="vm-mcts")
    ap.add_argument("--repeats", type=int, default=1, help="timed searches per configuration (the fastest is kept)")
    args = ap.parse_args(argv)
    import ray
    import torch

    from searchrl.config import load_config
    from searchrl.models.value import ValueModel
    from searchrl.pipelines.run import Run
    from searchrl.pipelines.search import Searcher

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="ray-search-"))
    over = [f"task.n_test={args.problems}", f"search.n_problems={args.problems}",
            f"search.shard_problems={args.shard}"]
    first = Run(load_config(str(SMOKE), [f"run_dir={tmp / 'setup'}", *over]), progress=False).open()
    over.append(f"data_dir={first.ensure_data()}")
    base = first.base_model()
    value = tmp / "value"
    ValueModel.from_policy(first.load(base)[0], "scalar", seed=0).save_pretrained(value)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    seconds, records, startup = {}, {}, {}
    for name, workers in (("local", 0), ("ray_1", 1), ("ray_2", 2)):
        t0 = time.perf_counter()
        run = Run(load_config(str(SMOKE), [f"run_dir={tmp / name}", f"engine.workers={workers}",
                                           f"search.value={value}", *over]), progress=False).open()
        pool = run.workers()
        startup[name] = None
        times = []
        for r in range(args.repeats):  # each repeat into its own directory: nothing read back
            # fresh generators (no prefix cache carried over from the previous repeat), loaded before the clock
            pool.release()
            list(pool.map(warm(base, value, run.cfg.search.batch_size), [(i, i) for i in range(pool.n)]))
            if startup[name] is None:
                startup[name] = round(time.perf_counter() - t0, 1)
            searcher = Searcher(run, [args.method], policy=base, out_dir=tmp / name / f"search-{r}")
            t0 = time.perf_counter()
            out = searcher.run_method(args.method, args.budget)
            times.append(time.perf_counter() - t0)
        seconds[name] = min(times)
        records[name] = out["problems"]
        if workers == 2:
            t0 = time.perf_counter()
            list(pool.map(noop, [(i, i) for i in range(200)]))
            overhead = (time.perf_counter() - t0) / 200 * pool.n
        pool.close()
    shards = -(-args.problems // args.shard)
    print(json.dumps({
        "method": args.method, "problems": args.problems, "shards": shards, "budget_tokens": args.budget, "repeats": args.repeats,
        "local_s": round(seconds["local"], 2), "ray_1_s": round(seconds["ray_1"], 2),
        "ray_2_s": round(seconds["ray_2"], 2), "speedup_2_over_1": round(seconds["ray_1"] / seconds["ray_2"], 3),
        "speedup_2_over_local": round(seconds["local"] / seconds["ray_2"], 3),
        "overhead_per_shard_s": round(overhead, 4),
        "startup_s": startup, "same_records": records["local"] == records["ray_1"] == records["ray_2"],
        "accuracy": sum(r["correct"] for r in records["local"]) / args.problems}))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
