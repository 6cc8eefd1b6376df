"""The value and search commands end to end with a real tiny policy (the shipped Countdown base):
value data from every maker, value models trained on the core, every search method at three
budgets, and the comparison's files."""

from __future__ import annotations

import json

import pytest

from test_search_trees import check_tree

from searchrl.cli import main
from searchrl.data import read_jsonl

SMOKE = ["--preset", "smoke"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("search") / "run"


def cli(run, *args):
    assert main([*args, "--run-dir", str(run), "--quiet"]) == 0


def test_value_data_makers_and_training(run_dir, capsys):
    # the smoke preset's settings (a run directory keeps the config of its first command)
    assert main(["compare-search", *SMOKE, "--run-dir", str(run_dir), "--quiet", "search.methods=[vote]"]) == 0
    for source in ("orm", "vgs", "vm-mcts", "math-shepherd"):
        cli(run_dir, "value-data", "--source", source)
    dirs = {p.name.split("-")[0] if not p.name.startswith("vm-") else "vm-mcts": p
            for p in (run_dir / "value-data").iterdir()}
    orm = [r for f in sorted(dirs["orm"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert len(orm) == 6 and {r["target"] for r in orm} <= {0.0, 1.0}
    vgs = [r for f in sorted(dirs["vgs"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert len(vgs) == 3 * 2 * 2 and {r["label"] for r in vgs} <= {0, 1, 2} and all(r["rollout_ids"] for r in vgs)
    alg2 = [r for f in sorted(dirs["vm-mcts"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert alg2 and all(0.0 <= r["target"] <= 1.0 for r in alg2)
    for d in dirs.values():  # every maker's data budget: the tokens its policy generated
        assert json.loads((d / "summary.json").read_text())["generated_tokens"] > 0
    steps = [r for f in sorted(dirs["math"].glob("*.jsonl")) for r in read_jsonl(f)]
    assert len(steps) > 3 * 2 and {r["target"] for r in steps} <= {0.0, 1.0}  # every step of 2 responses a problem
    # a rerun resumes: nothing is regenerated (the shard files keep their modification times)
    before = {f: f.stat().st_mtime_ns for d in dirs.values() for f in d.glob("*.jsonl")}
    cli(run_dir, "value-data", "--source", "orm")
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())
    # another shard size reads the shards there into the new layout (nothing sampled, nothing duplicated)
    cli(run_dir, "value-data", "--source", "orm", "value_data.shard_problems=3", "value_data.batch_size=1")
    assert [r for f in sorted(dirs["orm"].glob("*.jsonl")) for r in read_jsonl(f)] == orm
    assert json.loads((dirs["orm"] / "summary.json").read_text())["generated_tokens"] == sum(
        len(r["state_ids"]) for r in orm)
    assert [f.name for f in dirs["orm"].glob("*.jsonl")] == json.loads((dirs["orm"] / "summary.json").read_text())[
        "files"] == ["000000-000002-" + f.name.split("-")[2] for f in dirs["orm"].glob("*.jsonl")]
    for kind, source in (("orm", "orm"), ("3class", "vgs"), ("scalar", "vm-mcts")):
        cli(run_dir, "train-value", "--kind", kind, "--data", str(dirs[source]))
        assert (run_dir / "value" / kind / "final" / "model.safetensors").exists()
    # MCTS* value targets, guided by the scalar value model
    cli(run_dir, "value-data", "--source", "mcts-star", "--value", str(run_dir / "value/scalar/final"))
    # the wrong kind of data for a head is refused with file, line and field
    capsys.readouterr()
    assert main(["train-value", "--kind", "3class", "--data", str(dirs["orm"]), "--name", "bad", "--run-dir",
                 str(run_dir), "--quiet"]) == 2
    assert "field 'rollout_ids'" in capsys.readouterr().err
    # other data into a trained model's directory is refused, naming what differs
    assert main(["train-value", "--kind", "3class", "--data", str(dirs["orm"]), "--run-dir", str(run_dir),
                 "--quiet"]) == 2
    assert "was made with a different config: data" in capsys.readouterr().err


def test_compare_search_every_method_at_three_budgets(run_dir, capsys):
    """Unset value models are made first (those trained above are reused: their stages are done)."""
    trained = {p: p.stat().st_mtime_ns for p in (run_dir / "value").glob("*/final/model.safetensors")}
    assert main(["compare-search", *SMOKE, "--run-dir", str(run_dir), "--quiet"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in trained.items()) and len(trained) == 3
    assert (run_dir / "value/mcts-star/final/model.safetensors").exists()  # made now, from MCTS* targets
    out = run_dir / "compare-search"
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert {r["method"] for r in rows} == {"bon-oracle", "vote", "bon-orm", "bon-value", "weighted-vote", "orm-vote",
                                           "prm-min", "prm-vote", "mcts-star-vote", "vm-mcts", "orm-mcts", "mcts-star",
                                           "bon-classifier", "classifier-vote", "beam", "dvts"}
    assert {r["budget_tokens"] for r in rows} == {100, 200, 400} and len(rows) == 48
    for r in rows:
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0 and r["n_problems"] == 3
        assert r["generated_tokens"] > 0
        # budgets hold: no problem of any method generated more than its budget
        assert r["max_generated_tokens"] <= r["budget_tokens"], r
        assert r["budget_used"] == pytest.approx(r["generated_tokens"] / r["budget_tokens"]) and r["budget_used"] <= 1
    # the oracle is an upper bound of every pool method at the same budget
    by = {(r["method"], r["budget_tokens"]): r for r in rows}
    for b in (100, 200, 400):
        for m in ("vote", "bon-value", "bon-orm", "weighted-vote", "orm-vote", "prm-min", "prm-vote", "mcts-star-vote",
                  "bon-classifier", "classifier-vote"):
            assert by[(m, b)]["accuracy"] <= by[("bon-oracle", b)]["accuracy"]
        assert by[("bon-oracle", b)]["value_tokens"] == 0 < by[("bon-value", b)]["value_tokens"]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 10_000
    assert "BoN, verifier (oracle)" in (out / "results.md").read_text()
    # what each search did: every problem's tree (search.keep_trees 20 > 3) beside each result, the same
    # problems, grades and tokens as the result, one chosen path from the root to the response
    answered = set()
    for r in rows:
        m, b = r["method"], r["budget_tokens"]
        lines = read_jsonl(out / "methods" / f"trees-{m}-{b}.jsonl")
        result = json.loads((out / "methods" / f"{m}-{b}-{lines[0]['key']}.json").read_text())
        assert result["row"] == {**r, "seconds": result["row"]["seconds"]}
        assert [x["index"] for x in lines] == [p["index"] for p in result["problems"]] == [0, 1, 2]
        for x, p in zip(lines, result["problems"]):
            assert (x["method"], x["budget"], x["correct"], x["generated_tokens"]) == (m, b, p["correct"],
                                                                                      p["generated_tokens"])
            assert x["prompt"] and len(x["nodes"]) >= 2
            if x["response"]:
                path = check_tree(x["nodes"], x["response"])
                assert x["nodes"][path[-1]]["reward"] == float(x["correct"])  # countdown: reward 1 iff correct
                answered.add(m)
            if "samples" in p:  # a pool method: the root and one child per sample read
                assert len(x["nodes"]) == 1 + max(p["samples"], 1) and all(n["parent"] == 0 for n in x["nodes"][1:])
            if m in ("vm-mcts", "orm-mcts", "mcts-star"):
                assert all(n["visits"] is not None for n in x["nodes"] if n["kind"] == "tree")
    assert answered == {r["method"] for r in rows}
    # a rerun recomputes nothing
    files = {p: p.stat().st_mtime_ns for p in (out / "methods").iterdir()}
    assert main(["compare-search", "--run-dir", str(run_dir), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "methods").iterdir()} == files
    # one method at one budget
    capsys.readouterr()
    assert main(["search", "--method", "bon", "--budget", "200", "--run-dir", str(run_dir), "--quiet"]) == 0
    assert "BoN, value model at 200 tokens" in capsys.readouterr().out
    assert len(read_jsonl(run_dir / "search" / "methods" / "trees-bon-value-200.jsonl")) == 3
    # search.keep_trees bounds the trees and keys no result: other values rewrite the trees only (from the pool,
    # and from the shards of the tree searches, which hold every tree they kept when searched)
    results = {p: p.stat().st_mtime_ns for p in (out / "methods").glob("**/*.json*")
               if not p.name.startswith("trees-")}
    for keep, lines in ((1, 1), (0, None), (-1, 3)):
        assert main(["compare-search", "--run-dir", str(run_dir), "--quiet", f"search.keep_trees={keep}"]) == 0
        trees = sorted((out / "methods").glob("trees-*.jsonl"))
        assert [len(read_jsonl(p)) for p in trees] == ([lines] * 48 if lines else [])
    assert {p: p.stat().st_mtime_ns for p in (out / "methods").glob("**/*.json*")
            if not p.name.startswith("trees-")} == results
    # a value-model setting that is not one is refused, naming it
    assert main(["search", "--method", "vm-mcts", "--budget", "200", "--run-dir", str(run_dir), "--quiet",
                 f"search.value={run_dir / 'data'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search.value: ") and "no 'model_type' field" in err


def test_claims_read_off_the_comparison_with_paired_differences(run_dir):
    """experiments/search_claims.py on the smoke comparison above (every method at 100/200/400 tokens)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "search_claims", Path(__file__).resolve().parents[1] / "experiments" / "search_claims.py")
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    assert [claims.verdict(ci) for ci in ([0.01, 0.2], [-0.2, -0.01], [-0.1, 0.1], None)] == [
        "reproduced", "refuted", "inconclusive at this power", "no data"]
    report = claims.claim_tables({"vgs": run_dir, "rest_rl": run_dir, "rest_mcts": run_dir})
    assert [c["id"] for c in report["claims"]] == ["vgs", "rest-rl-table2", "rest-mcts-verifiers", "rest-mcts-search"]
    for c in report["claims"]:
        assert len(c["comparisons"]) == 3 * len(c["verdicts"])  # every pair at every budget
        for x in c["comparisons"]:
            assert x["problems"] == 3 and x["verdict"] == claims.verdict(x["ci"])
            assert x["diff"] == pytest.approx(x["winner_row"]["accuracy"] - x["loser_row"]["accuracy"])
    md = claims.markdown(report)
    assert "| VGS beam (w=2) > BoN, VGS classifier (beam > BoN" in md and "VM-MCTS > ORM-MCTS: **" in md
    out = run_dir / "claims.md"
    assert claims.main(["--vgs", str(run_dir), "--out", str(out)]) == 0 and out.read_text().startswith("### VGS")


def test_the_pool_samples_at_search_top_p_and_keys_it_only_when_set(run_dir, monkeypatch):
    """VGS samples every row at top-p 0.95: ``search.top_p`` reaches the pool's sampling, and enters the
    pool's key (and so every method's) only when it is not 1, so earlier pools keep theirs."""
    import searchrl.rollout
    from searchrl.config import SearchConfig, load_config
    from searchrl.pipelines.run import Run
    from searchrl.pipelines.search import Searcher, pool_settings
    from searchrl.settings import SettingError

    assert pool_settings(SearchConfig()) == {"n": 32, "temperature": 1.0, "max_tokens": 896, "seed": 0}
    assert pool_settings(SearchConfig(top_p=0.95))["top_p"] == 0.95
    with pytest.raises(SettingError, match="top_p"):
        SearchConfig(top_p=0.0)
    seen = []

    def fake_rollout(gen, task, problems, params, indices=None, advance=None):
        seen.extend(params)
        return [[] for _ in problems]

    monkeypatch.setattr(searchrl.rollout, "rollout", fake_rollout)
    cfg = load_config([str(run_dir / "config.yaml")], [f"run_dir={run_dir}", "search.top_p=0.95",
                                                       "search.methods=[vote]"])
    s = Searcher(Run(cfg, progress=False).open(), ["vote"])
    s.pool()
    assert seen and {p.top_p for p in seen} == {0.95}
    plain = {k: v for k, v in pool_settings(s.cfg).items() if k != "top_p"}
    assert s.key(**pool_settings(s.cfg)) != s.key(**plain)  # another pool than the smoke comparison's
    assert (run_dir / "compare-search" / f"pool-{s.key(**plain)}").is_dir()  # which top-p 1 keeps finding
