"""The value and search commands end to end with a real tiny policy (the shipped Countdown base):
value data from every maker, value models trained on the core, every search method at three
budgets, and the comparison's files."""

from __future__ import annotations

import json

import pytest

from searchrl.cli import main
from searchrl.data import read_jsonl

SETTINGS = ["base_model=builtin:sos-tiny-base", "task.n_train=20", "task.n_selftrain=6", "task.n_valid=2",
            "task.n_valid_unseen=2", "task.n_test=4", "task.min_target=10", "task.max_target=59",
            "task.max_number=19", "task.workers=1", "model.max_seq_len=512",
            "value_data.n_problems=3", "value_data.samples=2", "value_data.rollouts=2", "value_data.max_tokens=160",
            "value_data.shard_problems=2", "value_data.batch_size=16",
            "value.max_steps=3", "value.warmup_steps=1", "value.tokens_per_batch=2048", "value.max_seq_len=512",
            "value.log_every=1", "value.save_every=2",
            "search.vm_mcts.iterations=2", "search.vm_mcts.n=2", "search.mcts_star.iterations=3",
            "search.beam.num_blocks=4", "search.beam.block_size=48"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("search") / "run"


def cli(run, *args):
    assert main([*args, "--run-dir", str(run), "--quiet", *SETTINGS]) == 0


def test_value_data_makers_and_training(run_dir, capsys):
    for source in ("orm", "vgs", "vm-mcts"):
        cli(run_dir, "value-data", "--source", source)
    dirs = {p.name.split("-")[0] if not p.name.startswith("vm-") else "vm-mcts": p
            for p in (run_dir / "value-data").iterdir()}
    orm = [r for f in sorted(dirs["orm"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert len(orm) == 6 and {r["target"] for r in orm} <= {0.0, 1.0}
    vgs = [r for f in sorted(dirs["vgs"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert len(vgs) == 3 * 2 * 2 and {r["label"] for r in vgs} <= {0, 1, 2} and all(r["rollout_ids"] for r in vgs)
    alg2 = [r for f in sorted(dirs["vm-mcts"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert alg2 and all(0.0 <= r["target"] <= 1.0 for r in alg2)
    # a rerun resumes: nothing is regenerated (the shard files keep their modification times)
    before = {f: f.stat().st_mtime_ns for d in dirs.values() for f in d.glob("*.jsonl")}
    cli(run_dir, "value-data", "--source", "orm")
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())
    for kind, source in (("orm", "orm"), ("3class", "vgs"), ("scalar", "vm-mcts")):
        cli(run_dir, "train-value", "--kind", kind, "--data", str(dirs[source]))
        assert (run_dir / "value" / kind / "final" / "model.safetensors").exists()
    # MCTS* value targets, guided by the scalar value model
    cli(run_dir, "value-data", "--source", "mcts-star", "--value", str(run_dir / "value/scalar/final"))
    # the wrong kind of data for a head is refused with file, line and field
    capsys.readouterr()
    assert main(["train-value", "--kind", "3class", "--data", str(dirs["orm"]), "--run-dir", str(run_dir),
                 "--quiet", *SETTINGS]) == 2
    assert "field 'rollout_ids'" in capsys.readouterr().err


def test_compare_search_every_method_at_three_budgets(run_dir, capsys):
    models = [f"search.value={run_dir}/value/scalar/final", f"search.orm={run_dir}/value/orm/final",
              f"search.classifier={run_dir}/value/3class/final"]
    args = ["search.n_problems=3", "search.pool_samples=4", "search.max_tokens=160", "search.budgets=[100,200,400]",
            "search.batch_size=16", *models]
    assert main(["compare-search", "--run-dir", str(run_dir), "--quiet", *SETTINGS, *args]) == 0
    out = run_dir / "compare-search"
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    methods = {r["method"] for r in rows}
    assert methods == {"bon-oracle", "vote", "bon-orm", "bon-value", "weighted-vote", "prm-min", "vm-mcts",
                       "orm-mcts", "mcts-star", "beam", "dvts"}
    assert {r["budget_tokens"] for r in rows} == {100, 200, 400}
    for r in rows:
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0 and r["n_problems"] == 3
        assert r["generated_tokens"] > 0
    # the oracle is an upper bound of every pool method at the same budget
    by = {(r["method"], r["budget_tokens"]): r for r in rows}
    for b in (100, 200, 400):
        for m in ("vote", "bon-value", "bon-orm", "weighted-vote", "prm-min"):
            assert by[(m, b)]["accuracy"] <= by[("bon-oracle", b)]["accuracy"]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 10_000
    assert "BoN, verifier (oracle)" in (out / "results.md").read_text()
    # one method at one budget
    capsys.readouterr()
    assert main(["search", "--method", "bon", "--budget", "200", "--run-dir", str(run_dir), "--quiet", *SETTINGS,
                 *args]) == 0
    assert "BoN, value model at 200 tokens" in capsys.readouterr().out
    # a method without its value model is refused before any work
    assert main(["search", "--method", "vm-mcts", "--budget", "200", "--run-dir", str(run_dir), "--quiet",
                 *SETTINGS, "search.value=''"]) == 2
    assert "needs a value model" in capsys.readouterr().err
