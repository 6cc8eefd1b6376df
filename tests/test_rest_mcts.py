"""ReST-MCTS*'s loop (seed 002): the initial value data D_V0, the policy's data from MCTS* trees, the command."""

from __future__ import annotations

import json

import pytest

from searchrl.pipelines.value import gold_value_records
from searchrl.selftrain.rest_mcts import policy_examples
from searchrl.tasks.math import MathConfig, MathTask


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("math")
    t = MathTask(MathConfig(n_train=30, n_selftrain=6, n_valid=2, n_valid_unseen=2, n_test=3), d)
    t.prepare(d, progress=False)
    return t


def test_gold_value_data_climbs_to_one_and_puts_corrupted_steps_below_their_parent(task):
    tok = task.tokenizer()
    p = task.problems("train")[0]
    recs = gold_value_records(task, tok, [p], 0, seed=0)
    lines = task.demonstration(p).split("\n")
    k = len(lines)
    gold = {"\n".join(lines[:d]) + ("\n" if d < k else ""): d for d in range(1, k + 1)}
    got_gold, got_bad = {}, {}
    for r in recs:
        text = tok.decode(r["state_ids"])
        depth = text.count("\n") + (0 if text.endswith("\n") else 1)
        (got_gold if text in gold else got_bad)[depth] = r["target"]
    # eq. 2 with the code's signs on the gold path: m_d = K - d + 1, r = +1, so V_d = d / K
    assert got_gold == pytest.approx({d: d / k for d in range(1, k + 1)})
    # a corrupted step at depth d is an incorrect end: r = -1 with its parent's m = K - d + 2
    want = {d: max(0.0, (d - 1) / k - (1 - (d - 1) / k) / (k - d + 2)) for d in range(1, k + 1)}
    assert got_bad == pytest.approx(want) and all(got_bad[d] < got_gold[d] for d in want)


def test_policy_examples_keep_the_best_correct_ends_once():
    collected = [{"prompt_ids": [1, 2], "correct": [{"ids": [5, 6], "value": 0.2}, {"ids": [7], "value": 0.9},
                                                    {"ids": [7], "value": 0.9}, {"ids": [8, 0], "value": 0.5}]},
                 {"prompt_ids": [3], "correct": []}]
    ex = policy_examples(collected, per_problem=2, min_value=0.0, eos=0)
    assert ex == [{"prompt_ids": [1, 2], "response_ids": [7, 0]}, {"prompt_ids": [1, 2], "response_ids": [8, 0]}]
    assert policy_examples(collected, per_problem=5, min_value=0.6, eos=0) == [ex[0]]


def test_rest_mcts_command_runs_end_to_end(tmp_path):
    from searchrl.cli import main

    run = tmp_path / "run"
    common = ["task.name=math", "task.n_train=40", "task.n_selftrain=4", "task.n_valid=2", "task.n_valid_unseen=2",
              "task.n_test=2", "model.name=micro", "model.max_seq_len=256", "sft.max_steps=2", "sft.warmup_steps=1",
              "sft.max_seq_len=256", "rest_mcts.iterations=1", "rest_mcts.n_problems=3", "rest_mcts.v0_problems=6",
              "rest_mcts.search_iterations=2", "rest_mcts.max_tokens=48", "rest_mcts.batch_size=8",
              "value.max_steps=2", "value.warmup_steps=1", "value.max_seq_len=256", "rest_sft.max_steps=2"]
    assert main(["sft", "--run-dir", str(run), "--quiet", *common]) == 0
    # D_V0 as a value-data source: 6 gold solutions, 2 records (gold step, corrupted step) per line
    assert main(["value-data", "--run-dir", str(run), "--quiet", "--source", "gold", "value_data.n_problems=6",
                 *common]) == 0
    [summary] = (run / "value-data").glob("gold-*/summary.json")
    s = json.loads(summary.read_text())
    assert s["split"] == "train" and s["problems"] == 6 and s["records"] >= 6 * 2 * 4
    assert main(["rest-mcts", "--run-dir", str(run), "--quiet", *common]) == 0
    assert (run / "rest-mcts" / "v0" / "final").is_dir() and (run / "rest-mcts" / "v0-data.jsonl").exists()
    done = json.loads((run / "rest-mcts" / "iter1" / "done.json").read_text())
    assert done["questions"] == 3 and done["ends"] >= 0 and "value" in done and done["generated_tokens"] > 0
    assert main(["rest-mcts", "--run-dir", str(run), "--quiet", *common]) == 0  # a rerun: the stage is done
