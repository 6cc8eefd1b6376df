"""How a response's code is run on a problem's tests: the one sandboxed-grading loop and the one harness.

Why: grading (:meth:`CodeTask.score`, the suites of :mod:`searchrl.tasks.code.suites`) and self-repair
feedback (:mod:`searchrl.tasks.code.repair`) all do the same thing: turn every response that has code
into sandboxed programs, run them all in **one** batch (:func:`~searchrl.tasks.code.sandbox.run_batch`,
so the programs of a whole ``score`` call share the worker pool), then read each response's results.
:func:`run_responses` is that loop; a grader says only which programs a response becomes and what its
results mean, so a new way of grading is two small functions, not another copy of the loop.

Function problems (synthetic; any problem with an ``entry_point`` and tests of ``input`` / ``output``
values) are checked by one harness, :func:`cases_program`: the response's code, then a function that
calls ``entry_point`` on each test's input and prints a random marker followed by its report. The
report is either a digit per test (``report="passed"``, what grading reads: :func:`passed_cases`) or,
for feedback, a JSON list of ``[passed, repr(value), error]`` per test (``report="outcomes"``:
:func:`outcome_rows`). Both reports come from the same loop and the same comparison (``got == want``
inside one ``try``), so a test that grading passes is one that feedback reports passed.

APPS' call-based problems (``fn_name``) use the same harness with ``call="apps"``: the function (a method
of a ``Solution`` class when the code defines one with that name, LeetCode's form, else the module's
function) is called with the test's input list spread as arguments, and its value compared as APPS'
own ``testing_util`` does: a tuple counts as a list, and the expected value also matches when it is a
non-empty list whose first item equals the value (APPS stores most outputs wrapped in a list).
MBPP's tests are assert statements (:func:`asserts_program`): the setup code, the response's code,
then each assert run in turn, the same ``passed`` report of one digit per assert.

Reward hacking: code that inspects the harness's frame could forge the report. A policy trained here
never sees the harness, so this is a documented limit, not a defence.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .sandbox import Program, Result, run_batch

T = TypeVar("T")

#: what the harness records per test, by report: (setup lines, the entry on a value ``got``, the entry on an
#: exception ``e``, the printed report of the list ``out``)
REPORTS = {
    "passed": ("", "'1' if {same} else '0'", "'0'", "''.join(out)"),
    "outcomes": ("    import json\n", "[bool({same}), repr(got)[:4000], None]",
                 "[False, None, 'Runtime Error: ' + type(e).__name__ + ': ' + str(e)[:1000]]", "json.dumps(out)"),
}
#: APPS' call-based comparison and function lookup (see the module doc), defined before the check
APPS_HELPERS = """
def __searchrl_function(name):
    cls = globals().get('Solution')
    if isinstance(cls, type) and hasattr(cls, name):
        return getattr(cls(), name)
    return globals()[name]


def __searchrl_same(got, want):
    if isinstance(got, tuple):
        got = list(got)
    if got == want:
        return True
    if isinstance(want, list) and want:
        if got == want[0]:
            return True
        try:
            return isinstance(got[0], tuple) and [list(x) for x in got] == want[0]
        except Exception:
            return False
    return False

"""
#: how the harness calls the function and compares, by ``call``: (definitions placed before the check, the call
#: of ``entry`` on a test's input ``arg``, the comparison of ``got`` with ``want``)
CALLS = {
    "plain": ("", "{entry}(arg)", "got == want"),
    "apps": (APPS_HELPERS, "__searchrl_function({entry!r})(*arg)", "__searchrl_same(got, want)"),
}


@dataclass(frozen=True)
class GradeResult:
    """One response's verdict: tests passed of ``total``, and the sandbox status of its runs as the
    score's ``info["status"]`` records it: one status per run (stdin/stdout suites; HumanEval: its one
    program), or the one status of the program that ran every test (synthetic problems), ``"no-code"``
    (``["no-code"]`` for the suites) for a response without code."""

    passed: int
    total: int
    statuses: list[str] | str


def run_responses(problems: Sequence[dict], codes: Sequence[str | None],
                  programs: Callable[[dict, str], Sequence[Program]], judge: Callable[[dict, str, list[Result]], T],
                  no_code: Callable[[dict], T], *, timeout: float = 4.0, memory_mb: int = 1024,
                  workers: int | None = None) -> list[T]:
    """One verdict per response: ``programs(problem, code)`` gives each response's programs (any number,
    none included), all of them run in one sandboxed batch, then ``judge(problem, code, results)`` reads
    that response's results (in the order of its programs). A response without code (``None``) runs
    nothing and gets ``no_code(problem)``."""
    per = [None if c is None else list(programs(p, c)) for p, c in zip(problems, codes)]
    results = run_batch([job for jobs in per if jobs is not None for job in jobs], timeout=timeout,
                        memory_mb=memory_mb, workers=workers)
    out, at = [], 0
    for p, c, jobs in zip(problems, codes, per):
        if jobs is None:
            out.append(no_code(p))
            continue
        out.append(judge(p, c, results[at:at + len(jobs)]))
        at += len(jobs)
    return out


def cases_program(code: str, entry_point: str, tests: Sequence[dict[str, Any]], marker: str,
                  report: str = "passed", call: str = "plain") -> str:
    """A program that runs ``code``, then calls ``entry_point`` on each test's input and prints ``marker``
    followed by the report (see the module doc): ``passed``, one ``1``/``0`` per test (an exception or a
    wrong value is a ``0``); ``outcomes``, a JSON list of ``[passed, repr(value) or None, error or None]``.
    ``call``: ``plain`` calls ``entry_point(input)`` and compares with ``==``; ``apps`` calls it as APPS'
    call-based problems are called (see the module doc)."""
    setup, on_value, on_error, printed = REPORTS[report]
    helpers, invoke, same = CALLS[call]
    cases = [(t["input"], t["output"]) for t in tests]
    return (f"{code}\n\n{helpers}\ndef __searchrl_check():\n{setup}    out = []\n"
            f"    for arg, want in {cases!r}:\n"
            f"        try:\n            got = {invoke.format(entry=entry_point)}\n"
            f"            out.append({on_value.format(same=same)})\n"
            f"        except BaseException as e:\n            out.append({on_error})\n    return {printed}\n\n\n"
            f"print('\\n{marker}' + __searchrl_check())\n")


def asserts_program(code: str, setup: str, asserts: Sequence[str], marker: str) -> str:
    """A program that runs ``setup`` (MBPP's ``test_setup_code``: imports the tests need) and ``code``, then
    each assert statement of ``asserts`` in turn, and prints ``marker`` followed by one ``1``/``0`` per assert
    (the ``passed`` report, :func:`passed_cases`). The asserts are data, run by ``exec`` inside this program
    (in the sandbox), never in the grading process."""
    return (f"{setup}\n{code}\n\n\ndef __searchrl_check():\n    out = []\n"
            f"    for src in {list(asserts)!r}:\n"
            f"        try:\n            exec(src, globals())\n            out.append('1')\n"
            f"        except BaseException:\n            out.append('0')\n    return ''.join(out)\n\n\n"
            f"print('\\n{marker}' + __searchrl_check())\n")


def passed_cases(stdout: str, marker: str, n: int) -> int:
    """How many tests a ``passed`` report says passed (0 when it never printed, or printed it cut short)."""
    pos = stdout.rfind(marker)
    if pos < 0:
        return 0
    digits = stdout[pos + len(marker):pos + len(marker) + n]
    return digits.count("1") if len(digits) == n and set(digits) <= {"0", "1"} else 0


def outcome_rows(stdout: str, marker: str, n: int) -> list | None:
    """The ``[passed, value, error]`` rows of an ``outcomes`` report (``None`` when it never printed a
    well-formed one of ``n`` rows)."""
    pos = stdout.rfind(marker)
    if pos < 0:
        return None
    try:
        rows = json.loads(stdout[pos + len(marker):].split("\n", 1)[0])
    except ValueError:
        return None
    ok = (isinstance(rows, list) and len(rows) == n
          and all(isinstance(r, list) and len(r) == 3 and isinstance(r[0], bool) for r in rows))
    return rows if ok else None


def grade_cases(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                memory_mb: int = 1024, workers: int | None = None) -> list[GradeResult]:
    """Function problems with per-test cases (synthetic): one program per response with code, every test
    inside it (:func:`cases_program`); the status is that program's."""
    marker = secrets.token_hex(8)

    def programs(p: dict, code: str) -> list[Program]:
        return [Program(cases_program(code, p["entry_point"], p["tests"], marker))]

    def judge(p: dict, code: str, results: list[Result]) -> GradeResult:
        [r] = results
        return GradeResult(passed_cases(r.stdout, marker, len(p["tests"])), len(p["tests"]), r.status)

    return run_responses(problems, codes, programs, judge, lambda p: GradeResult(0, len(p["tests"]), "no-code"),
                         timeout=timeout, memory_mb=memory_mb, workers=workers)


__all__ = ["GradeResult", "run_responses", "cases_program", "asserts_program", "passed_cases", "outcome_rows",
           "grade_cases", "REPORTS", "CALLS"]
