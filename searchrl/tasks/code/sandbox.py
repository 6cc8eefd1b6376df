"""Run untrusted Python programs (a model's code) in a separate, limited process.

Minimal first version: a fresh ``python -I`` per program in its own session, a temporary
working directory, a scrubbed environment, resource limits and a wall-clock timeout that
kills the whole process group. (Namespaces and the hostile-program tests follow.)
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

#: what ``Result.status`` can be
STATUSES = ("ok", "error", "timeout", "memory")


@dataclass(frozen=True)
class Result:
    """How one program ended: ``status`` (one of :data:`STATUSES`), its exit code (``None`` when
    killed by the parent), its (truncated) output, which isolation measures were in force, and
    its wall-clock seconds."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    isolation: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class Program:
    """One program of a batch: its source and optional standard input."""

    source: str
    stdin: str | None = None


def _limits(memory_mb: int, cpu_s: int):
    def apply():
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_program(source: str, stdin: str | None = None, timeout: float = 4.0, memory_mb: int = 1024,
                max_output: int = 65536) -> Result:
    """Run ``source`` with ``python -I`` in a fresh process; see the module doc."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="searchrl-sbx-") as work:
        path = os.path.join(work, "main.py")
        with open(path, "w") as f:
            f.write(source)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work}
        proc = subprocess.Popen([sys.executable, "-I", "main.py"], cwd=work, env=env, start_new_session=True,
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_limits(memory_mb, int(timeout) + 1))
        try:
            out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=timeout)
            rc = proc.returncode
            status = "ok" if rc == 0 else ("memory" if b"MemoryError" in err[-2000:] else "error")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc, status = None, "timeout"
    return Result(status, rc, out[:max_output].decode(errors="replace"), err[:max_output].decode(errors="replace"),
                  ("process-group", "rlimits", "scrubbed-env", "tempdir"), time.perf_counter() - t0)


def run_batch(programs: Sequence[Program], timeout: float = 4.0, memory_mb: int = 1024,
              workers: int | None = None) -> list[Result]:
    """Run ``programs`` in parallel (up to ``workers``, default the core count); results in order."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p.source, p.stdin, timeout, memory_mb), programs))


__all__ = ["Result", "Program", "run_program", "run_batch", "STATUSES"]
