"""Fan-out (searchrl.fanout): shards made by workers are the shards one process makes.

The shard loop's contract is checked with stand-in workers (any completion order, a crash
mid-way); then a local Ray cluster started here (``ray.init(num_cpus=2)``) with two actors
makes the evaluation samples, a self-training iteration's generation and the shards of a
pool method and three tree searches of the shipped Countdown policy, and every record file is
compared with the single-process run's: the same records, the sampler's logprobs within 1e-5.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from searchrl.data import read_jsonl, resumable_shards
from searchrl.fanout import LocalWorkers, Resources


class Reversed(LocalWorkers):
    """Stand-in for a pool: shards finish in the opposite order."""

    def map(self, job, spans, advance=None):
        for span in reversed(list(spans)):
            yield span, job(self.resources, span[0], span[1], lambda k: None)


def job(res, start, end, advance):
    return [{"i": i, "seen": res.task} for i in range(start, end)]


def test_records_come_back_in_problem_order_whatever_order_shards_finish(tmp_path):
    def path_of(s, e):
        return tmp_path / f"{s}-{e}.jsonl"

    got = resumable_shards(7, 3, path_of, job, progress=False, workers=Reversed(Resources("T")))
    assert [r["i"] for r in got] == list(range(7)) and {r["seen"] for r in got} == {"T"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-3.jsonl", "3-6.jsonl", "6-7.jsonl"]


def test_a_crash_keeps_the_shards_that_arrived_and_a_rerun_makes_only_the_rest(tmp_path):
    calls = []

    def flaky(res, start, end, advance):
        calls.append(start)
        if start == 3 and len(calls) == 2:
            raise RuntimeError("worker lost")
        return job(res, start, end, advance)

    def path_of(s, e):
        return tmp_path / f"{s}-{e}.jsonl"

    with pytest.raises(RuntimeError):
        resumable_shards(7, 3, path_of, flaky, progress=False, workers=LocalWorkers(Resources("T")))
    assert [p.name for p in tmp_path.iterdir()] == ["0-3.jsonl"]  # nothing half-written for shard 3
    got = resumable_shards(7, 3, path_of, flaky, progress=False, workers=Reversed(Resources("T")))
    assert calls == [0, 3, 6, 3] and [r["i"] for r in got] == list(range(7))


def test_resources_load_once_and_hold_one_policy_at_a_time():
    loads = []
    res = Resources("T", load_generator=lambda p, bs: loads.append((p, bs)) or f"gen:{p}",
                    load_scorer=lambda p: f"value:{p}")
    assert res.generator("/a", 8) == res.generator("/a", 8) == "gen:/a"
    assert res.generator("/b", 8) == "gen:/b" and res.generator("/a", 8) == "gen:/a"
    assert loads == [("/a", 8), ("/b", 8), ("/a", 8)]  # asking for /b freed /a
    assert res.scorer("/v") == "value:/v"
    fixed = Resources("T", generator="mine")
    assert fixed.generator("/anything") == "mine"
    with pytest.raises(ValueError, match="load_scorer"):
        fixed.scorer("/v")


# ---- a real Ray cluster

SMOKE = Path(__file__).resolve().parents[1] / "searchrl" / "presets" / "search-smoke.yaml"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install 'searchrl[ray]' to test the Ray fan-out")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def files(d: Path) -> dict[str, list[dict]]:
    """Every record file of a run (not the training metrics: they hold wall times)."""
    return {str(p.relative_to(d)): read_jsonl(p) for p in sorted(d.rglob("*.jsonl")) if p.name != "metrics.jsonl"}


def same_records(a: list[dict], b: list[dict]) -> bool:
    """Equal records; the sampler's logprobs within 1e-5 (a prompt's KV read from the prefix cache
    and one computed afresh differ in the last float bits, and each worker's cache saw other prompts)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if {k: v for k, v in x.items() if k != "logprobs"} != {k: v for k, v in y.items() if k != "logprobs"}:
            return False
        if len(x.get("logprobs") or []) != len(y.get("logprobs") or []) or any(
                abs(p - q) > 1e-5 for p, q in zip(x.get("logprobs") or [], y.get("logprobs") or [])):
            return False
    return True


def make_run(run_dir: Path, value: Path | None, workers: int):
    from searchrl.config import load_config
    from searchrl.pipelines.run import Run

    over = [f"run_dir={run_dir}", f"engine.workers={workers}", "search.n_problems=4", "search.shard_problems=2",
            "eval.splits=[test_seen]", "eval.n_problems=4", "eval.n_samples=2", "eval.ks=[1,2]", "eval.max_tokens=96",
            "eval.shard_problems=2", "eval.batch_size=8", "search.mcts_star.iterations=2"]
    if value is not None:  # one model for every method: the mechanics, not the methods' quality
        over += [f"search.value={value}", f"search.classifier={value}", f"search.mcts_star_value={value}"]
    return Run(load_config(str(SMOKE), over), progress=False).open()


def test_two_ray_workers_write_the_shards_one_process_writes(ray_cluster, tmp_path):
    from searchrl.config import SelfTrainConfig
    from searchrl.models.value import ValueModel
    from searchrl.pipelines.search import Searcher
    from searchrl.selftrain.rest import run_selftrain

    local = make_run(tmp_path / "local", None, 0)
    local.ensure_data()
    base = local.base_model()
    value = tmp_path / "value"  # an untrained head: the searches' mechanics, not their quality
    policy, _ = local.load(base)
    ValueModel.from_policy(policy, "scalar", seed=0).save_pretrained(value)
    local = make_run(tmp_path / "local", value, 0)
    remote = make_run(tmp_path / "ray", value, 2)
    st = SelfTrainConfig(iterations=1, guidance_rounds=1, n_problems=5, shard_problems=2, max_tokens=96,
                         batch_size=8)
    sft = dataclasses.replace(local.cfg.rest_sft, max_steps=1, warmup_steps=0)
    for run in (local, remote):
        run.ensure_data()
        run.evaluate(base, run.dir / "eval")
        run_selftrain(run.selftrain_context(), cfg=st, sft_cfg=sft, method_dir=run.dir / "guided-rest", base_model=base)
        s = Searcher(run, ["vote", "vm-mcts", "mcts-star", "beam"], policy=base)
        for m in s.methods:
            s.run_method(m, 200)
    remote.workers().close()
    want, got = files(local.dir), files(remote.dir)
    assert sorted(want) == sorted(got) and len(want) >= 3 + 3 + 2 * 4
    assert any("vm-mcts" in k for k in want) and any(k.startswith("guided-rest/iter1/gen") for k in want)
    assert [k for k in want if not same_records(want[k], got[k])] == []
    tree = [r for f in sorted((tmp_path / "ray" / "compare-search" / "methods").rglob("*.jsonl")) for r in read_jsonl(f)]
    assert tree and all(r["generated_tokens"] > 0 for r in tree)


def test_a_rerun_on_ray_makes_only_the_missing_shard(ray_cluster, tmp_path):
    run = make_run(tmp_path / "run", None, 2)
    run.ensure_data()
    out = run.dir / "eval"
    run.evaluate(run.base_model(), out)
    shards = sorted((out / "samples").rglob("*.jsonl"))
    lost = shards[1]
    kept = {p: p.stat().st_mtime_ns for p in shards if p != lost}
    before = read_jsonl(lost)
    lost.unlink()
    run.evaluate(run.base_model(), out)
    run.workers().close()
    assert same_records(read_jsonl(lost), before)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
