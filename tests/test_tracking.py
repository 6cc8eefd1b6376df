"""Trackers for every command (searchrl.tracking): the ``tracking`` settings, W&B (offline) and TensorBoard runs
read back from their files, for a trainer, a self-training loop, an evaluation and a search comparison."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from searchrl import tracking
from searchrl.config import ConfigError, load_config
from searchrl.settings import SettingError
from searchrl.tracking import TrackingConfig

# ----------------------------------------------------------------------------- reading the trackers' files


def wandb_runs(run_dir: Path) -> dict[str, dict]:
    """The offline W&B runs under ``run_dir/wandb``, by name: project, group, job type, config, history (one dict
    per logged step) and tables (name -> rows), read from each run's ``run-*.wandb`` file.

    The file is W&B's record log (the LevelDB log format: 7-byte file header, 32 KiB blocks of records with a
    7-byte header: CRC, length, type full/first/middle/last) of ``wandb_internal_pb2.Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    def records(path: Path):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0 and length == 0:
                pos += left
                continue
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind == 1:
                yield chunk
            elif kind == 2:
                buf = chunk
            elif kind == 3:
                buf += chunk
            elif kind == 4:
                yield buf + chunk

    runs = {}
    for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run: dict = {"history": [], "tables": {}, "config": {}}
        for data in records(f):
            rec = pb.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run.update(name=rec.run.display_name, project=rec.run.project, group=rec.run.run_group,
                           job_type=rec.run.job_type)
                run["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                for key, value in row.items():
                    if key.endswith("/_type") and value == "table-file":
                        name = key[: -len("/_type")]
                        table = json.loads((f.parent / "files" / row[f"{name}/path"]).read_text())
                        run["tables"][name] = [dict(zip(table["columns"], r)) for r in table["data"]]
                run["history"].append(row)
        runs[run["name"]] = run
    return runs


def tensorboard_run(log_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    """The scalars (tag -> [(step, value)]) and texts (name -> the last text) of a TensorBoard run directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    texts = {t.removesuffix("/text_summary"): acc.Tensors(t)[-1].tensor_proto.string_val[0].decode()
             for t in acc.Tags()["tensors"] if t.endswith("/text_summary")}
    return scalars, texts


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    """W&B offline, its config and cache in the test's directory; trackers closed and settings dropped after."""
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": tmp_path / "wb-config",
                       "WANDB_CACHE_DIR": tmp_path / "wb-cache", "WANDB_DATA_DIR": tmp_path / "wb-data"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    yield
    tracking.deactivate()


# ----------------------------------------------------------------------------- settings


def test_settings_are_checked_and_a_trainers_old_report_to_moves_to_tracking():
    with pytest.raises(SettingError, match="unknown tracker"):
        TrackingConfig(report_to="tensorbord")
    with pytest.raises(SettingError, match="project"):
        TrackingConfig(project=" ")
    assert TrackingConfig(report_to=" wandb, tensorboard,wandb").names == ["wandb", "tensorboard"]
    with pytest.raises(ConfigError, match="tracking.report_to"):
        load_config(overrides=["tracking.report_to=wandb,mlflow"])
    # one way to say it: the trainers have no report_to of their own; an old one (a recipe, a recorded config,
    # the command line) is moved into tracking.report_to, every trainer's names joined
    from searchrl.train.config import SFTConfig

    assert "report_to" not in SFTConfig.__dataclass_fields__
    cfg = load_config(overrides=["sft.report_to=tensorboard", "ppo.report_to=wandb, tensorboard"])
    assert cfg.tracking.report_to == "tensorboard,wandb" and not hasattr(cfg.sft, "report_to")
    from searchrl.config import Config, to_dict

    recorded = to_dict(Config())
    recorded.pop("tracking")
    recorded["sft"]["report_to"], recorded["value"]["report_to"] = "", "wandb"
    assert load_config(base=recorded).tracking == TrackingConfig(report_to="wandb")
    with pytest.raises(ConfigError, match="tracking.report_to"):
        load_config(overrides=["dpo.report_to=tensorbord"])


def test_without_settings_nothing_is_tracked_or_imported(tmp_path, monkeypatch):
    code = ("import sys, searchrl.tracking as t\n"
            "tr = t.start('x', config={'a': 1}); tr.log_metrics({'m': 1.0}, 1); tr.log_table('t', [{'a': 1}])\n"
            "tr.close(); t.record('x', metrics={'m': 1}, tables={'t': [{'a': 1}]})\n"
            "assert not tr.enabled and not [m for m in sys.modules if m.split('.')[0] in "
            "('wandb', 'tensorboard', 'torch')], sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert not list(tmp_path.iterdir())  # and nothing was written
    # a tracker asked for whose package is missing is refused when the settings are made active, naming it
    from searchrl.data import InputError

    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="tracking.report_to = 'wandb': wandb is not installed"):
        tracking.activate(TrackingConfig(report_to="wandb"), tmp_path)
    assert tracking._active is None


def test_names_flat_numbers_and_markdown(tmp_path):
    with tracking.active(TrackingConfig(report_to=""), tmp_path):
        assert tracking.stage_name(tmp_path / "x") == "x"  # no trackers: no run directory either
    (tmp_path / "run").mkdir()
    pytest.importorskip("tensorboard")
    with tracking.active(TrackingConfig(report_to="tensorboard"), tmp_path / "run"):
        assert tracking.stage_name(tmp_path / "run" / "rest" / "iter2" / "sft") == "rest/iter2/sft"
        assert tracking.stage_name(tmp_path / "elsewhere" / "eval") == "eval"
    assert tracking.flat_numbers({"a": 1, "b": {"c": 2.5, "d": [3, None]}, "e": True, "f": "x"}) == {
        "a": 1, "b/c": 2.5, "b/d/0": 3}
    md = tracking.markdown([{"method": "a|b", "acc": 0.123456789}, {"method": "c", "extra": [1, 2]}])
    assert md.splitlines() == ["| method | acc | extra |", "|---|---|---|", "| a\\|b | 0.123457 |  |",
                               "| c |  | [1,2] |"]


# ----------------------------------------------------------------------------- stages


def test_a_trainers_metrics_reach_wandb_and_tensorboard(offline_wandb, tmp_path):
    from test_train_core import train_value, value_cfg, value_data, value_model

    from searchrl.data import read_jsonl

    run_dir = tmp_path / "myrun"
    x, y = value_data()
    with tracking.active(TrackingConfig(report_to="wandb,tensorboard", project="proj"), run_dir):
        train_value(value_model(), x, y, value_cfg(run_dir / "value", max_steps=4, log_every=1))
    lines = read_jsonl(run_dir / "value" / "metrics.jsonl")
    run = wandb_runs(run_dir)["value"]
    assert (run["project"], run["group"], run["job_type"]) == ("proj", "myrun", "train")
    assert run["config"]["lr"] == 1e-2 and run["config"]["output_dir"] == str(run_dir / "value")
    logged = [h for h in run["history"] if "losses/value" in h]
    assert [h["_step"] for h in logged] == [r["step"] for r in lines] == [1, 2, 3, 4]
    assert [h["losses/value"] for h in logged] == pytest.approx([r["losses/value"] for r in lines])
    scalars, texts = tensorboard_run(run_dir / "tensorboard" / "value")
    assert [s for s, _ in scalars["losses/value"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["losses/value"]] == pytest.approx([r["losses/value"] for r in lines], rel=1e-6)
    assert "| lr | 0.01 |" in texts["config"]
    assert tracking._open == []  # the run finished its tracker


def test_self_training_iterations_reach_the_trackers(offline_wandb, tmp_path):
    """The loop's tracker: each iteration's record and statistics files at step = iteration, then the table."""
    from searchrl.selftrain.loop import Context, Loop, MethodBase, run_loop

    class Counting(MethodBase):
        paths = ()

        def collect(self, loop, it, state):
            it.dir.mkdir(parents=True, exist_ok=True)
            (it.dir / "gen_stats.json").write_text(json.dumps({"kept": it.number * 2, "solved_by_round": [1, 2]}))
            return it.number

        def train(self, loop, it, state, data):
            return {"examples": 10 * data, "skipped": None}

    run_dir = tmp_path / "r"
    with tracking.active(TrackingConfig(report_to="wandb,tensorboard"), run_dir):
        run_loop(Loop(Context(task=None, load_model=None), run_dir / "rest", {"s": 1}, "rest"), Counting(), 2, {})
    run = wandb_runs(run_dir)["rest"]
    assert run["job_type"] == "selftrain" and run["config"]["s"] == 1
    steps = {h["_step"]: h for h in run["history"] if "examples" in h}
    assert {n: (h["examples"], h["gen_stats/kept"], h["gen_stats/solved_by_round/1"]) for n, h in steps.items()} == {
        1: (10, 2, 2), 2: (20, 4, 2)}
    assert [(r["iteration"], r["examples"], r["gen_stats/kept"]) for r in run["tables"]["iterations"]] == [
        (1, 10, 2), (2, 20, 4)]
    scalars, texts = tensorboard_run(run_dir / "tensorboard" / "rest")
    assert scalars["gen_stats/kept"] == [(1, 2.0), (2, 4.0)]
    assert "| iteration | examples | skipped | gen_stats/kept | gen_stats/solved_by_round |" in texts["iterations"]


def test_eval_and_compare_search_commands_log_their_rows(offline_wandb, tmp_path, capsys):
    """Two commands in one run directory: the group is its name; evaluation and search results arrive as
    tables equal to the files the commands wrote."""
    from searchrl.cli import main

    run_dir = tmp_path / "cmdrun"
    common = ["--run-dir", str(run_dir), "--quiet", "tracking.report_to=wandb,tensorboard", "tracking.project=p"]
    assert main(["compare-search", "--preset", "smoke", *common, "search.methods=[vote]", "search.budgets=[60]",
                 "search.pool_samples=2", "search.max_tokens=60", "search.n_problems=2"]) == 0
    assert main(["eval", *common, "eval.splits=[test_seen]", "eval.n_problems=2", "eval.n_samples=2",
                 "eval.ks=[1,2]", "eval.max_tokens=48"]) == 0
    assert tracking._active is None and tracking._open == []  # the command's end closed them
    runs = wandb_runs(run_dir)
    assert set(runs) == {"compare-search", "eval"}
    assert {(r["project"], r["group"]) for r in runs.values()} == {("p", "cmdrun")}
    rows = json.loads((run_dir / "compare-search" / "results.json").read_text())["rows"]
    assert runs["compare-search"]["tables"]["compare_search"] == rows and runs["compare-search"]["job_type"] == "search"
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())["test_seen"]
    (row,) = runs["eval"]["tables"]["eval"]
    assert row["split"] == "test_seen" and row["pass@2"] == summary["pass@k"]["2"] and row["num_samples"] == 4
    assert row["greedy"] == summary["greedy"]
    assert [h["test_seen/pass@1"] for h in runs["eval"]["history"] if "test_seen/pass@1" in h] == [
        summary["pass@k"]["1"]]
    scalars, texts = tensorboard_run(run_dir / "tensorboard" / "eval")
    assert scalars["test_seen/num_samples"] == [(0, 4.0)] and texts["eval"].startswith("| split | greedy | pass@1 |")
    _, texts = tensorboard_run(run_dir / "tensorboard" / "compare-search")
    assert texts["compare_search"].splitlines()[2].startswith("| vote | majority vote | 60 |")


def test_a_wandb_run_that_cannot_start_is_bad_input(offline_wandb, tmp_path, monkeypatch):
    import wandb

    from searchrl.data import InputError

    def refuse(**kw):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    with tracking.active(TrackingConfig(report_to="tensorboard,wandb"), tmp_path):
        with pytest.raises(InputError, match="wandb login.*WANDB_MODE=offline"):
            tracking.start(tmp_path / "sft")
    assert tracking._open == []
