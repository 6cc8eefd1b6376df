"""The sft -> eval commands end to end on minuscule settings, and their error handling."""

from __future__ import annotations

import json

import pytest

from searchrl.cli import main


SMALL = ["data.n_train=40", "data.n_valid=4", "data.n_test=5", "data.max_target=30", "data.workers=1",
         "model.name=micro", "model.max_seq_len=512", "sft.max_steps=4", "sft.warmup_steps=1",
         "sft.tokens_per_batch=2048", "sft.max_seq_len=512", "sft.save_every=2", "sft.log_every=1",
         "eval.n_problems=3", "eval.n_samples=4", "eval.ks=[1,2,4]", "eval.max_tokens=64",
         "eval.batch_size=8", "eval.method=tiny"]


def test_sft_then_eval_write_their_files(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    assert (run / "sft" / "final" / "config.json").exists()
    assert (run / "sft" / "final" / "tokenizer.json").exists()
    assert (run / "config.yaml").exists() and (run / "data" / "stats.json").exists()
    assert main(["eval", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    res = json.loads((run / "eval" / "results.json").read_text())
    summary = res["methods"]["tiny"]
    assert set(summary) == {"test_seen", "test_unseen"}
    for split in summary.values():
        assert set(split["pass@k"]) == {"1", "2", "4"} and split["num_samples"] == 12
        assert 0.0 <= split["greedy"] <= 1.0
    for name in ("results.md", "passk.png", "accuracy_vs_budget.png"):
        assert (run / "eval" / name).stat().st_size > 0
    assert "| tiny |" in capsys.readouterr().out
    # a rerun recomputes nothing: the sample shards are reused as they are
    shards = sorted((run / "eval" / "samples").rglob("*.jsonl"))
    before = {p: p.stat().st_mtime_ns for p in shards}
    assert main(["eval", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    assert {p: p.stat().st_mtime_ns for p in shards} == before
    assert main(["generate", "--run-dir", str(run), "--quiet", "--split", "valid", "--n", "2", *SMALL]) == 0
    assert json.loads((run / "generate" / "valid-sampled-summary.json").read_text())["samples"] == 6


def test_eval_on_another_split_reports_that_split(tmp_path):
    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "eval.splits=[valid]"]) == 0
    assert main(["eval", "--run-dir", str(run), "--quiet", *SMALL, "eval.splits=[valid]"]) == 0
    md = (run / "eval" / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| tiny |"))
    assert "valid" in md and row.count("–") == 0


def test_a_different_config_into_the_same_run_dir_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "sft.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "sft.lr" in err


def test_run_dir_from_an_older_version_without_a_new_setting_is_accepted(tmp_path):
    """A key added later (here sft.grad_accum), at its default, is not a config change."""
    import yaml

    from searchrl.config import load_config
    from searchrl.runs import RunDirError, prepare_run_dir

    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}"])
    run = prepare_run_dir(cfg)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    del recorded["sft"]["grad_accum"], recorded["rest_sft"]["grad_accum"]
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    prepare_run_dir(cfg)  # accepted, and the new key is recorded
    assert yaml.safe_load((run / "config.yaml").read_text())["sft"]["grad_accum"] == 1
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(RunDirError, match="sft.grad_accum"):  # a non-default value is a change
        prepare_run_dir(load_config(None, [f"run_dir={tmp_path / 'run'}", "sft.grad_accum=2"]))
    for damaged in ("", "just a string", "- 1"):  # a config.yaml that is no config is refused
        (run / "config.yaml").write_text(damaged)
        with pytest.raises(RunDirError, match="different config"):
            prepare_run_dir(cfg)


@pytest.mark.parametrize("recipe", ["recipes/countdown/sos-tiny.yaml",
                                    "recipes/countdown/guided-rest-llama-3.2-1b.yaml",
                                    "searchrl/presets/demo-default.yaml", "searchrl/presets/demo-smoke.yaml"])
def test_shipped_recipes_load(recipe):
    from pathlib import Path

    from searchrl.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config([root / recipe], ["model.name=/some/model"] if "llama" in recipe else [])
    assert cfg.sft.grad_accum >= 1 and cfg.rest_sft.tokens_per_batch >= cfg.rest_sft.max_seq_len


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["sft", "--run-dir", str(tmp_path), "sft.lrr=1"]) == 2
    assert "lrr" in capsys.readouterr().err
