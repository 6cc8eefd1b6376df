"""Final answers of math responses: extraction and equivalence (ReST-MCTS*'s verifier, seed 002).

Why: ReST-MCTS* self-trains from problems that have only a final answer, so the one signal is
"is this response's final answer the gold one". :func:`extract_answer` takes the **last**
``\\boxed{...}`` (nested braces handled), else the last "The answer is ..." phrase; and
:func:`is_equivalent` decides equivalence with Hugging Face's ``math-verify`` (LaTeX and plain
expressions, ``1/2`` = ``0.5`` = ``\\frac{1}{2}``), never by a comparison written here: identical
strings are equal without asking it, everything else goes to it.

``math-verify`` bounds its own work with ``signal.alarm``, which only works in a process's main
thread; our pipelines grade from worker threads too. So the check runs in one helper process
(:mod:`searchrl.tasks.math.verify_worker`, started on first use, shared by all threads) with
math-verify's own timeouts off, and this process waits at most ``timeout`` seconds per pair: a
pair that takes longer counts as not equivalent and the helper is replaced. Malformed input never raises (it is simply not equivalent).
"""

from __future__ import annotations

import atexit
import json
import re
import select
import subprocess
import sys
import threading
from collections.abc import Sequence

_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is[:\s]*(.+)")


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; ``None`` if none closes."""
    for key in ("\\boxed", "\\fbox"):
        start = text.rfind(key)
        while start >= 0:
            i = start + len(key)
            while i < len(text) and text[i] == " ":
                i += 1
            if i < len(text) and text[i] == "{":
                depth, j = 0, i
                while j < len(text):
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                        if depth == 0:
                            return text[i + 1:j].strip()
                    j += 1
            start = text.rfind(key, 0, start)
    return None


def extract_answer(text: str) -> str | None:
    """The final answer a response claims: its last ``\\boxed{...}``, else the last "The answer is X"
    (X up to the end of its line, without a final period or ``$`` signs); ``None`` when it has neither."""
    if not isinstance(text, str):
        return None
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    found = _ANSWER_IS.findall(text)
    if not found:
        return None
    ans = found[-1].strip().rstrip(".").strip().strip("$").strip()
    return ans or None


def check(pred: str, gold: str) -> bool:
    """math-verify's verdict, with its own timeouts off (runs in the helper process)."""
    from math_verify import parse, verify

    try:
        g = parse(f"${gold}$", parsing_timeout=None)
        p = parse(f"${pred}$", parsing_timeout=None)
        return bool(g) and bool(p) and bool(verify(g, p, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - malformed input is simply not equivalent
        return False


class _Helper:
    """One ``python -m searchrl.tasks.math.verify_worker`` process: JSON lines in, ``1``/``0`` lines out;
    killed and replaced when an answer overruns its timeout. A plain subprocess, not ``multiprocessing``,
    so the caller's ``__main__`` is never imported again."""

    CHUNK = 64  # requests in flight: keeps both pipes far from full
    STARTUP = 300.0  # seconds the helper may take to import math-verify; not charged to any answer

    def __init__(self):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            proc = subprocess.Popen([sys.executable, "-m", "searchrl.tasks.math.verify_worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, bufsize=1)
            line = self._read(proc, self.STARTUP)
            if line is None or line.strip() != "ready":
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the math-verify helper did not start in {self.STARTUP:.0f} s; run `python -m "
                                   "searchrl.tasks.math.verify_worker` to see why (is math-verify installed?)")
            self.proc = proc
        return self.proc

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _read(self, proc: subprocess.Popen, timeout: float) -> str | None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = proc.stdout.readline()
        return line if line else None

    def run(self, pairs: list[tuple[str, str]], timeout: float) -> list[bool]:
        out: list[bool] = []
        with self.lock:
            todo = list(pairs)
            while todo:
                chunk, todo = todo[: self.CHUNK], todo[self.CHUNK:]
                proc = self._start()
                try:
                    for pred, gold in chunk:
                        proc.stdin.write(json.dumps([pred, gold]) + "\n")
                    proc.stdin.flush()
                except OSError:
                    self._kill()
                    out.append(False)  # the first of the chunk is given up; the rest go again
                    todo = chunk[1:] + todo
                    continue
                for i in range(len(chunk)):
                    line = self._read(proc, timeout)
                    if line is None:  # overran (or died): not equivalent; the rest of the chunk goes again
                        self._kill()
                        out.append(False)
                        todo = chunk[i + 1:] + todo
                        break
                    out.append(line.strip() == "1")
        return out

    def close(self) -> None:
        with self.lock:
            self._kill()


_HELPER = _Helper()
atexit.register(_HELPER.close)


def _norm(s: str) -> str:
    return "".join(s.split())


def are_equivalent(pairs: Sequence[tuple[str | None, str | None]], timeout: float = 5.0) -> list[bool]:
    """:func:`is_equivalent` for many ``(pred, gold)`` pairs at once (one round trip to the helper)."""
    out: list[bool | None] = []
    todo = []
    for k, (pred, gold) in enumerate(pairs):
        if not isinstance(pred, str) or not isinstance(gold, str) or not pred.strip() or not gold.strip():
            out.append(False)
        elif _norm(pred) == _norm(gold):
            out.append(True)
        else:
            out.append(None)
            todo.append(k)
    if todo:
        for k, v in zip(todo, _HELPER.run([(pairs[k][0], pairs[k][1]) for k in todo], timeout)):
            out[k] = v
    return [bool(v) for v in out]


def is_equivalent(pred: str | None, gold: str | None, timeout: float = 5.0) -> bool:
    """Whether ``pred`` and ``gold`` are the same answer by ``math-verify`` (see the module doc)."""
    return are_equivalent([(pred, gold)], timeout)[0]


__all__ = ["extract_answer", "is_equivalent", "are_equivalent"]
