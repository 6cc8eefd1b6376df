"""Run untrusted Python programs (a model's code) in separate, limited processes.

Why: every code reward runs a model's output, thousands of times per training run, and that
output can do anything a Python program can. Nothing of it is ever evaluated in our process:
:func:`run_program` starts a fresh interpreter for each program and the parent only reads its
exit status and (bounded) output.

What every program gets (``Result.isolation`` lists what was in force):

* ``fresh-interpreter``: ``python -I -S`` (no user site, no ``PYTHON*`` variables, no script dir on
  the path, and no ``site``: the program imports the standard library only, never the packages
  of our environment, and starts in ~15 ms instead of ~55 ms in an editable install) on a file in
  a new temporary working directory (``tempdir``), removed afterwards;
* ``scrubbed-env``: an environment built from nothing (``PATH``, ``LANG``, ``HOME`` = the work
  dir), so no token or key of the parent's environment reaches it; stdin is ``/dev/null``
  unless given;
* ``rlimits``: address space (``memory_mb``), CPU seconds, file size (16 MiB: also bounds what it
  can print), open files (64), processes (64, counted per user: effective when the program runs
  as an unprivileged user), no core dumps; set by util-linux's ``prlimit`` at the head of the
  command, so the parent starts it with ``vfork`` (a ``preexec_fn`` would force a ``fork`` of the
  whole parent: ~25 ms in a process holding a model, against ~2 ms), or by a ``preexec_fn`` where
  there is no ``prlimit``;
* ``process-group``: its own session; the parent's wall-clock timeout kills the whole group;
* output goes to files, not pipes, so a program printing gigabytes stops at the file-size limit
  and the parent reads at most ``max_output`` characters of each stream.

Where the machine allows it (Linux, run as root, ``unshare`` and ``setpriv`` from util-linux: probed
once per process), also:

* ``net-namespace``: a new network namespace with no interface up: no connection leaves it;
* ``pid-namespace``: it sees only its own processes, so it cannot signal the parent, and when
  the parent kills it the kernel kills every process it started (a fork bomb that calls
  ``setsid`` included);
* ``private-tmp``: ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are fresh tmpfs mounts of its own,
  discarded at exit (the work dir lies outside them; one ``mount -a`` over our fstab, and the
  probe checks that a file of ours in ``/tmp`` is invisible inside);
* ``unprivileged-user``: it runs as ``nobody``, so it cannot write anywhere the parent's files
  live (only its work dir is made writable for it), and the process limit is enforced.

What is **not** protected: reading world-readable files (the library's source, the system's
Python), CPU and memory bandwidth shared with the parent, and, without the namespaces (a
container without the privileges, a non-root user), network access and writes to files the
parent's user may write. It is a sandbox for a policy's mistakes and ordinary hostility
(infinite loops, fork and memory bombs, deleting files, phoning home), not a security boundary
against a determined attacker with a kernel exploit.
"""

from __future__ import annotations

import functools
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

#: what ``Result.status`` can be
STATUSES = ("ok", "error", "timeout", "memory")
#: largest file (and printed output) a program may write, bytes
FILE_LIMIT = 16 * 1024 * 1024
NOBODY = 65534
BASE_MEASURES = ("fresh-interpreter", "scrubbed-env", "tempdir", "rlimits", "process-group")
NAMESPACE_MEASURES = ("net-namespace", "pid-namespace", "private-tmp", "unprivileged-user")
# inside the namespaces: private temp dirs (one `mount -a` over our own fstab: one exec, not three), then drop
# to nobody and start the program. The mounts' source name is ours, so `mount -a` never takes an existing
# tmpfs on /tmp for "already mounted".
_FSTAB = "".join(f"searchrl-sandbox {d} tmpfs size=64m,nosuid,nodev 0 0\n" for d in ("/tmp", "/var/tmp", "/dev/shm"))
_INNER = ("mount -a -T {fstab} && exec setpriv --reuid={uid} --regid={uid} --clear-groups "
          "--inh-caps=-all {python} -I -S {script}")


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


def _python() -> str:
    """The interpreter programs run on: ours with its links resolved. Without ``site`` a virtual
    environment adds nothing, and a venv under ``/tmp`` would be hidden by the private ``/tmp``."""
    return os.path.realpath(sys.executable)


def _sandbox_dir() -> Path:
    """The root-owned directory of the namespaced sandbox (``$SEARCHRL_SANDBOX_DIR``, default
    ``/var/cache/searchrl-sandbox``): ``nobody`` may pass through it but not list it."""
    root = Path(os.environ.get("SEARCHRL_SANDBOX_DIR") or "/var/cache/searchrl-sandbox")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)
    return root


@functools.lru_cache(maxsize=1)
def _fstab() -> str:
    """The fstab of the private temp dirs, written once into the sandbox directory."""
    path = _sandbox_dir() / "fstab"
    if not path.exists() or path.read_text() != _FSTAB:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_FSTAB)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return str(path)


def _inner(script: str) -> str:
    return _INNER.format(fstab=_fstab(), uid=NOBODY, python=_python(), script=script)


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether programs can run in new net/pid/mount namespaces as ``nobody`` here, with a private
    ``/tmp`` (probed once: a file of ours in ``/tmp`` must not be visible to the probe)."""
    if sys.platform != "linux" or os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")
                                                            and shutil.which("mount")):
        return False
    try:
        with tempfile.NamedTemporaryFile(dir="/tmp", prefix="searchrl-probe-") as mark:
            check = f"import os, sys; sys.exit(os.path.exists({mark.name!r}) or os.getuid() != {NOBODY})"
            probe = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--", "sh", "-c",
                                    _inner(f'-c "{check}"')], cwd="/", capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def isolation() -> tuple[str, ...]:
    """The measures a program gets on this machine (see the module doc)."""
    return BASE_MEASURES + (NAMESPACE_MEASURES if namespaces_available() else ())


@functools.lru_cache(maxsize=1)
def _work_root() -> Path:
    """Where work dirs live: with the namespaces, the sandbox directory (outside /tmp, which the program
    sees as its own tmpfs); otherwise the system's temp dir."""
    if not namespaces_available():
        return Path(tempfile.gettempdir())
    return _sandbox_dir()


def _limit_values(memory_mb: int, cpu_s: int) -> tuple[tuple[int, str, int], ...]:
    """``(resource, prlimit option, value)`` of every limit a program gets."""
    return ((resource.RLIMIT_AS, "--as", memory_mb * 1024 * 1024), (resource.RLIMIT_CPU, "--cpu", cpu_s),
            (resource.RLIMIT_FSIZE, "--fsize", FILE_LIMIT), (resource.RLIMIT_NOFILE, "--nofile", 64),
            (resource.RLIMIT_NPROC, "--nproc", 64), (resource.RLIMIT_CORE, "--core", 0))


def _limits(memory_mb: int, cpu_s: int):
    """The limits as a ``preexec_fn`` (used only where util-linux's ``prlimit`` is missing)."""
    def apply():
        for limit, _, value in _limit_values(memory_mb, cpu_s):
            resource.setrlimit(limit, (value, value))
    return apply


def _prlimit(memory_mb: int, cpu_s: int) -> list[str]:
    """The limits as a ``prlimit`` command prefix (empty where there is no ``prlimit``). A ``preexec_fn``
    forces ``fork()`` of the whole parent, which costs ~25 ms in a process holding a model; without one
    ``subprocess`` uses ``vfork()`` (~2 ms), so the limits are set by an exec'd ``prlimit`` instead."""
    if not _has_prlimit():
        return []
    return ["prlimit", *(f"{opt}={value}" for _, opt, value in _limit_values(memory_mb, cpu_s)), "--"]


@functools.lru_cache(maxsize=1)
def _has_prlimit() -> bool:
    return sys.platform == "linux" and shutil.which("prlimit") is not None


def _read_head(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode(errors="replace")


def _status(rc: int | None, stderr: str) -> str:
    if rc is None or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if rc == 0:
        return "ok"
    return "memory" if "MemoryError" in stderr[-4000:] else "error"


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """The exit code, or ``None`` when ``timeout`` seconds pass first. Waits on a pidfd where Linux has
    them: ``Popen.wait(timeout=)`` polls with sleeps growing to 50 ms, which cost about 20 ms a program."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return proc.wait() if ready else None


def run_program(source: str, stdin: str | None = None, timeout: float = 4.0, memory_mb: int = 1024,
                max_output: int = 65536) -> Result:
    """Run ``source`` in a fresh, limited interpreter (see the module doc); never raises for what the
    program does."""
    t0 = time.perf_counter()
    ns = namespaces_available()
    work = Path(tempfile.mkdtemp(prefix="p-", dir=_work_root()))
    io_dir = Path(tempfile.mkdtemp(prefix="io-"))  # the parent's: outside the program's reach
    try:
        (work / "main.py").write_text(source, encoding="utf-8")
        if ns:
            os.chown(work, NOBODY, NOBODY)
            os.chown(work / "main.py", NOBODY, NOBODY)
            cmd = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--", "sh", "-c",
                   _inner("main.py")]
        else:
            cmd = [_python(), "-I", "-S", "main.py"]
        cpu_s = int(timeout) + 1
        prefix = _prlimit(memory_mb, cpu_s)
        cmd = prefix + cmd
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work)}
        stdin_file = None
        if stdin is not None:
            (io_dir / "stdin").write_text(stdin, encoding="utf-8")
            stdin_file = open(io_dir / "stdin", "rb")
        with open(io_dir / "out", "wb") as out, open(io_dir / "err", "wb") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, start_new_session=True,
                                    stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
                                    stdout=out, stderr=err, preexec_fn=None if prefix else _limits(memory_mb, cpu_s))
            try:
                rc = _wait(proc, timeout)
            finally:  # the whole group (and with the pid namespace, everything it started) goes
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                if stdin_file is not None:
                    stdin_file.close()
        stdout, stderr = _read_head(io_dir / "out", max_output), _read_head(io_dir / "err", max_output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(io_dir, ignore_errors=True)
    return Result(_status(rc, stderr), rc, stdout, stderr, isolation(), time.perf_counter() - t0)


def run_batch(programs: Sequence[Program], timeout: float = 4.0, memory_mb: int = 1024,
              workers: int | None = None) -> list[Result]:
    """Run ``programs`` in parallel (up to ``workers``, default the core count); results in order."""
    workers = workers or os.cpu_count() or 1
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(programs))) as pool:
        return list(pool.map(lambda p: run_program(p.source, p.stdin, timeout, memory_mb), programs))


__all__ = ["Result", "Program", "run_program", "run_batch", "STATUSES", "isolation", "namespaces_available"]
