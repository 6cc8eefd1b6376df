"""A task as verl data and reward: the parquet columns verl reads, and compute_score called as verl calls it."""

from __future__ import annotations

import pyarrow.parquet as pq

from searchrl.cli import main
from searchrl.tasks.verl import compute_score


def test_export_verl_and_compute_score(tmp_path):
    run, out = tmp_path / "run", tmp_path / "train.parquet"
    small = ["task.name=math", "task.n_train=10", "task.n_selftrain=5", "task.n_valid=2", "task.n_valid_unseen=2",
             "task.n_test=2", "model.name=micro"]
    assert main(["export-verl", "--run-dir", str(run), "--quiet", "--split", "selftrain", "--out", str(out),
                 *small]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 5 and set(rows[0]) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    r = rows[0]
    assert r["data_source"] == "searchrl/math" and r["prompt"][0]["role"] == "user"
    assert r["reward_model"]["style"] == "rule" and r["extra_info"]["split"] == "selftrain"
    import json

    gold = json.loads(r["reward_model"]["ground_truth"])
    # verl's reward manager calls compute_score(data_source, solution_str, ground_truth, extra_info)
    good = compute_score(r["data_source"], gold["solution"], r["reward_model"]["ground_truth"], r["extra_info"])
    bad = compute_score(r["data_source"], "The answer is \\boxed{-1}.", r["reward_model"]["ground_truth"],
                        r["extra_info"])
    assert good == {"score": 1.0, "acc": 1.0} and bad == {"score": 0.0, "acc": 0.0}
