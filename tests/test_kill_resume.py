"""kill -9 and resume: ``rest-grpo``, ``rest-mcts`` and ``compare-search`` killed at several points
(a shard of their sampling or search, a checkpoint of their training, a later iteration), then let
finish, end with the same results as an uninterrupted run (the demo's is in test_selftrain.py).

Each test starts the uninterrupted run in the background, kills the other run while it runs (each
kill at a marker path that must not exist yet when that attempt starts, so every kill lands at a new
point), then compares the two run directories: records, shards and model weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

# the Countdown settings of the search-smoke preset (the shipped policy was trained on such problems)
COUNTDOWN = ["task.n_train=20", "task.n_selftrain=6", "task.n_valid=2", "task.n_valid_unseen=2", "task.n_test=4",
             "task.min_target=10", "task.max_target=59", "task.max_number=19", "task.workers=1",
             "model.max_seq_len=512"]
MODEL = ["--model", "builtin:sos-tiny-base"]
TIMEOUT = 600


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _cmd(command: str, run_dir: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "searchrl.cli", command, "--run-dir", str(run_dir), "--quiet", *args]


def _found(run_dir: Path, pattern: str) -> list[Path]:
    try:
        return sorted(run_dir.glob(pattern))
    except OSError:  # a directory removed while globbing (a checkpoint being replaced)
        return []


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _finish(proc: subprocess.Popen, log: Path, what: str) -> None:
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _killpg(proc)
        raise AssertionError(f"{what} did not finish in {TIMEOUT} s:\n{_tail(log)}")
    assert rc == 0, f"{what} failed (exit {rc}):\n{_tail(log)}"


def _kill_at_markers(cmd: list[str], run_dir: Path, markers: list[str], done: str, logs: Path) -> None:
    """Start ``cmd`` once per marker (a glob under ``run_dir``), SIGKILL its process group as soon as
    the marker appears; fail if the marker is there before the start or the run ends first."""
    for n, marker in enumerate(markers, 1):
        assert not _found(run_dir, marker), (f"{marker} already exists before kill {n}: the previous kill landed "
                                             f"too late to test a new point")
        log = logs / f"killed-{n}.log"
        proc = _start(cmd, log)
        try:
            deadline = time.time() + TIMEOUT
            while not _found(run_dir, marker) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, (f"the run ended (exit {proc.returncode}) before {marker} appeared, so it "
                                         f"was not killed there:\n{_tail(log)}")
            assert _found(run_dir, marker), f"{marker} did not appear in {TIMEOUT} s"
        finally:
            _killpg(proc)
        assert not (run_dir / done).exists(), f"killed at {marker} but {done} was already written"


def _run_clean_and_killed(tmp_path: Path, command: str, args: list[str], markers: list[str],
                          done: str) -> tuple[Path, Path]:
    """The uninterrupted run (in the background) and the killed-then-finished one; their run dirs."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean_proc = _start(_cmd(command, clean, args), tmp_path / "clean.log")
    try:
        _kill_at_markers(_cmd(command, killed, args), killed, markers, done, tmp_path)
        last = _start(_cmd(command, killed, args), tmp_path / "killed-last.log")
        _finish(last, tmp_path / "killed-last.log", f"{command} resumed after {len(markers)} kills")
    except BaseException:
        _killpg(clean_proc)
        raise
    _finish(clean_proc, tmp_path / "clean.log", f"the uninterrupted {command}")
    tmp = [str(p.relative_to(killed)) for p in killed.rglob("*")
           if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    assert not tmp, f"temporary files left in the killed run: {tmp}"
    return clean, killed


# ---- comparisons


def _timing(key: str) -> bool:
    return key.startswith("time") or key.endswith("per_s") or key in ("seconds", "machine")


def _strip(value):
    """``value`` without its timing fields, at any depth."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not _timing(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _jsonl(path: Path) -> list:
    return [_strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _json(path: Path):
    return _strip(json.loads(path.read_text()))


def _weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def assert_same_weights(clean: Path, killed: Path, rel: str) -> None:
    a, b = _weights(clean / rel), _weights(killed / rel)
    assert a.keys() == b.keys(), rel
    differ = [k for k in a
              if not (a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bool((a[k] == b[k]).all()))]
    assert not differ, f"{rel}: the resumed run's weights differ from the uninterrupted run's in {differ}"


def assert_trained(run: Path, rel: str) -> None:
    """The policy in ``rel`` moved away from the shipped one (so comparing weights compares training)."""
    from searchrl.models import resolve_model_path

    base, got = _weights(resolve_model_path(MODEL[1])), _weights(run / rel)
    assert any(not bool((base[k] == got[k]).all()) for k in base), f"{rel} has the base policy's weights"


def resumed_from_step(run: Path, rel: str) -> int:
    return json.loads((run / rel / "final" / "train_state.json").read_text())["resumed_from_step"]


def assert_same_files(clean: Path, killed: Path, pattern: str, expect: int | None = None) -> None:
    """Every file matching ``pattern`` exists in both runs with the same records (timings left out)."""
    names = [str(p.relative_to(clean)) for p in sorted(clean.glob(pattern))]
    assert names == [str(p.relative_to(killed)) for p in sorted(killed.glob(pattern))], pattern
    assert names and (expect is None or len(names) == expect), f"{pattern}: {names}"
    for n in names:
        load = _jsonl if n.endswith(".jsonl") else _json
        assert load(killed / n) == load(clean / n), f"{n} differs between the resumed and the uninterrupted run"


# ---- the commands


@pytest.mark.slow
def test_rest_grpo_survives_sigkill_and_resumes_to_the_same_policy(tmp_path):
    args = [*MODEL, *COUNTDOWN, "rest_grpo.n_problems=4", "rest_grpo.samples=4", "rest_grpo.shard_problems=2",
            "rest_grpo.iterations=2", "rest_grpo.grpo_iterations=2", "grpo.prompts_per_step=2",
            "grpo.samples_per_prompt=4",
            "grpo.max_tokens=160", "grpo.batch_size=16", "grpo.minibatch_size=8", "grpo.save_every=1", "grpo.lr=1e-4"]
    # inside iteration 1's sampling (after 1 of 2 shards), inside iteration 2's GRPO (after step 1 of 2; its
    # restart takes iteration 1's policy from its done.json and iteration 2's prompts from their file)
    markers = ["rest-grpo/iter1/samples/*/000000-000001.jsonl", "rest-grpo/iter2/grpo/checkpoints/step-1"]
    clean, killed = _run_clean_and_killed(tmp_path, "rest-grpo", args, markers, "rest-grpo/iter2/done.json")
    assert_same_files(clean, killed, "rest-grpo/iter*/done.json", 2)
    assert all("skipped" not in _json(p) for p in clean.glob("rest-grpo/iter*/done.json"))  # both iterations trained
    assert_same_files(clean, killed, "rest-grpo/iter*/assembly.json", 2)
    assert_same_files(clean, killed, "rest-grpo/iter*/prompts.jsonl", 2)
    assert_same_files(clean, killed, "rest-grpo/iter*/samples/*/*.jsonl", 4)
    assert_same_files(clean, killed, "rest-grpo/iter*/grpo/metrics.jsonl", 2)
    assert [len(_jsonl(p)) for p in sorted(killed.glob("rest-grpo/iter*/grpo/metrics.jsonl"))] == [2, 2]
    for it in (1, 2):
        assert_same_weights(clean, killed, f"rest-grpo/iter{it}/grpo/final")
    assert_trained(clean, "rest-grpo/iter2/grpo/final")
    assert resumed_from_step(killed, "rest-grpo/iter2/grpo") == 1  # the second kill landed inside the training


@pytest.mark.slow
def test_rest_mcts_survives_sigkill_and_resumes_to_the_same_models(tmp_path):
    # on Countdown with the shipped policy: it solves some questions, so each iteration trains the policy too
    # (a from-scratch math policy would solve none and never train)
    args = [*MODEL, *COUNTDOWN, "rest_mcts.iterations=2", "rest_mcts.n_problems=4", "rest_mcts.v0_problems=2",
            "rest_mcts.search_iterations=3", "rest_mcts.max_tokens=200", "rest_mcts.batch_size=16",
            "rest_mcts.shard_problems=2", "search.mcts_star.step_lines=4", "value.max_steps=2", "value.warmup_steps=1",
            "value.max_seq_len=512", "value.tokens_per_batch=2048", "value.save_every=1", "value.log_every=1",
            "rest_sft.max_steps=2", "rest_sft.warmup_steps=1", "rest_sft.save_every=1", "rest_sft.log_every=1",
            "rest_sft.max_seq_len=512"]
    # (log_every=1: a metrics line averages the steps since the previous line or the restart, so only lines of
    # one step each are the same in a resumed run)
    # inside iteration 1's MCTS* (after 1 of 2 shards; V0 is trained), inside iteration 2's value training
    # (after step 1 of 2; its restart reads iteration 1's models and value targets from the files)
    markers = ["rest-mcts/iter1/search/*/000000-000001.jsonl", "rest-mcts/iter2/value/checkpoints/step-1"]
    clean, killed = _run_clean_and_killed(tmp_path, "rest-mcts", args, markers, "rest-mcts/iter2/done.json")
    assert_same_files(clean, killed, "rest-mcts/iter*/done.json", 2)
    done = [_json(p) for p in sorted(clean.glob("rest-mcts/iter*/done.json"))]
    assert [d["policy"] for d in done] == ["iter1/policy/final", "iter2/policy/final"]  # the policy trained
    assert [d["value"] for d in done] == ["iter1/value/final", "iter2/value/final"]
    assert_same_files(clean, killed, "rest-mcts/iter*/stats.json", 2)
    assert_same_files(clean, killed, "rest-mcts/iter*/value-data.jsonl", 2)
    assert_same_files(clean, killed, "rest-mcts/v0-data.jsonl", 1)
    assert_same_files(clean, killed, "rest-mcts/iter*/search/*/*.jsonl", 4)
    assert_same_files(clean, killed, "rest-mcts/**/metrics.jsonl", 5)
    for rel in ("v0/final", "iter1/policy/final", "iter1/value/final", "iter2/policy/final", "iter2/value/final"):
        assert_same_weights(clean, killed, f"rest-mcts/{rel}")
    assert_trained(clean, "rest-mcts/iter2/policy/final")
    assert resumed_from_step(killed, "rest-mcts/iter2/value") == 1  # the second kill landed inside the training


@pytest.mark.slow
def test_compare_search_survives_sigkill_and_resumes_to_the_same_rows(tmp_path):
    # the smoke preset with one value model (the scalar one, from VM-MCTS data) and three methods at two budgets
    args = ["--preset", "smoke", "search.methods=[vote,bon-value,vm-mcts]", "search.budgets=[100,200]",
            "search.shard_problems=1"]
    # inside the value model's training (after step 2 of 3), inside VM-MCTS at the second budget (after 1 of 3
    # shards; the first budget's rows are finished)
    markers = ["value/scalar/checkpoints/step-2", "compare-search/methods/vm-mcts-200-*/000000-000000.jsonl"]
    clean, killed = _run_clean_and_killed(tmp_path, "compare-search", args, markers, "compare-search/results.json")
    res = {run: json.loads((run / "compare-search" / "results.json").read_text()) for run in (clean, killed)}
    rows = {run: [{k: v for k, v in r.items() if k != "seconds"} for r in res[run]["rows"]] for run in res}
    assert len(rows[clean]) == 6 and rows[killed] == rows[clean]
    assert _strip(res[killed]["meta"]) == _strip(res[clean]["meta"])  # all but the machine
    assert_same_files(clean, killed, "compare-search/methods/*.json", 6)
    assert_same_files(clean, killed, "compare-search/methods/*/*.jsonl", 6)
    assert_same_files(clean, killed, "compare-search/pool-*/*.jsonl", 3)
    assert_same_files(clean, killed, "value-data/vm-mcts-*/*.jsonl", 2)
    assert_same_files(clean, killed, "value/scalar/metrics.jsonl", 1)
    assert_same_weights(clean, killed, "value/scalar/final")
    assert resumed_from_step(killed, "value/scalar") == 2  # the first kill landed inside the training
