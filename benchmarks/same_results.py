"""Do two versions of searchrl give the same results? The smoke runs of every method, side by side.

A refactor must not change what the library computes. This script runs the smoke settings of
``demo``, ``compare-search``, ``ppo``, ``grpo``, ``rest-grpo``, ``selftrain`` (the code task with
multi-turn self-repair episodes) and ``rest-mcts`` once with a reference version (a git commit,
checked out into a temporary worktree) and once with this checkout, then compares the two run
directories file by file: every JSON / JSON Lines record (with fields that measure time or name
the machine left out) and the bytes of every weights file.

    python benchmarks/same_results.py --ref <commit> [--only ppo,grpo] [--out /tmp/same]

It prints one line per command (same, or the files that differ and how) and writes
``<out>/report.json``. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model", "builtin:sos-tiny-base"]
COUNTDOWN = ["task.n_train=20", "task.n_selftrain=6", "task.n_valid=2", "task.n_valid_unseen=2", "task.n_test=4",
             "task.min_target=10", "task.max_target=59", "task.max_number=19", "task.workers=1", "model.max_seq_len=512"]
CODE = ["task.name=code", "task.n_train=48", "task.n_selftrain=6", "task.n_valid=2", "task.n_valid_unseen=2",
        "task.n_test=2", "task.workers=1", "model.name=micro", "model.max_seq_len=512", "sft.max_steps=8",
        "sft.warmup_steps=1", "sft.tokens_per_batch=2048", "sft.max_seq_len=512", "sft.save_every=4", "sft.log_every=1"]
RL = ["iterations=2", "prompts_per_step=2", "samples_per_prompt=4", "max_tokens=96", "batch_size=16",
      "minibatch_size=4", "save_every=1", "log_every=1"]

#: command -> the searchrl invocations (run in order, in one run directory)
SMOKES: dict[str, list[list[str]]] = {
    "demo": [["demo", "--preset", "smoke"]],
    "compare-search": [["compare-search", "--preset", "smoke"]],
    "ppo": [["ppo", *MODEL, *COUNTDOWN, *[f"ppo.{s}" for s in RL]]],
    "grpo": [["grpo", *MODEL, *COUNTDOWN, *[f"grpo.{s}" for s in RL], "grpo.policy_loss=dapo", "grpo.clip_high=0.28",
              "grpo.dynamic_sampling=true", "grpo.overlong_buffer=16"]],
    "rest-grpo": [["rest-grpo", *MODEL, *COUNTDOWN, "rest_grpo.n_problems=4", "rest_grpo.samples=4",
                   "rest_grpo.shard_problems=2", "rest_grpo.iterations=2", "grpo.iterations=2",
                   "grpo.prompts_per_step=2", "grpo.samples_per_prompt=4", "grpo.max_tokens=160", "grpo.batch_size=16",
                   "grpo.minibatch_size=8", "grpo.save_every=1", "grpo.lr=1e-4"]],
    "selftrain-code": [["sft", *CODE],
                       ["selftrain", "selftrain.turns=2", "selftrain.iterations=1", "selftrain.guidance_rounds=1",
                        "selftrain.n_problems=6", "selftrain.max_tokens=192", "selftrain.batch_size=8",
                        "selftrain.shard_problems=3", "rest_sft.max_steps=2", "rest_sft.warmup_steps=1",
                        "rest_sft.tokens_per_batch=2048", "rest_sft.max_seq_len=512", "rest_sft.log_every=1"]],
    "rest-mcts": [["rest-mcts", *MODEL, *COUNTDOWN, "rest_mcts.iterations=2", "rest_mcts.n_problems=4",
                   "rest_mcts.v0_problems=2", "rest_mcts.search_iterations=3", "rest_mcts.max_tokens=200",
                   "rest_mcts.batch_size=16", "rest_mcts.shard_problems=2", "search.mcts_star.step_lines=4",
                   "value.max_steps=2", "value.warmup_steps=1", "value.max_seq_len=512", "value.tokens_per_batch=2048",
                   "value.save_every=1", "value.log_every=1", "rest_sft.max_steps=2", "rest_sft.warmup_steps=1",
                   "rest_sft.save_every=1", "rest_sft.log_every=1", "rest_sft.max_seq_len=512"]],
}

#: record fields that measure time or name the machine: they differ between any two runs
VOLATILE = ("seconds", "time", "elapsed", "machine", "timings_s", "this_invocation_s", "per_s", "wall", "date",
            "throughput", "tokens_per_second", "samples_per_second", "duration")
#: files that hold no results (logs, the config record that names paths, the run's own timings)
SKIP = ("config.yaml", "timings.json")


def _volatile(key: str) -> bool:
    return any(v in key.lower() for v in VOLATILE)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not _volatile(str(k))}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def fingerprint(run_dir: Path, src: Path) -> dict[str, object]:
    """Every result file of a run directory: JSON records without volatile fields, weights as hashes.
    Paths of the source tree (a shipped checkpoint's) and of the run directory read as ``<src>`` and
    ``<run>``, since the two versions run from different places. Shard keys in file names read as
    ``<key>``: a key digests model fingerprints, and a model's ``config.json`` records the path it was
    initialised from (the shipped checkpoint's, in the other source tree); the files' contents are
    compared all the same."""
    out: dict[str, object] = {}

    def text(p: Path) -> str:  # paths of the two places, and shard keys in paths named inside records
        t = p.read_text().replace(str(run_dir.resolve()), "<run>").replace(str(src.resolve()), "<src>")
        return re.sub(r"(?<=-)[0-9a-f]{12}(?![0-9a-z])", "<key>", t)

    for p in sorted(run_dir.rglob("*")):
        if not p.is_file() or p.name in SKIP or p.name.startswith("."):
            continue
        rel = re.sub(r"(?<![0-9a-z])[0-9a-f]{12}(?![0-9a-z])", "<key>", str(p.relative_to(run_dir)))
        if p.suffix == ".json":
            value = _clean(json.loads(text(p)))
        elif p.suffix == ".jsonl":
            value = [_clean(json.loads(line)) for line in text(p).splitlines() if line.strip()]
        elif p.suffix in (".safetensors", ".bin"):
            value = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            continue
        out.setdefault(rel, []).append(value)
    return {k: sorted(v, key=lambda x: json.dumps(x, sort_keys=True)) for k, v in out.items()}


def run_smoke(src: Path, name: str, run_dir: Path) -> float:
    """Run one command's invocations with the searchrl of ``src`` (its own package on the path)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    for argv in SMOKES[name]:
        cmd = [sys.executable, "-m", "searchrl.cli", *argv, "--run-dir", str(run_dir), "--quiet"]
        done = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name} with {src}: {' '.join(argv[:1])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def compare(a: dict, b: dict) -> list[str]:
    """What differs between two fingerprints, one line per file."""
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            lines.append(f"{key}: only in {'the reference' if key in a else 'this checkout'}")
        elif a[key] != b[key]:
            lines.append(f"{key}: differs ({_first_difference(a[key], b[key])})")
    return lines


def _first_difference(x, y, path: str = "") -> str:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y), key=str):
            if x.get(k, "<absent>") != y.get(k, "<absent>"):
                return _first_difference(x.get(k, "<absent>"), y.get(k, "<absent>"), f"{path}.{k}")
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            if u != v:
                return _first_difference(u, v, f"{path}[{i}]")
    return f"{path or 'value'}: {str(x)[:80]} vs {str(y)[:80]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="git commit of the reference version")
    ap.add_argument("--only", default="", help="comma-separated commands (default: all of " + ", ".join(SMOKES) + ")")
    ap.add_argument("--out", default="", help="where the run directories and report.json go (default: a temp dir)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SMOKES)
    unknown = [n for n in names if n not in SMOKES]
    if unknown:
        ap.error(f"unknown commands {unknown}; known: {', '.join(SMOKES)}")
    out = Path(args.out or tempfile.mkdtemp(prefix="same-results-"))
    out.mkdir(parents=True, exist_ok=True)
    ref = out / "ref-src"
    if not ref.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref), args.ref], check=True,
                       capture_output=True)
    report, failed = {"ref": args.ref, "commands": {}}, False
    try:
        for name in names:
            times = {which: run_smoke(src, name, out / which / name)
                     for which, src in (("ref", ref), ("new", ROOT))}
            new = fingerprint(out / "new" / name, ROOT)
            diff = compare(fingerprint(out / "ref" / name, ref), new)
            n_files = len(new)
            report["commands"][name] = {"files_compared": n_files, "differences": diff,
                                        "seconds": {k: round(v, 1) for k, v in times.items()}}
            failed |= bool(diff)
            print(f"{name}: {'same' if not diff else f'{len(diff)} of {n_files} files differ'} ({n_files} files; "
                  f"ref {times['ref']:.0f} s, new {times['new']:.0f} s)")
            for line in diff[:20]:
                print("   ", line)
            (out / "report.json").write_text(json.dumps(report, indent=2))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref)], capture_output=True)
    print(f"report: {out / 'report.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
