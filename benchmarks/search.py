"""Tree-search speed against flat sampling, and with and without the sampler's prefix cache, in one run.

VM-MCTS (ReST-RL Algorithm 3), MCTS* (ReST-MCTS*), VGS block beam search and DVTS on ``--problems`` Countdown problems
(the demo's testbed: numbers 1..19, targets 10..59) with the shipped Stream-of-Search policy
(``builtin:sos-tiny-base``) and a value model on its backbone (``--value``, default: an
untrained head on the policy's weights; speed does not depend on what the values are). Each
search runs with ``Sampler(prefix_cache=True)`` and ``Sampler(prefix_cache=False)``, same seeds,
``--repeats`` times interleaved, and the fastest run of each counts (a shared machine has busy
moments). Reported per search: nodes expanded per second, generated tokens per second,
whether both settings chose the same responses, and ``ratio_prefix_reuse`` = time without the
cache / time with it (same work; the tree searches VM-MCTS and MCTS* only).

**Efficiency against flat sampling**: best-of-N on the same model and problems, in the same run
(``--flat-samples`` samples per problem in one ``generate`` call at the search's temperature and
response limit, each sample then scored by the value model as BoN with a value model does), its
generated tokens per second against each search's (search time includes its value calls and its
tree code, as flat's includes its scoring): ``efficiency_vs_flat`` per search = search tokens/s /
flat tokens/s, and at the top level the minimum over the searches (target >= 0.8).
Beam and DVTS run with a 3-class head (VGS), the MCTS searches with a scalar one.

The last line of output is one JSON object; its ``ratio_prefix_reuse`` is the smaller of the two
MCTS searches' ratios (target >= 3).

    python benchmarks/search.py                 # about 6 min on 2 cores, 1 thread
    python benchmarks/search.py --problems 8 --iterations 4 --repeats 1
"""

from __future__ import annotations

import argparse
import dataclasses
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
        value = ValueModel.from_policy(backbone, "scalar", seed=0).eval()
    backbone, _ = load_policy(str(resolve_model_path(args.model)))
    classifier = ValueModel.from_policy(backbone, "3class", seed=0).eval()
    task = make_task(CountdownConfig(n_train=10, n_selftrain=0, n_valid=0, n_valid_unseen=0, n_test=args.problems,
                                     min_target=10, max_target=59, max_number=19, workers=1),
                     tempfile.mkdtemp(prefix="searchrl-bench-"))
    task.prepare(progress=False)
    return policy, tok, value, classifier, task, task.problems("test_seen")[: args.problems]


def flat(gen, scorer, tok, task, problems, n: int, cfg) -> tuple[float, int]:
    """Best-of-N sampling on the same problems: seconds and generated tokens (generate + value scores)."""
    from searchrl.engine import SamplingParams
    from searchrl.search.common import TokenCounter, generate_counted, problem_prompts, request_seed, score_counted

    t0 = time.perf_counter()
    prompts = problem_prompts(tok, task, problems)
    counter = TokenCounter.zeros(len(problems))
    params = [SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                             seed=request_seed(cfg.seed, i, "flat")) for i in range(len(problems))]
    outs = generate_counted(gen, prompts, params, list(range(len(problems))), counter)
    states = [(p, list(c.token_ids)) for p, o in enumerate(outs) for c in o.outputs]
    score_counted(scorer, [prompts[p] for p, _ in states], [s for _, s in states], [p for p, _ in states], counter)
    return time.perf_counter() - t0, sum(counter.generated)


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
    ap.add_argument("--flat-samples", type=int, default=8, help="best-of-N samples per problem (flat reference)")
    ap.add_argument("--searches", default="vm_mcts,mcts_star,beam,dvts", help="comma-separated subset")
    args = ap.parse_args()

    from searchrl.engine import Sampler
    from searchrl.search.beam import beam_search
    from searchrl.search.config import BeamConfig, MCTSStarConfig, VMMCTSConfig
    from searchrl.search.mcts_star import mcts_star
    from searchrl.search.vm_mcts import vm_mcts

    policy, tok, value, classifier, task, problems = build(args)
    beam = BeamConfig(max_tokens=args.max_tokens)
    searches = {  # name: (search, settings, scorer, nodes of a result or None, timed without the cache too)
        "vm_mcts": (vm_mcts, VMMCTSConfig(iterations=args.iterations, max_tokens=args.max_tokens), value,
                    lambda r: r.meta["nodes"], True),
        "mcts_star": (mcts_star, MCTSStarConfig(iterations=args.iterations, max_tokens=args.max_tokens), value,
                      lambda r: len(r.meta["tree"].nodes), True),
        "beam": (beam_search, beam, classifier, None, False),
        "dvts": (beam_search, dataclasses.replace(beam, reps=2), classifier, None, False),
    }
    wanted = [w for w in args.searches.split(",") if w]
    if set(wanted) - set(searches):
        ap.error(f"unknown searches {sorted(set(wanted) - set(searches))}")
    out = {"problems": len(problems), "iterations": args.iterations, "threads": args.threads,
           "flat_samples": args.flat_samples}
    ratios, efficiency = [], []
    for name in wanted:
        fn, cfg, scorer, nodes_of, both = searches[name]
        best = {True: None, False: None}
        chosen = {}
        flat_best = None
        for _ in range(args.repeats):
            for cache in (True, False) if both else (True,):
                gen = Sampler(policy, tok, max_batch_size=args.batch, prefix_cache=cache)
                t0 = time.perf_counter()
                results = fn(gen, scorer, task, problems, cfg)
                dt = time.perf_counter() - t0
                if best[cache] is None or dt < best[cache][0]:
                    best[cache] = (dt, results, dict(gen.stats))
                chosen[cache] = [r.response for r in results]
            gen = Sampler(policy, tok, max_batch_size=args.batch)  # flat best-of-N, interleaved with the search
            f_s, f_tok = flat(gen, scorer, tok, task, problems, args.flat_samples, cfg)
            if flat_best is None or f_s < flat_best[0]:
                flat_best = (f_s, f_tok)
        t_on, res, stats = best[True]
        tokens = sum(r.generated_tokens for r in res)
        eff = (tokens / t_on) / (flat_best[1] / flat_best[0])
        efficiency.append(eff)
        out[name] = {"seconds_cache": round(t_on, 2), "generated_tokens": tokens,
                     "tokens_per_s": round(tokens / t_on, 1),
                     "prefill_tokens": stats.get("prefill_tokens"), "cached_tokens": stats.get("cached_tokens"),
                     "flat_seconds": round(flat_best[0], 2), "flat_tokens": flat_best[1],
                     "flat_tokens_per_s": round(flat_best[1] / flat_best[0], 1), "efficiency_vs_flat": round(eff, 3)}
        if nodes_of is not None:
            out[name]["nodes"] = nodes = sum(nodes_of(r) for r in res)
            out[name]["nodes_per_s"] = round(nodes / t_on, 1)
        if both:
            t_off = best[False][0]
            ratios.append(t_off / t_on)
            out[name].update(seconds_no_cache=round(t_off, 2), tokens_per_s_no_cache=round(tokens / t_off, 1),
                             same_responses=chosen[True] == chosen[False], ratio_prefix_reuse=round(t_off / t_on, 2))
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    if ratios:
        out["ratio_prefix_reuse"] = round(min(ratios), 2)
    out["efficiency_vs_flat"] = round(min(efficiency), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
