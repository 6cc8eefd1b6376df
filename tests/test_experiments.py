"""The validation study script runs end to end (smoke preset) and never reads a test split."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_guided_vs_rest_study_on_smoke_settings(tmp_path, capsys):
    study = _load("countdown_guided_vs_rest")
    assert study.explored("Exploring Operation: 1+2=3\nExploring Operation: 3*3=9\n") == 2
    run = tmp_path / "study"
    assert study.main(["--preset", "smoke", "--run-dir", str(run), "--n-problems", "4", "--n-samples", "2"]) == 0
    md = (run / "study" / "study.md").read_text()
    assert "## Paired differences" in md and "| ReST | Guided-ReST | pass@1 |" in md and "## Search effort" in md
    out = json.loads((run / "study" / "study.json").read_text())
    assert set(out["summaries"]) >= {"SoS", "ReST", "Guided-ReST", "ReST iter 1", "Guided-ReST iter 1"}
    assert all(list(s) == ["valid_unseen"] for s in out["summaries"].values())
    # only the validation splits were sampled: no test split appears under any eval directory
    sampled = {p.name for p in run.rglob("samples/*") if p.is_dir()}
    assert sampled and sampled <= {"valid", "valid_unseen"}
    # the splice-likelihood script reads that run's Guided-ReST data (smoke: all of it rescued)
    splice = _load("countdown_splice_logprobs")
    capsys.readouterr()
    assert splice.main(["--run-dir", str(run)]) == 0
    res = json.loads(capsys.readouterr().out)
    rescued = res["rescued (rounds >= 1)"]
    assert rescued["n"] > 0 and rescued["mean_token_logprob"] < 0 and 0 <= rescued["share_of_tokens_below_1pct"] <= 1


def test_token_efficiency_by_hand(tmp_path):
    """Guided-ReST's "2x token efficiency" read off accuracy-vs-budget curves: counted by hand."""
    te = _load("token_efficiency")

    def write(method, samples):  # problem -> [(correct, tokens)]
        d = tmp_path / method / "samples" / "test_seen" / "sampled-abc"
        d.mkdir(parents=True)
        d.joinpath("000000-000001.jsonl").write_text("".join(
            json.dumps({"index": i, "sample": j, "correct": c, "num_tokens": t}) + "\n"
            for i, s in samples.items() for j, (c, t) in enumerate(s)))

    # the base is right on half its samples at 100 tokens; the method on half at 40 and half at 90
    write("base", {0: [(True, 100), (False, 100)], 1: [(True, 80), (False, 30)]})
    write("fast", {0: [(True, 40), (False, 10)], 1: [(True, 50), (True, 90)]})
    method, base = te.load_samples(tmp_path, "fast", "test_seen"), te.load_samples(tmp_path, "base", "test_seen")
    assert base == {0: [(True, 100), (False, 100)], 1: [(True, 80), (False, 30)]}
    # base at B = 100: (1/2 + 1/2) / 2 = 0.5; the method reaches 0.5 at 50 tokens (0.25 at 40, then 0.5): 2x
    r = te.compare(method, base, 100, resamples=200)
    assert (r["base_accuracy"], r["method_accuracy"], r["ratio"]) == (0.5, 0.75, 2.0)
    # at B/2 = 50 the method has (1/2, 1/2) against the base's (1/2, 1/2) at 100: difference 0
    assert r["half_budget"]["diff"] == 0.0 and r["problems"] == 2 and 0 < r["reached"] <= 1
    assert te.tokens_to_reach([[(False, 5)]], 0.5) is None and te.ratio([[(False, 5)]], base.values(), 100) == 0.0


def test_the_power_comparisons_interval_carries_seed_variance_and_steps_match(tmp_path):
    """experiments/code_rl_power.py: the two-level bootstrap, and GRPO's steps taken from ReST-GRPO's records."""
    import numpy as np
    import pytest

    pw = _load("code_rl_power")
    # the same shift on every problem and seed: the interval is that shift exactly
    a = np.tile(np.linspace(0, 1, 50), (3, 1))
    d, lo, hi = pw.two_level_ci(a, a + 0.1, draws=200)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # seeds that disagree (+0.3, 0, -0.3 on every problem): mean 0, but resampling seeds widens the interval
    # to what a draw of 3 of them can give (at least one draw of three +0.3 seeds among 200 is likely)
    b = a + np.array([[0.3], [0.0], [-0.3]])
    d, lo, hi = pw.two_level_ci(a, b, draws=200)
    assert d == pytest.approx(0.0) and lo < -0.1 and hi > 0.1
    # GRPO's steps per iteration: the mean of the same seed's ReST-GRPO iterations (one pass over P_Q+ each)
    for it, steps in ((1, 62), (2, 59)):
        p = tmp_path / "rest-grpo-lr3e-5-s1" / "rest-grpo" / f"iter{it}" / "done.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"grpo_iterations": steps, "training_samples": steps * 64}))
    assert pw.rest_grpo_steps(tmp_path, "3e-5", 1) == 60  # 60.5 rounds to even
    cmd = pw.command(tmp_path, "dapo", "3e-5", 1)
    assert "grpo.iterations=60" in cmd and "rest_grpo.method=grpo" in cmd and "grpo.policy_loss=dapo" in cmd
    assert pw.training_record(tmp_path, "rest-grpo", "3e-5", 1) == "GRPO samples 3968 + 3776"
    with pytest.raises(SystemExit, match="has not finished"):
        pw.rest_grpo_steps(tmp_path, "1e-4", 1)


def test_pass32_report_reads_any_sample_solved_and_pairs_the_arms(tmp_path, capsys):
    """experiments/guided_pass32.py: pass@32 of a problem is 'any of 32 correct', and the table pairs the arms."""
    import pytest

    p32 = _load("guided_pass32")

    def write(name, seed, seen, unseen, n=32, root=tmp_path):  # per-problem correct counts
        d = p32.eval_dir(root, name, seed)
        d.mkdir(parents=True)
        split = lambda c: {"per_problem": {"correct": c, "n": [n] * len(c)}}  # noqa: E731
        d.joinpath("results.json").write_text(json.dumps(
            {"methods": {name: {"test_seen": split(seen), "test_unseen": split(unseen)}}}))

    write("sos", None, [32, 1, 0, 0], [1, 0, 0, 0])
    for s in p32.SEEDS:
        write("rest", s, [1, 1, 0, 0], [1, 0, 0, 0])
        write("guided-rest", s, [2, 1, 1, 0], [1, 1, 1, 1])
    assert list(p32.pass_matrix(p32.counts(p32.eval_dir(tmp_path, "sos", None), "test_seen"), 32)) == [1, 1, 0, 0]
    data = tmp_path / "data"
    data.mkdir()
    data.joinpath("test_unseen.jsonl").write_text("".join(
        json.dumps({"nums": [1, 2, 3], "target": t}) + "\n" for t in (11, 46, 11, 46, 53)))  # one more than evaluated
    data.joinpath("train.jsonl").write_text("".join(json.dumps({"trace": t}) + "\n" for t in (
        "Current State: 12:[1, 11], Operations: []\nExploring Operation: 1+11=12", "11,46 unequal")))
    p32.report(tmp_path, data)
    out = capsys.readouterr().out
    # pass@32: SoS 50 / 25, ReST 50 / 25, Guided-ReST 75 / 100; the same on every seed, so the intervals are points
    assert "| Guided-ReST | 75.0 [75.0, 75.0, 75.0] | 100.0 [100.0, 100.0, 100.0] |" in out
    assert "| Guided-ReST − ReST | +25.0 (" in out and "| +75.0 (" in out
    # pass@1 from the same samples: SoS seen (32 + 1) / 32 / 4 problems, unseen 1 / 32 / 4
    assert "| SoS | 25.8 | 0.8 |" in out
    # pass@8 by the unbiased estimator: 1 correct of 32 gives 1 - C(31, 8) / C(32, 8) = 8 / 32; SoS seen (1 + 1/4) / 4
    assert "| SoS | 31.2 | 6.2 |" in out
    # where unseen pass@32 is decided: problems solved by target (Guided-ReST solves all four)
    assert "training traces (never as the target): 11: 3, 46: 1\n" in out
    assert "| arm | 11 | 46 |" in out and "| SoS | 1.0 / 2 | 0.0 / 2 |" in out and "| Guided-ReST | 2.0 / 2 | 2.0 / 2 |" in out
    write("sos", None, [1], [1], n=4, root=tmp_path / "bad")
    with pytest.raises(ValueError, match="expected 32 samples per problem"):
        p32.counts(p32.eval_dir(tmp_path / "bad", "sos", None), "test_seen")
