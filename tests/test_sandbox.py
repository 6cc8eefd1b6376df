"""The sandbox against hostile programs: each test asserts how the program was contained."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from searchrl.tasks.code.sandbox import Program, isolation, namespaces_available, run_batch, run_program

NS = pytest.mark.skipif(not namespaces_available(), reason="no unshare/setpriv as root here: namespaces not in force")


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
