"""Math problems with final answers only (ReST-MCTS*, seed 002): the task, its answers and its data.

:class:`MathTask` is one :class:`~searchrl.tasks.base.Task` over these sources (``task.source``):

* ``synthetic`` (default): the multi-step arithmetic word problems of
  :mod:`searchrl.tasks.math.synthetic` (3-6 steps, one a line, held-out compositions in
  ``valid_unseen`` / ``test_unseen``), written by ``prepare`` with gold step-by-step solutions;
* ``jsonl``: problems from ``task.path`` (a ``.jsonl`` / ``.json`` file: split ``test``; a
  directory: one split per file), in any of these layouts, read by :func:`load_problems`:
  ReST-MCTS*'s ``{"content", "answer"}`` (ours too, with an optional ``"solution"``); GSM8K's
  ``{"question", "answer"}`` where the answer's text ends ``#### <answer>`` (the lines before it
  become the solution); MATH's ``{"problem", "solution"}`` (the answer is the solution's last
  ``\\boxed{}``, unless an ``answer`` field gives it);
* ``gsm8k`` and ``math``: a published dataset in its own Hugging Face Hub layout, only that layout's
  records accepted: GSM8K (``question``, ``answer`` ending ``#### n``; ``openai/gsm8k``'s
  ``main/test-00000-of-00001.parquet``) or MATH and MATH-500 (``problem``, ``solution``, and ``answer``
  where the dataset has it, else the solution's last ``\\boxed{}``; ``HuggingFaceH4/MATH-500``'s
  ``test.jsonl``). ``task.path`` is a parquet / JSON Lines / JSON file (split ``test``), a directory of the
  dataset's files named by split (``train-00000-of-00001.parquet``, ``test.jsonl``, ...), or a ``datasets``
  name (``openai/gsm8k:main``, the configuration after the colon), :func:`searchrl.tasks.splits.hub_splits`.

Every record is checked when its file is read (when the task's data are prepared), each error
naming the file, its 1-based line (a ``.json`` list: the line its item starts on) and the field,
and saying what was expected (``field 'solution': expected a string, got int``). Nothing is
dropped or coerced quietly; what a record becomes is only this: the layout's fields are mapped
to ``content``/``answer``/``solution`` (other fields are not carried over), an answer given as a
JSON number is its decimal text, a GSM8K answer is the text after ``####`` without its thousands
commas (``4,003`` is 4003, as GSM8K writes it), and an optional field that is ``null`` counts
as absent.

Grading: the response's final answer (:func:`extract_answer`: the last ``\\boxed{...}``, else
"The answer is ...") against the gold one by ``math-verify`` (:func:`is_equivalent`); reward 1
when equivalent, else 0. Steps are lines (``action_stop = "\\n"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data import RecordError, field_value, iter_json_list, iter_jsonl, type_name
from ..base import MissingField, Score
from ..splits import COMPOSITION_TITLES, SplitFiles, composition_splits
from .answer import are_equivalent, extract_answer, is_equivalent

SOURCES = ("synthetic", "jsonl", "gsm8k", "math")
#: the sources read from a published dataset in its own Hub layout, and the columns each reads
HUB_COLUMNS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution", "answer")}
SPLIT_TITLES = COMPOSITION_TITLES
#: what a model of a published dataset is asked (the usual instruction for boxed answers)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class MathConfig:
    """The ``task`` section of a run's config for math problems."""

    name: str = _f("math", "task name (see searchrl.tasks.TASKS)")
    source: str = _f("synthetic", "synthetic (our arithmetic word problems) | jsonl (problems from task.path: "
                                  "ReST-MCTS* content/answer, GSM8K question/answer, MATH problem/solution) | "
                                  "gsm8k | math (GSM8K, or MATH / MATH-500, in their own Hub layouts from task.path)")
    path: str = _f("", "jsonl: a .jsonl/.json file of problems (split 'test') or a directory of <split>.jsonl files; "
                       "gsm8k / math: a .parquet/.jsonl/.json file (split 'test'), a directory of the dataset's "
                       "files (train-00000-of-00001.parquet, test.jsonl, ...) or a datasets name "
                       "(openai/gsm8k:main, HuggingFaceH4/MATH-500)")
    seed: int = _f(0, "synthetic: seed of the problems and of the held-out compositions")
    n_train: int = _f(20000, "synthetic: SFT problems with gold solutions")
    n_selftrain: int = _f(2000, "synthetic: self-training problems (none in train)")
    n_valid: int = _f(300, "synthetic: validation problems, seen compositions")
    n_valid_unseen: int = _f(300, "synthetic: validation problems, held-out compositions")
    n_test: int = _f(300, "synthetic: problems of test_seen and of test_unseen each")
    held_fraction: float = _f(0.15, "synthetic: fraction of the ordered pairs of operations held out")
    min_steps: int = _f(3, "synthetic: fewest operations (lines) of a problem")
    max_steps: int = _f(6, "synthetic: most operations (lines) of a problem")
    timeout: float = _f(5.0, "seconds math-verify may take per answer (then: not equivalent)")

    NOT_DATA = ("name", "timeout")
    #: settings that change grades, not the problems: stages and shards of graded samples depend on them
    SCORING = ("timeout",)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {' | '.join(SOURCES)}, got {self.source!r}")
        if self.source == "jsonl" and not self.path:
            raise ValueError("source=jsonl reads its problems from task.path (a .jsonl file or a directory of them)")
        if self.source in HUB_COLUMNS and not self.path:
            example = "openai/gsm8k:main" if self.source == "gsm8k" else "HuggingFaceH4/MATH-500"
            raise ValueError(f"source={self.source} reads its problems from task.path: a file or directory in the "
                             f"dataset's Hub layout, or a datasets name such as {example}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")


def _gsm8k_answer(text: str) -> tuple[str, str] | None:
    if "####" not in text:
        return None
    steps, _, ans = text.rpartition("####")
    return ans.strip().replace(",", ""), steps.strip()


def _answer_text(value: str | int | float) -> str:
    """A gold answer as text: a number given as a JSON number is its decimal text (``42`` -> ``"42"``;
    a float keeps Python's shortest text for the same number), which math-verify reads as that number."""
    return value if isinstance(value, str) else str(value)


#: the types a gold ``answer`` field may have (a number is read as its text, :func:`_answer_text`)
ANSWER = (str, int, float)


def math_problem(rec: Any, path: str | os.PathLike, line: int, layout: str | None = None) -> dict[str, Any]:
    """One problem of any layout of the module doc as ``{"content", "answer", "solution"?}``, or a
    :class:`~searchrl.data.RecordError` naming ``path``, ``line`` and the layout's field (``missing``,
    ``expected a string, got int``, ...). Nothing the record gives is dropped quietly: a ``solution``
    that is not a string, or a MATH ``answer`` that is neither text nor a number, is an error.
    ``layout`` (``gsm8k`` or ``math``): only that dataset's layout is accepted (a record of another is
    an error naming the field it lacks), else the layout is recognised by the record's fields."""
    if not isinstance(rec, dict):
        raise RecordError(path, line, None, f"expected a JSON object (a problem), got {type_name(rec)}")
    if layout is not None and layout not in HUB_COLUMNS:
        raise ValueError(f"layout must be one of {' | '.join(HUB_COLUMNS)}, got {layout!r}")
    solution_field = "solution"
    if layout == "gsm8k" or (layout is None and "question" in rec and "content" not in rec):
        kind = "gsm8k"
    elif layout == "math" or (layout is None and "problem" in rec and "content" not in rec):
        kind = "math"
    else:
        kind = "content" if "content" in rec else None
    if kind == "content":  # ReST-MCTS* / ours
        question_field = "content"
        question = field_value(rec, "content", str, path, line)
        answer = _answer_text(field_value(rec, "answer", ANSWER, path, line, what="a string or a number"))
        solution = field_value(rec, "solution", str, path, line, required=False)
    elif kind == "gsm8k":
        question_field = "question"
        question = field_value(rec, "question", str, path, line)
        parsed = _gsm8k_answer(field_value(rec, "answer", str, path, line))
        if parsed is None:
            raise RecordError(path, line, "answer", "a GSM8K answer ends with '#### <answer>'")
        answer, solution = parsed
        solution = solution or None  # "#### 5" alone: the answer without steps
        solution_field = "answer"
    elif kind == "math":  # MATH, MATH-500
        question_field = "problem"
        question = field_value(rec, "problem", str, path, line)
        solution = field_value(rec, "solution", str, path, line)
        given = field_value(rec, "answer", ANSWER, path, line, required=False, what="a string or a number")
        answer = _answer_text(given) if given is not None else extract_answer(solution)
        if answer is None:
            raise RecordError(path, line, "solution", "no \\boxed{} answer in it (and no 'answer' field)")
    else:
        raise RecordError(path, line, None, "not a math problem: expected 'content' (ReST-MCTS*), 'question' "
                                            "(GSM8K) or 'problem' (MATH)")
    if not question.strip():
        raise RecordError(path, line, question_field, "empty (expected the question)")
    if not answer.strip():
        raise RecordError(path, line, "answer", "empty (expected the final answer)")
    if solution is not None and not solution.strip():
        raise RecordError(path, line, solution_field, "an empty solution (leave it out, or null, when there is none)")
    out = {"content": question, "answer": answer}
    if solution is not None:
        out["solution"] = solution
    return out


def load_problems(path: str | os.PathLike, lines: list[int] | None = None) -> list[dict[str, Any]]:
    """Problems ``{"content", "answer", "solution"?}`` from a JSON Lines (or JSON list) file in any layout of
    the module doc (:func:`math_problem`); a bad record raises :class:`~searchrl.data.RecordError` naming
    file, line and field. ``lines``, when given, receives the 1-based line every problem starts on."""
    path = Path(path)
    rows = iter_json_list(path, "problems") if path.suffix == ".json" else iter_jsonl(path)
    out = []
    for line, rec in rows:
        out.append(math_problem(rec, path, line))
        if lines is not None:
            lines.append(line)
    return out


class MathTask(SplitFiles):
    """Math problems graded by their final answer (:class:`~searchrl.tasks.base.Task`); see the module doc."""

    name = "math"
    action_stop = "\n"
    Config = MathConfig
    split_titles = SPLIT_TITLES

    def __init__(self, config: MathConfig | None = None, data_dir: str | os.PathLike = "."):
        self.config = config if config is not None else MathConfig()
        self.data_dir = Path(data_dir)
        self._init_splits()

    def _make_splits(self) -> dict[str, list[dict]]:
        cfg = self.config
        if cfg.source == "jsonl":
            return self._splits_from_files(cfg.path, ("*.jsonl", "*.json"), load_problems, ".jsonl/.json")
        if cfg.source in HUB_COLUMNS:
            import functools

            return self._splits_from_hub(cfg.path, functools.partial(math_problem, layout=cfg.source),
                                         f"{cfg.source} .parquet/.jsonl/.json", HUB_COLUMNS[cfg.source])
        from .synthetic import generate

        return generate(composition_splits(cfg), seed=cfg.seed, held_fraction=cfg.held_fraction,
                        min_steps=cfg.min_steps, max_steps=cfg.max_steps)

    def _validate(self, rec: dict, path: Path, line: int) -> dict:
        for name in ("content", "answer"):
            field_value(rec, name, str, path, line)
        field_value(rec, "solution", str, path, line, required=False)
        return rec

    # ---- model-facing
    def prompt(self, problem: dict[str, Any]) -> str:
        if self.config.source == "synthetic":
            return problem["content"]
        return f"{problem['content'].rstrip()}\n{INSTRUCTION}"

    def demonstration(self, problem: dict[str, Any]) -> str:
        """The gold step-by-step solution (one step a line, the answer boxed at the end)."""
        sol = problem.get("solution")
        if not isinstance(sol, str):
            raise MissingField("solution", "missing: the gold solution that SFT imitates")
        if extract_answer(sol) is None:
            sol = f"{sol.rstrip()}\nThe answer is \\boxed{{{problem['answer']}}}."
        return sol

    def corrupt(self, problem: dict[str, Any], line: str, rng) -> str:
        """A wrong version of a gold step (ReST-MCTS*'s initial value data): an ``a op b = c`` line with
        ``c`` off by 1..5, an answer line with the answer off by 1..5, any other line unchanged."""
        import re

        from .synthetic import corrupt_step

        if re.fullmatch(r".* = \d+", line):
            return corrupt_step(line, rng)
        m = re.fullmatch(r"(The answer is \\boxed\{)(\d+)(\}\.)", line)
        if m:
            v = int(m.group(2))
            return f"{m.group(1)}{rng.choice([x for x in range(max(0, v - 5), v + 6) if x != v])}{m.group(3)}"
        return line

    def answer(self, problem: dict[str, Any], response: str) -> str | None:
        """The final answer a response claims (what majority votes group by)."""
        return extract_answer(response)

    def equivalent_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each ``(a, b)`` pair of final answers is equivalent, by the grader's rule (``math-verify``,
        ``b`` in the gold position): what majority votes group answers by (:func:`searchrl.search.bon.equivalence`)."""
        return are_equivalent(list(pairs), self.config.timeout)

    def score(self, problems: Sequence[dict[str, Any]], responses: Sequence[str]) -> list[Score]:
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems for {len(responses)} responses")
        preds = [extract_answer(r) for r in responses]
        ok = are_equivalent([(p, prob["answer"]) for p, prob in zip(preds, problems)], self.config.timeout)
        return [Score(reward=float(c), correct=c, info={"answer": p}) for p, c in zip(preds, ok)]

    def tokenizer(self):
        from ..vocab import build_phrase_tokenizer
        from .synthetic import PHRASES

        chars = ["\n"] + [chr(c) for c in range(32, 127)]
        numbers = [str(i) for i in range(1000)]
        return build_phrase_tokenizer(PHRASES, chars, extra_tokens=numbers,
                                      extra_patterns=[r"(?<![0-9])[0-9]{1,3}(?![0-9])"])


__all__ = ["MathTask", "MathConfig", "extract_answer", "is_equivalent", "are_equivalent", "load_problems",
           "math_problem", "SOURCES", "HUB_COLUMNS",
           "INSTRUCTION"]
