"""ReST / Guided-ReST mechanics on an untrained tiny model, and the demo's kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searchrl.data import read_json, read_jsonl
from searchrl.models import load_policy
from searchrl.rundir import resolve
from searchrl.selftrain import Context
from searchrl.selftrain.rest import SelfTrainConfig, run_selftrain
from searchrl.tasks.countdown import CountdownConfig, CountdownTask, build_countdown_tokenizer, grade
from searchrl.train.sft import SFTConfig


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("cd")
    task = CountdownTask(CountdownConfig(n_train=40, n_selftrain=40, n_valid=4, n_valid_unseen=2, n_test=4, n_numbers=3, max_target=30, workers=1), d)
    task.prepare(progress=False)
    return task


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    model, tok = load_policy("micro", build_countdown_tokenizer(0), max_seq_len=512, seed=0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _loader(path):
    return load_policy(str(path))


def _ctx(task):
    return Context(task, _loader, progress=False)


def _sft(**kw):
    return SFTConfig(output_dir="", max_steps=3, warmup_steps=1, tokens_per_batch=2048, max_seq_len=512,
                     save_every=0, log_every=1, **kw)


def test_more_problems_than_the_split_holds_is_refused_before_anything_is_written(task, base, tmp_path):
    from searchrl.data import InputError

    cfg = SelfTrainConfig(iterations=1, guidance_rounds=0, n_problems=41, max_tokens=160)
    with pytest.raises(InputError, match="split 'selftrain' has only 40 problems"):
        run_selftrain(_ctx(task), cfg=cfg, sft_cfg=_sft(), method_dir=tmp_path / "rest",
                  base_model=base)
    assert not (tmp_path / "rest").exists()


def test_guidance_rounds_rescue_failures_with_an_untrained_model(task, base, tmp_path):
    cfg = SelfTrainConfig(iterations=1, guidance_rounds=3, n_problems=16, max_tokens=160, shard_problems=8,
                          batch_size=16)
    final = run_selftrain(_ctx(task), cfg=cfg, sft_cfg=_sft(), method_dir=tmp_path / "guided",
                  base_model=base)
    stats = read_json(tmp_path / "guided" / "iter1" / "gen_stats.json")
    # an untrained model solves nothing by itself; the splice forces progress: for a
    # 2-step solution round 1 resets to the root, round 2 adds the first step, round 3 the goal
    assert stats["solved_by_round"][0] == 0
    assert sum(stats["solved_by_round"][1:]) == stats["kept"] > 0
    assert stats["solved_by_round"][3] > 0
    problems = task.problems("selftrain")
    data = read_jsonl(tmp_path / "guided" / "iter1" / "data.jsonl")
    assert len(data) == stats["kept"]
    tok = _loader(base)[1]
    for rec in data:
        p = problems[rec["index"]]
        assert grade(rec["response"], p["target"], p["nums"])          # kept data are all correct
        assert tok.decode(rec["prompt_ids"]).endswith("<|assistant|>")
        # the response's ids are the guided prefix followed by exactly what was sampled
        assert len(rec["logprobs"]) == len(rec["response_ids"]) - rec["prefix_len"] > 0
        assert tok.decode(rec["response_ids"], skip_special_tokens=True) == rec["response"]
    assert (final / "config.json").exists()


def test_rest_keeps_only_correct_and_restarts_from_base(task, base, tmp_path):
    cfg = SelfTrainConfig(iterations=2, guidance_rounds=3, n_problems=8, max_tokens=160, shard_problems=8,
                          batch_size=8)
    run_selftrain(_ctx(task), cfg=cfg, sft_cfg=_sft(), method_dir=tmp_path / "g",
                  base_model=base)
    for it in (1, 2):
        assert resolve(tmp_path / "g", read_json(tmp_path / "g" / f"iter{it}" / "done.json")["initialised_from"]) == base
    # continuing from the previous iteration is an option
    run_selftrain(_ctx(task), cfg=SelfTrainConfig(**{**cfg.__dict__, "from_base": False}), sft_cfg=_sft(),
                  method_dir=tmp_path / "c", base_model=base)
    assert read_json(tmp_path / "c" / "iter2" / "done.json")["initialised_from"] == "iter1/sft/final"
    # plain ReST with an untrained model keeps nothing: the policy stays the base, and the record says so
    final = run_selftrain(_ctx(task), cfg=SelfTrainConfig(**{**cfg.__dict__, "guidance_rounds": 0}), sft_cfg=_sft(),
                          method_dir=tmp_path / "r", base_model=base)
    assert final == base
    assert read_json(tmp_path / "r" / "iter1" / "done.json")["skipped"]
    assert read_json(tmp_path / "r" / "iter1" / "gen_stats.json")["kept"] == 0


def _demo_cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "searchrl.cli", "demo", "--preset", "smoke", "--run-dir", str(run_dir),
            "--quiet"]


def _results(run_dir: Path) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    stats = {m: [{k: v for k, v in s.items() if k not in ("seconds", "policy")} for s in its]
             for m, its in res["selftrain"].items()}
    return {"methods": res["methods"], "selftrain": stats}


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.mark.slow
def test_demo_smoke_survives_sigkill_and_resumes_to_the_same_results(tmp_path):
    clean = tmp_path / "clean"
    subprocess.run(_demo_cmd(clean), check=True, env=_env(), capture_output=True, timeout=600)
    for name in ("results.json", "results.md", "passk.png", "accuracy_vs_budget.png"):
        assert (clean / name).exists()

    killed = tmp_path / "killed"
    # kill it three times: inside the base SFT, inside ReST generation and inside PPO, then let it finish
    for marker in ("sft/checkpoints", "rest/iter1/gen", "ppo-sos/checkpoints"):
        proc = subprocess.Popen(_demo_cmd(killed), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while not (killed / marker).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the demo ended before {marker} appeared"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (killed / "results.json").exists()
    subprocess.run(_demo_cmd(killed), check=True, env=_env(), capture_output=True, timeout=600)
    assert _results(killed) == _results(clean)


def test_a_copied_demo_run_dir_uses_its_own_models(tmp_path):
    """Paths inside a run dir are relative to it, even ReST's when it keeps nothing (its policy is
    then the run's SFT model, outside the method's directory)."""
    import shutil

    first = tmp_path / "first"
    subprocess.run(_demo_cmd(first), check=True, env=_env(), capture_output=True, timeout=600)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    shutil.move(first, tmp_path / "moved")
    # the records the pipeline reads paths from (trainers' own summaries only note where they wrote)
    for name in ("stage.json", "done.json", "gen_stats.json", "results.json"):
        for p in copy.rglob(name):
            assert str(first) not in p.read_text(), p
    out = subprocess.run(_demo_cmd(copy), env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert _results(copy) == _results(tmp_path / "moved")
