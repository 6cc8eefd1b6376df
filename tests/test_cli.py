"""The sft -> eval commands end to end on minuscule settings, and their error handling."""

from __future__ import annotations

import json

import pytest

from searchrl.cli import main


SMALL = ["task.n_train=40", "task.n_selftrain=12", "task.n_valid=4", "task.n_valid_unseen=3", "task.n_test=5", "task.max_target=30", "task.workers=1",
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
    before = (run / "config.yaml").read_text()
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "sft.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "sft.lr" in err
    assert (run / "config.yaml").read_text() == before  # a refused command records nothing
    # eval refuses it too: its default model is that SFT model
    assert main(["eval", "--run-dir", str(run), "--quiet", "sft.lr=0.5"]) == 2


def test_later_stage_settings_recorded_config_and_copied_run_dirs(tmp_path):
    """A setting only a later stage reads is no conflict; a command on an existing run dir starts
    from its recorded config; a copied run dir evaluates its own checkpoints."""
    import shutil

    import yaml

    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    # no overrides at all: the recorded config (3 problems, 4 samples) is used, plus eval.n_samples on top
    assert main(["eval", "--run-dir", str(run), "--quiet", "eval.n_samples=2", "eval.ks=[1,2]"]) == 0
    res = json.loads((run / "eval" / "results.json").read_text())
    assert res["methods"]["tiny"]["test_seen"]["num_samples"] == 6
    assert res["meta"]["model"] == "sft/final"  # stored relative to the run dir
    assert yaml.safe_load((run / "config.yaml").read_text())["eval"]["n_samples"] == 2
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(run)  # the copy must not need the original
    assert main(["eval", "--run-dir", str(copy), "--quiet"]) == 0
    assert json.loads((copy / "eval" / "results.json").read_text())["methods"] == res["methods"]


def test_eval_of_another_model_never_reuses_the_first_models_samples(tmp_path):
    """The reproduced bug: eval of model A, then eval --model B into the same run dir reported
    A's samples as B's, because shards were named by index range only."""
    from searchrl.models import load_policy
    from searchrl.tasks.countdown import build_countdown_tokenizer

    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    assert main(["eval", "--run-dir", str(run), "--quiet"]) == 0
    a = json.loads((run / "eval" / "results.json").read_text())["methods"]["tiny"]
    other = tmp_path / "B"
    model, tok = load_policy("micro", build_countdown_tokenizer(0), max_seq_len=512, seed=123)
    model.save_pretrained(other)
    tok.save_pretrained(other)
    assert main(["eval", "--run-dir", str(run), "--quiet", "--model", str(other)]) == 0
    # named by its path: the recorded eval.method ("tiny") names the run's base, not B
    assert list(json.loads((run / "eval" / "results.json").read_text())["methods"]) == [f"{tmp_path.name}/B"]
    dirs = sorted((run / "eval" / "samples" / "test_seen").iterdir())
    assert len(dirs) == 4  # greedy + sampled, per model
    for mode in ("sampled",):  # each model's own samples (both greedy ones are empty here)
        texts = [[json.loads(x)["response"] for p in sorted(d.glob("*.jsonl")) for x in p.read_text().splitlines()]
                 for d in dirs if d.name.startswith(mode)]
        assert len(texts) == 2 and texts[0] != texts[1]
    # and A again: its own shards, recomputing nothing
    shards = sorted((run / "eval" / "samples").rglob("*.jsonl"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    assert main(["eval", "--run-dir", str(run), "--quiet"]) == 0
    assert json.loads((run / "eval" / "results.json").read_text())["methods"]["tiny"] == a
    assert {p: p.stat().st_mtime_ns for p in shards} == mtimes
    assert main(["eval", "--run-dir", str(run), "--quiet", "--model", str(other), "eval.method=B"]) == 0  # unless named
    assert list(json.loads((run / "eval" / "results.json").read_text())["methods"]) == ["B"]


def test_stage_from_an_older_version_without_a_new_setting_is_accepted(tmp_path, capsys):
    """A key added later (here sft.grad_accum), at its default, is not a config change."""
    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    stage = json.loads((run / "sft" / "stage.json").read_text())
    del stage["depends"]["sft"]["grad_accum"]
    (run / "sft" / "stage.json").write_text(json.dumps(stage))
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "sft.grad_accum=2"]) == 2
    assert "sft.grad_accum" in capsys.readouterr().err
    for damaged in ("just a string", "- 1"):  # a config.yaml that is no config is refused
        (run / "config.yaml").write_text(damaged)
        assert main(["eval", "--run-dir", str(run), "--quiet"]) == 2
        assert "not a mapping" in capsys.readouterr().err


def test_config_recorded_before_the_selftrain_split_keeps_its_meaning():
    """Self-training read `train` and the data had no selftrain/valid_unseen split before
    those settings existed: a recorded config without them still means that."""
    from searchrl.config import load_config, to_dict

    old = to_dict(load_config(None, []))
    del old["selftrain"]["split"], old["task"]["n_selftrain"], old["task"]["n_valid_unseen"], old["task"]["max_number"]
    cfg = load_config(None, [], base=old)
    assert (cfg.selftrain.split, cfg.task.n_selftrain, cfg.task.n_valid_unseen, cfg.task.max_number) == ("train", 0, 0, 0)
    new = load_config(None, [])  # no recorded config: the new defaults
    assert new.selftrain.split == "selftrain" and new.task.n_selftrain > 0 and new.task.n_valid_unseen > 0


def test_run_dir_recorded_before_the_selftrain_split_still_opens(tmp_path, capsys):
    import yaml

    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    # make it look like a run directory from before these settings existed
    new = ("n_selftrain", "n_valid_unseen", "max_number")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for k in new:
        del cfg["task"][k]
    del cfg["selftrain"]["split"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for stage in (run / "data" / "stage.json", run / "sft" / "stage.json"):
        rec = json.loads(stage.read_text())
        for k in new:
            del rec["depends"]["data"][k]
        stage.write_text(json.dumps(rec))
    assert main(["sft", "--run-dir", str(run), "--quiet"]) == 0, capsys.readouterr().err
    # asking for data it was not made with is still refused
    assert main(["sft", "--run-dir", str(run), "--quiet", "task.max_number=7"]) == 2
    assert "data.max_number (unset -> 7)" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["recipes/countdown/sos-tiny.yaml",
                                    "recipes/countdown/guided-rest-llama-3.2-1b.yaml",
                                    "searchrl/presets/demo-default.yaml", "searchrl/presets/demo-full.yaml",
                                    "searchrl/presets/demo-smoke.yaml"])
def test_shipped_recipes_load(recipe):
    from pathlib import Path

    from searchrl.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config([root / recipe], ["model.name=/some/model"] if "llama" in recipe else [])
    assert cfg.sft.grad_accum >= 1 and cfg.rest_sft.tokens_per_batch >= cfg.rest_sft.max_seq_len


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["sft", "--run-dir", str(tmp_path), "sft.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: command line: sft.lrr: no such setting (did you mean sft.lr?)"
    assert main(["sft", "--run-dir", str(tmp_path), "sft.lr=fast"]) == 2
    assert "command line: sft.lr:" in capsys.readouterr().err


def test_bad_recipes_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  lr: 1e-3\n  max_steps: [1\n")
    assert main(["sft", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:" in err and "invalid YAML" in err and "Traceback" not in err
    typo = tmp_path / "typo.yaml"
    typo.write_text("seed: 1\nsft:\n  lr: 1e-3\n  warmup_stpes: 3\n")
    assert main(["sft", "--config", str(typo), "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: {typo}:4: sft.warmup_stpes: no such setting (did you mean sft.warmup_steps?)"


def test_bad_training_records_name_file_line_and_field(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "--out", str(data), "--quiet", "task.n_train=8", "task.n_selftrain=2", "task.n_valid=2",
                 "task.n_valid_unseen=2", "task.n_test=2",
                 "task.max_target=30", "task.workers=1"]) == 0
    lines = (data / "train.jsonl").read_text().splitlines()
    for i, change, field in ((2, lambda r: r.pop("trace"), "'trace': missing"),
                             (6, lambda r: r.update(trace=123), "'trace': expected a Stream-of-Search trace")):
        recs = [json.loads(x) for x in lines]
        change(recs[i])
        (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        run = tmp_path / f"run{i}"
        assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, f"data_dir={data}"]) == 2
        assert f"{data / 'train.jsonl'}:{i + 1}: field {field}" in capsys.readouterr().err


def test_a_bad_model_is_refused_before_any_data_is_made(tmp_path, capsys):
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    (notmodel / "config.json").write_text('{"hello": 1}')
    run = tmp_path / "run"
    assert main(["eval", "--run-dir", str(run), "--quiet", *SMALL, "--model", str(notmodel)]) == 2
    assert "no 'model_type'" in capsys.readouterr().err
    assert not (run / "data").exists()
    assert main(["eval", "--run-dir", str(run), "--quiet", *SMALL, "--model", str(tmp_path / "nope")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_top_level_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom searchrl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: searchrl") and "Teach language models to search" in out.stdout


def test_demo_help_shows_the_presets_settings(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert "run_dir = 'runs/demo'" in out and "lr=0.0002" in _block(out, "rest_sft") and "about 30 s" in out
    assert "critic_lr=0.001" in _block(out, "ppo")  # the preset's PPO rows


def test_failed_and_refused_commands_leave_the_run_dir_usable(tmp_path, capsys):
    run = tmp_path / "run"
    # a setting refused when read: nothing recorded, the corrected command runs
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "task.max_target=12"]) == 2
    assert "task: targets 10..12 are too few" in capsys.readouterr().err
    assert not (run / "config.yaml").exists()
    # a stage that failed before producing anything does not hold on to its settings
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "model.name=/no/such/model"]) == 2
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    # the vocabulary of a model made from scratch is part of what SFT made
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL, "task.number_digits=2"]) == 2
    assert "model.vocabulary" in capsys.readouterr().err


def test_samples_are_keyed_by_backend_and_data_by_its_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["sft", "--run-dir", str(run), "--quiet", *SMALL]) == 0
    assert main(["eval", "--run-dir", str(run), "--quiet"]) == 0
    assert main(["eval", "--run-dir", str(run), "--quiet", "engine.backend=hf"]) == 0
    assert len(list((run / "eval" / "samples" / "test_seen").iterdir())) == 4  # new shards for the new backend
    # data that `searchrl data` prepared with other settings is not adopted silently
    other = tmp_path / "other"
    assert main(["data", "--out", str(other / "data"), "--quiet", "task.n_train=12", "task.n_valid=4",
                 "task.n_selftrain=12", "task.n_valid_unseen=3", "task.n_test=5", "task.max_target=30", "task.workers=1"]) == 0
    assert main(["sft", "--run-dir", str(other), "--quiet", *SMALL]) == 2
    assert "task.n_train (12 -> 40)" in capsys.readouterr().err


def test_demo_refuses_an_unknown_eval_split_before_training(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["demo", "--preset", "smoke", "--run-dir", str(run), "--quiet", "eval.splits=[test_seen,tset]"]) == 2
    assert "tset.jsonl: no such split" in capsys.readouterr().err
    assert not (run / "sft").exists() and not (run / "rest").exists()


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 0
    return capsys.readouterr().out


def _block(out: str, section: str) -> str:
    """The compact block of ``section`` in a scoped help (``  section.*: key=default, ...`` and its
    continuation lines), joined into one line."""
    lines = out.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith(f"  {section}.*: ")]
    end = start + 1
    while end < len(lines) and lines[end].startswith("      "):
        end += 1
    return " ".join(line.strip() for line in lines[start:end])


def test_help_shows_only_the_sections_the_command_reads(capsys):
    short = _help(capsys, "sft", "--help")
    assert len(short.splitlines()) <= 60, len(short.splitlines())
    # the command's own section explained setting by setting, the others one compact block each
    assert "  sft.lr = " in short and "name='tiny-1m'" in _block(short, "model") and "n_train=" in _block(short, "task")
    assert "  ppo." not in short and "  search." not in short and "  value." not in short
    assert "--help-all" in short
    full = _help(capsys, "sft", "--help-all")
    assert len(full.splitlines()) > 300 and "  ppo.critic_lr = " in full and "  search.budgets = " in full
    cs = _help(capsys, "compare-search", "--help")
    assert "  search.budgets = " in cs and "split=" in _block(cs, "value_data") and "lr=" in _block(cs, "value")
    assert "iterations=30" in _block(cs, "search.vm_mcts")  # a subsection of the focus section: compact
    assert "  ppo." not in cs and "  sft." not in cs
    rm = _help(capsys, "rest-mcts", "--help")  # one subsection of search only
    assert "iterations=" in _block(rm, "search.mcts_star") and "  search.budgets = " not in rm
    assert "  rest_mcts.iterations = " in rm
    from searchrl.cli import COMMAND_SECTIONS

    for command in COMMAND_SECTIONS:  # each about a screen, not ~360 lines
        assert len(_help(capsys, command, "--help").splitlines()) <= 90, command


def test_help_lists_the_settings_of_the_selected_task(capsys):
    countdown = _help(capsys, "sft", "--help")
    assert "task countdown" in countdown and "n_numbers=3" in _block(countdown, "task")
    code = _help(capsys, "sft", "--help", "task.name=code")
    assert "task code" in code and "n_public=" in _block(code, "task") and "n_numbers" not in code
    recipe = _help(capsys, "eval", "--config", "math/synthetic-tiny", "--help")
    assert "task math" in recipe and "task.n_numbers" not in recipe and "task.n_public" not in recipe
    data = _help(capsys, "data", "--help", "task.name=code")
    assert "  task.n_public = " in data and "  seed = " not in data and "  sft." not in data


def test_every_command_with_settings_is_scoped():
    from searchrl.cli import COMMAND_SECTIONS, _config_help, build_parser

    parser = build_parser()
    commands = {c for a in parser._subparsers._group_actions for c in a.choices}
    assert set(COMMAND_SECTIONS) <= commands
    for command, sections in COMMAND_SECTIONS.items():  # every section named exists
        assert _config_help(sections=sections).count("\n") > 0, command


def test_version(capsys):
    from importlib.metadata import version

    out = _help(capsys, "--version")
    assert out.strip() == f"searchrl {version('searchrl')}"
