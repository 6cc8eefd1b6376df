"""Run untrusted Python programs (a model's code) in separate, limited processes.

Why: every code reward runs a model's output, thousands of times per training run, and that
output can do anything a Python program can. Nothing of it is ever evaluated in our process:
:func:`run_program` starts a fresh interpreter for each program and the parent only reads its
exit status and (bounded) output.

What every program gets (``Result.isolation`` lists what was in force):

* ``fresh-interpreter``: ``python -I -S`` (no user site, no ``PYTHON*`` variables, no script dir on
  the path, and no ``site``: the program imports the standard library only, never the packages
  of our environment, and starts several times faster than with ``site`` in an editable install) on a file in
  a new temporary working directory (``tempdir``), removed afterwards;
* ``scrubbed-env``: an environment built from nothing (``PATH``, ``LANG``, ``HOME`` = the work
  dir), so no token or key of the parent's environment reaches it; stdin is ``/dev/null``
  unless given;
* ``rlimits``: address space (``memory_mb``), CPU seconds, file size (16 MiB: also bounds what it
  can print), open files (64), processes (64, counted per user: effective when the program runs
  as an unprivileged user, and shared by the programs running at the same time), no core dumps;
  set by util-linux's ``prlimit`` at the head of the command, so the parent starts it with
  ``vfork`` (a ``preexec_fn`` would force a ``fork`` of the whole parent, an order of magnitude
  slower in a process holding a model), or by a ``preexec_fn`` where there is no ``prlimit``;
* ``process-group``: its own session; the parent's wall-clock timeout kills the whole group;
* output goes to files, not pipes, so a program printing gigabytes stops at the file-size limit.
  The parent reads all of the stdout of a program that exited 0 (up to ``max_output``, default
  the file-size limit: a correct answer may be megabytes long) and at most 64 KiB of its stderr
  and of the output of a program that failed (no grade reads more, and a batch of runaway
  printers would otherwise hold 16 MiB each).

Work dirs and the parent's io dirs (stdin, stdout, stderr files) live in one directory per parent
process, ``o-<pid namespace>-<pid>-<start time>`` in the sandbox directory (``$SEARCHRL_SANDBOX_DIR``,
default ``/var/cache/searchrl-sandbox`` as root and ``$TMPDIR/searchrl-sandbox-<uid>`` otherwise). A
parent killed by SIGKILL cleans nothing up, so the first use in every process removes the directories
of owners that are gone (no process with that pid and start time: a reused pid does not keep them);
owners in another pid namespace are left alone (their processes are not visible from here).

As root, programs never run as root: where the machine allows it (Linux, ``unshare`` and ``setpriv``
from util-linux, probed once per process) they get:

* ``net-namespace``: a new network namespace with no interface up: no connection leaves it;
* ``pid-namespace``: it sees only its own processes, so it cannot signal the parent or another
  program, and when the parent kills it the kernel kills every process it started (a fork bomb
  that calls ``setsid`` included);
* ``private-tmp``: ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are fresh tmpfs mounts of its own,
  discarded at exit (the work dir lies outside them; one ``mount -a`` over our fstab, and the
  probe checks that a file of ours in ``/tmp`` is invisible inside);
* ``unprivileged-user``: it runs as ``nobody``, so it cannot write anywhere the parent's files
  live (only its work dir is made writable for it; the io dirs are root's, mode 0700, in a
  directory it may pass through but not list), and the process limit is enforced.

Without the namespaces (a container without the privileges), a root parent still drops each program
to ``nobody`` with ``setpriv`` (``unprivileged-user`` alone: probed once, it must run our interpreter
as ``nobody``), so the process limit binds a fork bomb and the parent's files stay out of reach; but
programs running at the same time share that user, so one can signal another. As root with neither,
:func:`run_program` refuses (``RuntimeError``): a program run as root could kill the parent, rewrite
the library and fork without limit, since the process limit does not bind root.

What is **not** protected: reading world-readable files (the library's source, the system's
Python), CPU and memory bandwidth shared with the parent, and, without the namespaces, network
access, and for a non-root parent, writes to files the parent's user may write (its programs run
as that user). It is a sandbox for a policy's mistakes and ordinary hostility (infinite loops,
fork and memory bombs, deleting files, phoning home), not a security boundary against a
determined attacker with a kernel exploit.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
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
#: most bytes read of a program's stderr, and of the stdout of a program that did not exit 0
ERROR_OUTPUT = 65536
NOBODY = 65534
BASE_MEASURES = ("fresh-interpreter", "scrubbed-env", "tempdir", "rlimits", "process-group")
NAMESPACE_MEASURES = ("net-namespace", "pid-namespace", "private-tmp", "unprivileged-user")
SETPRIV_MEASURES = ("unprivileged-user",)
# drop every uid, gid, supplementary group and inheritable capability of root for nobody's
_SETPRIV = "setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all"
# inside the namespaces: private temp dirs (one `mount -a` over our own fstab: one exec, not three), then drop
# to nobody and start the program. The mounts' source name is ours, so `mount -a` never takes an existing
# tmpfs on /tmp for "already mounted".
_FSTAB = "".join(f"searchrl-sandbox {d} tmpfs size=64m,nosuid,nodev 0 0\n" for d in ("/tmp", "/var/tmp", "/dev/shm"))
_INNER = "mount -a -T {fstab} && exec " + _SETPRIV + " {python} -I -S {script}"
# a per-parent directory: o-<pid namespace inode>-<pid>-<start time in clock ticks after boot>
_OWNER = re.compile(r"o-(\d+)-(\d+)-(\d+)")


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
    """The sandbox directory (``$SEARCHRL_SANDBOX_DIR``; default ``/var/cache/searchrl-sandbox`` as root, outside
    ``/tmp``, which a namespaced program sees as its own tmpfs, and ``$TMPDIR/searchrl-sandbox-<uid>`` otherwise,
    where another user cannot have made it for us): ``nobody`` may pass through it but not list it."""
    default = ("/var/cache/searchrl-sandbox" if os.geteuid() == 0
               else os.path.join(tempfile.gettempdir(), f"searchrl-sandbox-{os.geteuid()}"))
    root = Path(os.environ.get("SEARCHRL_SANDBOX_DIR") or default)
    root.mkdir(parents=True, exist_ok=True)
    if root.lstat().st_uid != os.geteuid():
        raise RuntimeError(f"the sandbox directory {root} belongs to another user: set $SEARCHRL_SANDBOX_DIR")
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


def _setpriv() -> list[str]:
    """The command prefix that runs what follows as ``nobody`` (root without the namespaces)."""
    return _SETPRIV.format(uid=NOBODY).split()


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


@functools.lru_cache(maxsize=1)
def _setpriv_probe() -> str | None:
    """Why root cannot run programs as ``nobody`` with ``setpriv`` (no namespaces), or ``None`` when it can.
    Probed once, with our interpreter: a ``setpriv`` that runs but cannot switch users (no ``CAP_SETUID``),
    or an interpreter ``nobody`` may not execute, would otherwise fail every program as an ordinary error."""
    if sys.platform != "linux" or not shutil.which("setpriv"):
        return "setpriv (util-linux) is missing"
    check = f"import os, sys; sys.exit(os.getuid() != {NOBODY} or os.getgid() != {NOBODY} or os.getgroups() != [])"
    try:
        probe = subprocess.run([*_setpriv(), _python(), "-I", "-S", "-c", check], cwd="/", capture_output=True,
                               timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"setpriv failed: {e}"
    if probe.returncode != 0:
        why = probe.stderr.decode(errors="replace").strip() or "it ran as another user"
        return f"setpriv did not run {_python()} as uid {NOBODY}: {why}"
    return None


def _mode() -> str:
    """How programs run here: ``namespaces``, ``setpriv`` (root without the namespaces: as ``nobody``) or
    ``same-user`` (a non-root parent's programs run as its user). Never as root: without either way to drop
    root, a program could kill the parent, rewrite the library, and fork without bound (``RLIMIT_NPROC``
    does not bind root), so this raises instead."""
    if namespaces_available():
        return "namespaces"
    if os.geteuid() != 0:
        return "same-user"
    why = _setpriv_probe()
    if why is not None:
        raise RuntimeError(f"refusing to run untrusted programs as root: no namespaces here and {why}; "
                           "install util-linux (setpriv) or run as an unprivileged user")
    return "setpriv"


_MEASURES = {"namespaces": BASE_MEASURES + NAMESPACE_MEASURES, "setpriv": BASE_MEASURES + SETPRIV_MEASURES,
             "same-user": BASE_MEASURES}


def isolation() -> tuple[str, ...]:
    """The measures a program gets on this machine (see the module doc); raises where it would run as root."""
    return _MEASURES[_mode()]


def _pid_namespace() -> int:
    """Our pid namespace's inode (0 where there is no ``/proc``): pids of another one are not ours to check."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (``None``: no such process; 0 where there is no
    ``/proc``): with the pid, it names one process, even after the pid is reused."""
    if not os.path.exists("/proc/self/stat"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no such process, or it died while we read
        return None
    # the fields after the command name (which may hold ')'); the start time is field 22
    return int(stat.rsplit(b")", 1)[1].split()[19])


def _sweep(root: Path) -> None:
    """Remove the per-parent directories of ``root`` whose owner is gone (killed without cleaning up)."""
    ns = _pid_namespace()
    for entry in os.scandir(root):
        m = _OWNER.fullmatch(entry.name)
        if m and int(m[1]) == ns and _start_time(int(m[2])) != int(m[3]):
            shutil.rmtree(entry.path, ignore_errors=True)


def _remove_owner_dir(pid: int, path: Path) -> None:
    if os.getpid() == pid:  # not in a forked child, which inherits the handler
        shutil.rmtree(path, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _owner_dir(pid: int) -> Path:
    """This process's directory of work and io dirs (called with ``os.getpid()``, so a forked child gets its
    own). Its first use sweeps the directories of dead owners; a normal exit removes it."""
    root = _sandbox_dir()
    _sweep(root)
    path = root / f"o-{_pid_namespace()}-{pid}-{_start_time(pid)}"
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o711)
    atexit.register(_remove_owner_dir, pid, path)
    return path


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
    forces ``fork()`` of the whole parent, which is slow in a process holding a model; without one
    ``subprocess`` uses ``vfork()``, so the limits are set by an exec'd ``prlimit`` instead
    (``benchmarks/sandbox.py`` measures the sandbox's throughput)."""
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
                max_output: int = FILE_LIMIT) -> Result:
    """Run ``source`` in a fresh, limited interpreter (see the module doc); never raises for what the
    program does (``RuntimeError`` where it would have to run as root). ``max_output``: bytes read of
    the stdout of a program that exits 0; its stderr, and a failed program's stdout, are read up to
    ``min(max_output, ERROR_OUTPUT)``."""
    t0 = time.perf_counter()
    mode = _mode()
    owner = _owner_dir(os.getpid())
    work = Path(tempfile.mkdtemp(prefix="p-", dir=owner))
    io_dir = Path(tempfile.mkdtemp(prefix="io-", dir=owner))  # ours, 0700: out of reach of a program run as nobody
    try:
        (work / "main.py").write_text(source, encoding="utf-8")
        if mode != "same-user":
            os.chown(work, NOBODY, NOBODY)
            os.chown(work / "main.py", NOBODY, NOBODY)
        if mode == "namespaces":
            cmd = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--", "sh", "-c",
                   _inner("main.py")]
        else:
            cmd = (_setpriv() if mode == "setpriv" else []) + [_python(), "-I", "-S", "main.py"]
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
        stderr = _read_head(io_dir / "err", min(max_output, ERROR_OUTPUT))
        stdout = _read_head(io_dir / "out", max_output if rc == 0 else min(max_output, ERROR_OUTPUT))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(io_dir, ignore_errors=True)
    return Result(_status(rc, stderr), rc, stdout, stderr, _MEASURES[mode], time.perf_counter() - t0)


def run_batch(programs: Sequence[Program], timeout: float = 4.0, memory_mb: int = 1024,
              workers: int | None = None) -> list[Result]:
    """Run ``programs`` in parallel (up to ``workers``, default the core count); results in order."""
    workers = workers or os.cpu_count() or 1
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(programs))) as pool:
        return list(pool.map(lambda p: run_program(p.source, p.stdin, timeout, memory_mb), programs))


__all__ = ["Result", "Program", "run_program", "run_batch", "STATUSES", "isolation", "namespaces_available"]
