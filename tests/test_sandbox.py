"""The sandbox against hostile programs: each test asserts how the program was contained."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searchrl.tasks.code import sandbox
from searchrl.tasks.code.sandbox import (BASE_MEASURES, ERROR_OUTPUT, Program, isolation, namespaces_available,
                                         run_batch, run_program)
from searchrl.tasks.code.suites import grade_stdio

NS = pytest.mark.skipif(not namespaces_available(), reason="no unshare/setpriv as root here: namespaces not in force")
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="not root: programs run as our user, nothing to drop")


def test_ordinary_programs_stdin_exit_codes_and_exceptions():
    r = run_program("import sys\nprint(input()[::-1]); sys.stderr.write('e')", stdin="abc\n")
    assert (r.status, r.returncode, r.stdout, r.stderr) == ("ok", 0, "cba\n", "e")
    assert set(r.isolation) >= {"fresh-interpreter", "scrubbed-env", "rlimits", "process-group", "tempdir"}
    r = run_program("raise ValueError('boom')")
    assert r.status == "error" and r.returncode == 1 and "ValueError: boom" in r.stderr
    assert run_program("import sys; sys.exit(3)").returncode == 3
    assert run_program("print(input())").status == "error"  # no stdin unless given: EOFError


def test_infinite_loop_and_sleep_are_killed_at_the_wall_clock():
    for source in ("while True: pass", "import time; time.sleep(60)"):
        t0 = time.perf_counter()
        r = run_program(source, timeout=1.0)
        assert r.status == "timeout" and r.returncode is None
        assert time.perf_counter() - t0 < 5


def test_memory_bomb_hits_the_address_space_limit():
    r = run_program("x = bytearray(8 * 1024 ** 3)", memory_mb=256)
    assert r.status == "memory"


def test_printing_gigabytes_is_cut_and_the_parent_reads_a_bounded_head():
    t0 = time.perf_counter()
    r = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout=5.0, max_output=1000)
    assert len(r.stdout) == 1000 and r.status in ("error", "timeout")
    assert time.perf_counter() - t0 < 10
    # by default too: a program that failed (here at the 16 MiB file-size limit) gets a bounded head read
    r = run_program("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout=5.0)
    assert r.status in ("error", "timeout") and len(r.stdout) == ERROR_OUTPUT


def test_a_correct_program_with_a_megabyte_of_output_passes_a_stdio_test():
    n = 160_000  # ~1 MB of output: far past the 64 KiB that used to be read
    want = "\n".join(map(str, range(n))) + "\n"
    problem = {"tests": [{"input": f"{n}\n", "output": want}]}
    code = "n = int(input())\nprint('\\n'.join(map(str, range(n))))"
    [ok] = grade_stdio([problem], [code])
    assert (ok.passed, ok.total, ok.statuses) == (1, 1, ["ok"]), ok
    assert len(run_program(code, stdin=f"{n}\n").stdout) == len(want) > 1_000_000
    wrong = {"tests": [{"input": f"{n}\n", "output": want.replace(f"{n - 1}\n", "0\n")}]}
    assert grade_stdio([wrong], [code])[0].passed == 0  # the whole output is compared, its last line too


def test_the_parents_secrets_do_not_reach_the_program(monkeypatch):
    monkeypatch.setenv("SEARCHRL_TEST_SECRET", "hunter2")
    r = run_program("import os; print(sorted(os.environ)); print(os.environ.get('SEARCHRL_TEST_SECRET'))")
    assert "hunter2" not in r.stdout and "SEARCHRL_TEST_SECRET" not in r.stdout


def test_killing_the_parent_does_not_work():
    me = os.getpid()
    r = run_program(f"import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill({me}, signal.SIGKILL)")
    assert r.status == "error"  # we are still here to read it


def test_a_fork_bomb_is_contained_and_leaves_no_process_behind():
    r = run_program("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                    timeout=1.5)
    assert r.status in ("timeout", "error")
    time.sleep(0.3)
    marker = "__searchrl_forkbomb_marker__"
    # the orphan carries the marker on its command line, so other programs running meanwhile do not count
    r2 = run_program(f"import os, sys\nif os.fork() == 0:\n    os.execv(sys.executable, [sys.executable, '-c', "
                     f"'import time; time.sleep(60)', {marker!r}])\n", timeout=1.0)
    assert r2.status == "ok"
    time.sleep(0.3)
    if "pid-namespace" in r2.isolation:  # the orphan died with the namespace
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
        assert left.strip() == "", left


@NS
def test_writing_outside_the_work_dir_fails_or_vanishes(tmp_path):
    # this checkout's files, and a system directory; a checkout under /tmp is hidden by the private /tmp
    for target in (Path(__file__).resolve().parent / "pwned.txt", Path("/etc/searchrl-pwned.txt")):
        r = run_program(f"open({str(target)!r}, 'w').write('x')")
        why = "No such file or directory" if target.parts[1] == "tmp" else "Permission denied"
        assert r.status == "error" and why in r.stderr and not target.exists(), (target, r.stderr)
    r = run_program("open('/tmp/searchrl-pwned.txt', 'w').write('x'); open('here.txt', 'w').write('ok')")
    assert r.status == "ok" and not Path("/tmp/searchrl-pwned.txt").exists()  # a private /tmp


@NS
def test_no_network_connection_leaves_the_namespace():
    r = run_program("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\nprint('connected')")
    assert r.status == "error" and "connected" not in r.stdout
    r = run_program("import socket\nsocket.create_connection(('10.0.0.1', 80), timeout=1)")
    assert r.status == "error" and ("unreachable" in r.stderr or "refused" in r.stderr)


def test_isolation_names_what_was_in_force():
    got = isolation()
    assert ("net-namespace" in got) == namespaces_available()
    assert run_program("pass").isolation == got


def test_batch_keeps_order_and_runs_in_parallel():
    programs = [Program(f"import time; time.sleep(0.5); print({i})") for i in range(4)]
    t0 = time.perf_counter()
    results = run_batch(programs, workers=4)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert time.perf_counter() - t0 < 4 * 0.5 + 1.0  # not one after the other
    assert run_batch([]) == []


def test_the_resource_limits_are_in_force_inside_the_program():
    r = run_program("import resource as r\nprint([r.getrlimit(x) for x in (r.RLIMIT_AS, r.RLIMIT_CPU, r.RLIMIT_FSIZE, "
                    "r.RLIMIT_NOFILE, r.RLIMIT_NPROC, r.RLIMIT_CORE)])", timeout=2.5, memory_mb=512)
    assert r.status == "ok"
    mib = 1024 * 1024
    assert r.stdout.strip() == str([(512 * mib, 512 * mib), (3, 3), (16 * mib, 16 * mib), (64, 64), (64, 64), (0, 0)])


_KILLED = """
import os, threading, time
from searchrl.tasks.code import sandbox
print(sandbox._owner_dir(os.getpid()), flush=True)
for _ in range(2):
    threading.Thread(target=sandbox.run_program, args=("import time; time.sleep(2)", "stdin"),
                     kwargs={"timeout": 30}, daemon=True).start()
time.sleep(60)
"""
_LIVE = """
import os, sys
from searchrl.tasks.code import sandbox
assert sandbox.run_program("print(1)").stdout == "1\\n"
print(sandbox._owner_dir(os.getpid()), flush=True)
sys.stdin.read()
"""


def test_the_dirs_of_a_killed_parent_are_swept_at_the_next_first_use_and_a_live_parents_are_not():
    mine = sandbox._owner_dir(os.getpid())
    killed = subprocess.Popen([sys.executable, "-c", _KILLED], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", _LIVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reused = None
    try:
        owner = Path(killed.stdout.readline().strip())
        deadline = time.monotonic() + 20
        while not ({"p", "io"} <= {d.name.split("-")[0] for d in owner.iterdir()} and list(owner.glob("p-*/main.py"))):
            assert time.monotonic() < deadline, list(owner.iterdir())
            time.sleep(0.05)
        # the live parent's first use (its sweep) is over before the other one dies: on a loaded machine it
        # could otherwise come after the kill and sweep the dead owner's dirs before the first use below
        live_owner = Path(live.stdout.readline().strip())
        killed.kill()  # mid-way: its programs are still sleeping, nothing of it cleans up
        killed.wait()
        assert owner.exists() and live_owner.exists() and owner.parent == live_owner.parent == mine.parent
        # our own pid with another start time: the pid was reused, its first owner is gone
        _, ns, pid, start = mine.name.split("-")
        reused = mine.parent / f"o-{ns}-{pid}-{int(start) + 1}"
        (reused / "p-x").mkdir(parents=True)
        first_use = subprocess.run([sys.executable, "-c", "from searchrl.tasks.code.sandbox import run_program; "
                                    "print(run_program('print(2)').stdout)"], capture_output=True, text=True,
                                   timeout=60)
        assert first_use.stdout == "2\n\n", first_use.stderr
        assert not owner.exists() and not reused.exists()
        assert live_owner.exists() and mine.exists()  # live owners keep theirs
    finally:
        killed.kill()
        live.stdin.close()
        assert live.wait(timeout=30) == 0
        if reused is not None:
            shutil.rmtree(reused, ignore_errors=True)
    assert not live_owner.exists()  # a normal exit removes its own


@ROOT
def test_as_root_without_namespaces_programs_run_as_nobody_and_a_fork_bomb_is_bounded(monkeypatch):
    if not shutil.which("setpriv"):
        pytest.skip("no setpriv here: a root parent without namespaces refuses (tested below)")
    monkeypatch.setattr(sandbox, "namespaces_available", lambda: False)
    assert isolation() == BASE_MEASURES + ("unprivileged-user",)
    r = run_program("import os\nprint(os.getuid(), os.getgid(), os.getgroups())\nopen('here.txt', 'w').write('ok')")
    assert (r.status, r.stdout, r.isolation) == ("ok", "65534 65534 []\n", isolation()), r.stderr
    target = Path(__file__).resolve().parent / "pwned.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "error" and "Permission denied" in r.stderr and not target.exists()
    me = os.getpid()
    r = run_program(f"import os, signal\nos.kill({me}, signal.SIGKILL)")
    assert r.status == "error" and "PermissionError" in r.stderr
    # forks until the process limit (64, counted for nobody: other programs running as nobody count too)
    bomb = ("import os, time\nn = 0\nfor _ in range(300):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
            "    n += 1\nprint(n)")
    r = run_program(bomb, timeout=10)
    assert r.status == "ok" and int(r.stdout) < 64, (r.stdout, r.stderr)


@ROOT
def test_as_root_with_neither_namespaces_nor_setpriv_nothing_runs(monkeypatch):
    which = shutil.which
    monkeypatch.setattr(sandbox, "namespaces_available", lambda: False)
    monkeypatch.setattr(sandbox.shutil, "which", lambda cmd, *a: None if cmd == "setpriv" else which(cmd, *a))
    monkeypatch.setattr(sandbox, "_setpriv_probe", sandbox._setpriv_probe.__wrapped__)  # not the cached answer
    with pytest.raises(RuntimeError, match="refusing to run untrusted programs as root.*setpriv"):
        run_program("print('as root')")
    with pytest.raises(RuntimeError, match="refusing"):
        isolation()
