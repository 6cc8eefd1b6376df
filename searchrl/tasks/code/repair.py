"""Code self-repair feedback: what the user says after each attempt (Guided-ReST, seed 001).

Why: Guided-ReST's second domain is multi-turn code self-repair (the paper's "Application to
code self-repair"; the published ``recipe/code_repair/main_gen.py``). After every assistant turn
the code (the last fenced block) runs on the problem's **public** tests and the next user turn
reports the result, in the published recipe's words:

* no code block: ``"No code found. Please output your final code."``;
* no public tests: the "No test cases found ..." message (the episode goes on);
* all public tests pass: the "Congratulations! ..." message, and the episode is **done** (the
  multi-turn loop stops it; the message is never shown);
* otherwise "Here are the results on the public test cases:", one block per failed test
  (``### Test i failed`` then ``Input:``, ``Expected:``, ``Output:`` and ``Error message:``, each
  field truncated to 300 characters, 150 from each end, :func:`truncate`), then the request to
  revise.

The score of an episode uses **all** tests (:meth:`CodeTask.score`); only the feedback is limited
to the public ones. The public tests are the problem's ``public_tests`` (stdin/stdout suites: those
whose inputs appear in the statement, else the first 2, :func:`~searchrl.tasks.code.suites.load_stdio`;
synthetic problems: the first ``task.n_public``).

Error messages follow LiveCodeBench's words (the harness of the published recipe): ``Wrong
Answer``, ``Time Limit Exceeded``, ``Memory Limit Exceeded``, or the exception (``Runtime Error:
ZeroDivisionError: ...``; a program that does not even start reports its last line of stderr).

:func:`repair_demonstration` makes the two-turn SFT demonstrations that give a model trained from
scratch its first self-repair skill (the paper starts from Qwen2.5-7B-Instruct, which has it):
a wrong first attempt (the reference with one step mutated), the feedback on it, the reference.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .harness import cases_program, outcome_rows, run_responses
from .sandbox import Program, Result

TRUNCATE = 300
NO_CODE = "No code found. Please output your final code."
NO_TESTS = ("No test cases found. Please review your solution once more for correctness and efficiency, then output "
            "your final code if you're confident it's optimal.")
PASSED = ("Congratulations! You've successfully passed all test cases. Please carefully review your solution one more "
          "time to ensure it handles all edge cases properly. If you're confident your code is optimal, you can proceed "
          "with outputting your final solution.")
FAILED_HEAD = "Here are the results on the public test cases:"
FAILED_TAIL = ("Some test cases are still failing. Please carefully analyze the error patterns, revise your code to "
               "address these issues, and ensure your solution handles all the test cases correctly. Then, output "
               "your final code.")
ELLIPSIS = "...(truncated) ..."
#: the fixed pieces of the feedback: single tokens of the code tokenizer of a self-repair model
#: (:meth:`CodeTask.tokenizer` with ``task.repair_demos > 0``); none holds a newline but at its end
PHRASES = [NO_CODE, NO_TESTS, PASSED, FAILED_HEAD, FAILED_TAIL, ELLIPSIS, "### Test ", " failed\n", "Input: ",
           "Expected: ", "Output: ", "Error message: ", "Wrong Answer", "Time Limit Exceeded",
           "Memory Limit Exceeded", "Runtime Error: ", "None"]


def truncate(s: str, length: int = TRUNCATE) -> str:
    """``s`` if it is at most ``length`` characters, else its first and last ``length // 2`` around
    ``"...(truncated) ..."`` (the published recipe's rule)."""
    if len(s) <= length:
        return s
    return s[: length // 2] + ELLIPSIS + s[-(length // 2):]


@dataclass(frozen=True)
class Outcome:
    """One public test run: what went in, what was expected, what came out (``None``: nothing),
    the error message (``None`` when it passed), whether it passed."""

    input: str
    expected: str
    output: str | None
    error: str | None
    passed: bool


@dataclass(frozen=True)
class Feedback:
    """The next user message after an attempt, and whether the episode is done (all public tests passed)."""

    message: str
    done: bool


def feedback(outcomes: Sequence[Outcome] | None) -> Feedback:
    """The user message for an attempt's public-test outcomes (``None``: the response had no code)."""
    if outcomes is None:
        return Feedback(NO_CODE, False)
    if not outcomes:
        return Feedback(NO_TESTS, False)
    blocks = [f"### Test {i} failed\nInput: {truncate(o.input)}\nExpected: {truncate(o.expected)}\n"
              f"Output: {truncate(str(o.output))}\nError message: {truncate(str(o.error))}"
              for i, o in enumerate(outcomes, 1) if not o.passed]
    if not blocks:
        return Feedback(PASSED, True)
    return Feedback(f"{FAILED_HEAD}\n\n" + "\n".join(blocks) + f"\n\n{FAILED_TAIL}", False)


def _failure(r: Result) -> str:
    if r.status == "timeout":
        return "Time Limit Exceeded"
    if r.status == "memory":
        return "Memory Limit Exceeded"
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return f"Runtime Error: {lines[-1].strip()}" if lines else "Runtime Error"


def function_outcomes(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                      memory_mb: int = 1024, workers: int | None = None) -> list[list[Outcome] | None]:
    """Public-test outcomes of function problems (``entry_point`` called on each input; APPS' call-based
    problems: ``fn_name`` called as APPS calls it): one sandboxed program per response with code (the
    harness's ``outcomes`` report, :func:`~searchrl.tasks.code.harness.cases_program`); ``None`` for a
    response without code."""
    marker = secrets.token_hex(8)

    def programs(p: dict, code: str) -> list[Program]:
        if not p["public_tests"]:
            return []
        if "fn_name" in p:
            return [Program(cases_program(code, p["fn_name"], p["public_tests"], marker, report="outcomes",
                                          call="apps"))]
        return [Program(cases_program(code, p["entry_point"], p["public_tests"], marker, report="outcomes"))]

    def judge(p: dict, code: str, results: list[Result]) -> list[Outcome]:
        tests = p["public_tests"]
        if not tests:
            return []
        [r] = results
        rows = outcome_rows(r.stdout, marker, len(tests)) if r.status == "ok" else None
        if rows is None:  # it never got to the tests (syntax error, crash, timeout): every test failed
            why = _failure(r) if r.status != "ok" else "Runtime Error: the program did not report its results"
            return [Outcome(repr(t["input"]), repr(t["output"]), None, why, False) for t in tests]
        return [Outcome(repr(t["input"]), repr(t["output"]), got, err if err or passed else "Wrong Answer", passed)
                for t, (passed, got, err) in zip(tests, rows)]

    return run_responses(problems, codes, programs, judge, lambda p: None, timeout=timeout, memory_mb=memory_mb,
                         workers=workers)


def stdio_outcomes(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                   memory_mb: int = 1024, workers: int | None = None) -> list[list[Outcome] | None]:
    """Public-test outcomes of stdin/stdout problems: one sandboxed run per public test."""
    from .suites import outputs_match, stdin_programs

    def judge(p: dict, code: str, results: list[Result]) -> list[Outcome]:
        rows = []
        for t, r in zip(p["public_tests"], results):
            passed = r.status == "ok" and outputs_match(r.stdout, t["output"])
            error = None if passed else ("Wrong Answer" if r.status == "ok" else _failure(r))
            rows.append(Outcome(t["input"], t["output"], r.stdout, error, passed))
        return rows

    return run_responses(problems, codes, lambda p, c: stdin_programs(p, c, "public_tests"), judge, lambda p: None,
                         timeout=timeout, memory_mb=memory_mb, workers=workers)


def mutated_steps(family: str, steps: list[tuple[str, Any]], public_tests: Sequence[dict],
                  rng: random.Random, tries: int = 20) -> list[tuple[str, Any]] | None:
    """The steps with one of them changed (another constant, or another kind of the same finality)
    so that at least one public test fails; ``None`` when ``tries`` draws found none."""
    from .synthetic import BY_KIND, OPS, run_steps

    for _ in range(tries):
        i = rng.randrange(len(steps))
        kind, k = steps[i]
        op = BY_KIND[family][kind]
        if op.const is not None and rng.random() < 0.5:
            new = (kind, op.const(rng))
        else:
            pool = [o for o in OPS[family] if o.final == op.final and o.kind != kind]
            o = rng.choice(pool)
            new = (o.kind, o.const(rng) if o.const else None)
        cand = steps[:i] + [new] + steps[i + 1:]
        try:
            if any(run_steps(family, cand, t["input"]) != t["output"] for t in public_tests):
                return cand
        except Exception:  # noqa: BLE001 - a mutation our own implementation cannot run is skipped
            continue
    return None


def repair_demonstration(problem: dict[str, Any], rng: random.Random) -> list[dict[str, str]] | None:
    """A two-turn SFT demonstration for a synthetic problem: ``[assistant: a wrong attempt, user: its
    feedback, assistant: the reference]`` (``None`` when no mutation fails a public test).

    The attempt's outputs are computed by our trusted implementation of the steps, never by running
    its text; the feedback is formatted exactly as the sandboxed harness's would be (tested)."""
    from .synthetic import run_steps, solution

    family = problem["family"]
    steps = [(kind, tuple(k) if isinstance(k, list) else k) for kind, k in problem["steps"]]
    wrong = mutated_steps(family, steps, problem["public_tests"], rng)
    if wrong is None:
        return None
    outcomes = []
    for t in problem["public_tests"]:
        got = run_steps(family, wrong, t["input"])
        passed = got == t["output"]
        outcomes.append(Outcome(repr(t["input"]), repr(t["output"]), repr(got), None if passed else "Wrong Answer",
                                passed))
    return [{"role": "assistant", "content": solution(family, wrong)},
            {"role": "user", "content": feedback(outcomes).message},
            {"role": "assistant", "content": problem["solution"]}]


__all__ = ["Outcome", "Feedback", "feedback", "truncate", "function_outcomes", "stdio_outcomes",
           "mutated_steps", "repair_demonstration", "PHRASES", "NO_CODE", "NO_TESTS", "PASSED", "FAILED_HEAD",
           "FAILED_TAIL", "TRUNCATE"]
