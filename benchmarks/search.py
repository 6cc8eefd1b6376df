"""Tree-search speed with and without the sampler's prefix cache, in one run.

VM-MCTS (ReST-RL Algorithm 3) and MCTS* (ReST-MCTS*) on ``--problems`` Countdown problems
(the demo's testbed: numbers 1..19, targets 10..59) with the shipped Stream-of-Search policy
(``builtin:sos-tiny-base``) and a value model on its backbone (``--value``, default: an
untrained head on the policy's weights; speed does not depend on what the values are). Each
search runs with ``Sampler(prefix_cache=True)`` and ``Sampler(prefix_cache=False)``, same seeds,
``--repeats`` times interleaved, and the fastest run of each counts (a shared machine has busy
moments). Reported per search: nodes expanded per second, generated tokens per second,
whether both settings chose the same responses, and ``ratio_prefix_reuse`` = time without the
cache / time with it (same work).

The last line of output is one JSON object; its ``ratio_prefix_reuse`` is the smaller of the two
searches' ratios (target >= 3).

    python benchmarks/search.py                 # ~3 min on 2 cores, 1 thread
    python benchmarks/search.py --problems 8 --iterations 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def build(args):
    import torch

    from searchrl.models import load_policy, resolve_model_path
    from searchrl.models.value import ValueModel
    from searchrl.tasks import make_task
    from searchrl.tasks.countdown import CountdownConfig

    torch.set_num_threads(args.threads)
    policy, tok = load_policy(str(resolve_model_path(args.model)))
    if args.value:
        value = ValueModel.from_pretrained(args.value).eval()
    else:
        backbone, _ = load_policy(str(resolve_model_path(args.model)))
        torch.manual_seed(0)
        value = ValueModel.from_policy(backbone, "scalar").eval()
    task = make_task(CountdownConfig(n_train=10, n_selftrain=0, n_valid=0, n_valid_unseen=0, n_test=args.problems,
                                     min_target=10, max_target=59, max_number=19, workers=1),
                     tempfile.mkdtemp(prefix="searchrl-bench-"))
    task.prepare(progress=False)
    return policy, tok, value, task, task.problems("test_seen")[: args.problems]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:sos-tiny-base")
    ap.add_argument("--value", default="", help="a trained value model directory (default: untrained head)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=8, help="iterations of each search")
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from searchrl.engine import Sampler
    from searchrl.search.config import MCTSStarConfig, VMMCTSConfig
    from searchrl.search.mcts_star import mcts_star
    from searchrl.search.vm_mcts import vm_mcts

    policy, tok, value, task, problems = build(args)
    searches = {
        "vm_mcts": (vm_mcts, VMMCTSConfig(iterations=args.iterations, max_tokens=args.max_tokens),
                    lambda r: r.meta["nodes"]),
        "mcts_star": (mcts_star, MCTSStarConfig(iterations=args.iterations, max_tokens=args.max_tokens),
                      lambda r: len(r.meta["tree"].nodes)),
    }
    out = {"problems": len(problems), "iterations": args.iterations, "threads": args.threads}
    ratios = []
    for name, (fn, cfg, nodes_of) in searches.items():
        best = {True: None, False: None}
        chosen = {}
        for _ in range(args.repeats):
            for cache in (True, False):
                gen = Sampler(policy, tok, max_batch_size=args.batch, prefix_cache=cache)
                t0 = time.perf_counter()
                results = fn(gen, value, task, problems, cfg)
                dt = time.perf_counter() - t0
                if best[cache] is None or dt < best[cache][0]:
                    best[cache] = (dt, results, dict(gen.stats))
                chosen[cache] = [r.response for r in results]
        t_on, res, stats = best[True]
        t_off = best[False][0]
        nodes = sum(nodes_of(r) for r in res)
        tokens = sum(r.generated_tokens for r in res)
        ratio = t_off / t_on
        ratios.append(ratio)
        out[name] = {"seconds_cache": round(t_on, 2), "seconds_no_cache": round(t_off, 2),
                     "nodes": nodes, "generated_tokens": tokens,
                     "nodes_per_s": round(nodes / t_on, 1), "nodes_per_s_no_cache": round(nodes / t_off, 1),
                     "tokens_per_s": round(tokens / t_on, 1), "tokens_per_s_no_cache": round(tokens / t_off, 1),
                     "prefill_tokens": stats.get("prefill_tokens"), "cached_tokens": stats.get("cached_tokens"),
                     "same_responses": chosen[True] == chosen[False], "ratio_prefix_reuse": round(ratio, 2)}
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    out["ratio_prefix_reuse"] = round(min(ratios), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
