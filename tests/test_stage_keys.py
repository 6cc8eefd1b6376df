"""Stages and shards of graded samples are keyed by the task's settings that change grades or rewards
(its ``SCORING``: the code task's reward shaping and sandbox limits), so a changed reward refuses a
finished stage, naming the key, instead of returning the old policy or mixing old and new rewards."""

from __future__ import annotations

import pytest

from searchrl.config import SelfTrainConfig, load_config
from searchrl.pipelines.rl import rl_stage
from searchrl.pipelines.run import Run
from searchrl.rundir import RunDirError, Stage, write_json
from searchrl.selftrain import Context, selftrain_loop
from searchrl.tasks import TASKS, task_config_class
from searchrl.train.config import SFTConfig


def _run(tmp_path, *overrides) -> Run:
    return Run(load_config(None, ["task.name=code", f"run_dir={tmp_path}", *overrides]))


def _finish(stage: Stage) -> None:
    stage.begin()
    (stage.path / "output.txt").write_text("made")
    stage.finish()


def test_every_task_declares_its_scoring_settings_among_its_non_data_ones():
    for name in TASKS:
        cls = task_config_class(name)
        assert set(cls.SCORING) <= set(cls.NOT_DATA) and all(hasattr(cls(), k) for k in cls.SCORING)
    assert {"stop_bonus", "after_penalty", "timeout"} <= set(task_config_class("code").SCORING)


@pytest.mark.parametrize("make", ["rl", "selftrain"])
def test_a_changed_reward_refuses_a_finished_stage_naming_the_key(make, tmp_path):
    def stage(run: Run) -> Stage:
        if make == "rl":
            return rl_stage(run, "grpo", tmp_path / "grpo", "micro")
        ctx = Context(run.task, run.load, depends=run.graded_depends(), depends_defaults=run.graded_defaults())
        return selftrain_loop(ctx, cfg=SelfTrainConfig(), sft_cfg=SFTConfig(output_dir=""), method_dir=tmp_path / "rest",
                              base_model=tmp_path).stage

    (tmp_path / "config.json").write_text("{}")  # selftrain's base model: fingerprinted from its files
    _finish(stage(_run(tmp_path)))
    stage(_run(tmp_path)).check()  # the same settings: accepted
    with pytest.raises(RunDirError, match=r"scoring\.stop_bonus \(0\.0 -> 0\.5\)"):
        stage(_run(tmp_path, "task.stop_bonus=0.5")).check()
    with pytest.raises(RunDirError, match=r"scoring\.timeout \(4\.0 -> 9\.0\)"):
        stage(_run(tmp_path, "task.timeout=9")).check()
    # settings that change neither problems nor grades are no difference
    stage(_run(tmp_path, "task.workers=1")).check()


def test_a_stage_recorded_before_scoring_was_keyed_is_trusted_only_at_the_defaults(tmp_path):
    run = _run(tmp_path)
    st = rl_stage(run, "grpo", tmp_path / "grpo", "micro")
    _finish(st)
    rec = st.record()
    del rec["depends"]["scoring"]  # as an older searchrl wrote it
    write_json(st.file, rec)
    rl_stage(_run(tmp_path), "grpo", tmp_path / "grpo", "micro").check()
    with pytest.raises(RunDirError, match=r"scoring\.stop_bonus \(unset -> 0\.5\)"):
        rl_stage(_run(tmp_path, "task.stop_bonus=0.5"), "grpo", tmp_path / "grpo", "micro").check()


def test_sample_shards_are_keyed_by_changed_scoring_settings(tmp_path):
    default = _run(tmp_path).model_key("micro")
    assert default == "micro:float32:searchrl"  # unchanged at the defaults: older shards stay valid
    bonus = _run(tmp_path, "task.stop_bonus=0.5").model_key("micro")
    timeout = _run(tmp_path, "task.timeout=9").model_key("micro")
    assert len({default, bonus, timeout}) == 3 and bonus.startswith(default + ":scoring-")
    assert _run(tmp_path, "task.workers=1").model_key("micro") == default
