"""Countdown: golden equality with the published code, grader safety, records, splits."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from searchrl.data import RecordError
from searchrl.tasks.countdown import (CountdownDataConfig, CountdownTask, generate_splits, grade, guide,
                                      optimal_trace, read_problems, solve, sos_trace, split_targets)
from searchrl.tasks.countdown.core import apply_operation, combine_nums

DATA = Path(__file__).parent / "data"


def _golden(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


PROBLEMS = _golden("countdown_problems.jsonl.gz")
GRADES = _golden("countdown_grades.jsonl.gz")
AUGMENTS = _golden("countdown_augments.jsonl.gz")


def test_goldens_cover_3_and_4_numbers_and_every_strategy():
    assert {len(p["nums"]) for p in PROBLEMS} == {3, 4}
    keys = {k for p in PROBLEMS for k in p["traces"]}
    assert keys == {f"{s}-{h}" for h in ("sum", "mult") for s in ["dfs"] + [f"bfs{w}" for w in range(1, 6)]}


@pytest.mark.parametrize("p", PROBLEMS, ids=lambda p: f"{p['target']}:{p['nums']}")
def test_solver_and_traces_equal_golden_byte_for_byte(p):
    assert solve(p["target"], p["nums"]) == p["solution"]
    assert optimal_trace(p["target"], p["nums"], p["solution"]) == p["optimal_path"]
    for key, golden in p["traces"].items():
        strategy, heuristic = key.split("-")
        if strategy == "dfs":
            ours = sos_trace(p["target"], p["nums"], "dfs", heuristic)
        else:
            ours = sos_trace(p["target"], p["nums"], "bfs", heuristic, beam_width=int(strategy[3:]),
                             seed=p["seeds"][key])
        assert ours == golden, key


def test_bfs_seed_matters_and_dfs_is_deterministic():
    p = next(p for p in PROBLEMS if len(p["nums"]) == 4)
    t, n = p["target"], p["nums"]
    outs = {sos_trace(t, n, "bfs", "sum", beam_width=3, seed=s) for s in range(10)}
    assert len(outs) > 1
    assert sos_trace(t, n, "bfs", "sum", beam_width=3, seed=7) == sos_trace(t, n, "bfs", "sum", beam_width=3, seed=7)
    assert sos_trace(t, n, "dfs", "mult", seed=1) == sos_trace(t, n, "dfs", "mult", seed=2)


def test_grader_agrees_with_every_golden_verdict():
    for p in PROBLEMS:
        for key, trace in p["traces"].items():
            assert grade(trace, p["target"], p["nums"]) == p["grades"][key], key
        assert grade(p["optimal_path"], p["target"], p["nums"])
    mismatches = [g for g in GRADES if grade(g["trace"], g["target"], g["nums"]) != g["correct"]]
    assert not mismatches
    assert {g["correct"] for g in GRADES} == {True, False}


def test_grader_never_runs_code_in_the_operations_list(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"[__import__('pathlib').Path('{marker}').touch()]",
        f"[open('{marker}', 'w').write('x')]",
        f"['86/43=2'] + [__import__('os').system('touch {marker}')]",
        f"[x for x in [__import__('os').system('touch {marker}')]]",
    ]
    for payload in payloads:
        trace = ("Current State: 42:[86, 43, 44], Operations: []\n"
                 "Exploring Operation: 86/43=2, Resulting Numbers: [44, 2]\n"
                 "Generated Node #0,0: 42:[44, 2] Operation: 86/43=2\n"
                 "Moving to Node #0,0\n"
                 f"Current State: 42:[44, 2], Operations: {payload if payload.startswith('[') else '[' + payload + ']'}\n"
                 "Exploring Operation: 44-2=42, Resulting Numbers: [42]\n"
                 "42,42 equal: Goal Reached\n")
        assert grade(trace, 42, [86, 43, 44]) is False
    assert not marker.exists()
    # and the same trace with a real operations list is correct
    ok = trace.replace(trace.split("Operations: ")[2].split("\n")[0], "['86/43=2']")
    assert grade(ok, 42, [86, 43, 44]) is True


def test_grader_semantics_edge_cases():
    good = optimal_trace(42, [86, 43, 44], ["86/43=2", "44-2=42"])
    assert grade(good, 42, [86, 43, 44])
    assert not grade(good, 42, [86, 43, 45])           # numbers not available
    assert not grade(good, 41, [86, 43, 44])           # wrong target
    assert not grade(good.replace("44-2=42", "44-2=41"), 42, [86, 43, 44])  # wrong arithmetic
    assert not grade(good.replace("Goal Reached", "Goal"), 42, [86, 43, 44])
    assert not grade("", 42, [86, 43, 44])
    # inexact division is wrong arithmetic; division by zero is just False
    assert not grade("Current State: 3:[7, 2], Operations: []\nExploring Operation: 7/2=3, "
                     "Resulting Numbers: [3]\n3,3 equal: Goal Reached\n", 3, [7, 2])
    assert not grade("Current State: 0:[7, 0], Operations: []\nExploring Operation: 7/0=0, "
                     "Resulting Numbers: [0]\n0,0 equal: Goal Reached\n", 0, [7, 0])
    # remove-one-occurrence semantics: a number may not be used twice
    assert not grade("Current State: 10:[5, 3], Operations: []\nExploring Operation: 5+5=10, "
                     "Resulting Numbers: [10]\n10,10 equal: Goal Reached\n", 10, [5, 3])
    assert grade("Current State: 10:[5, 5], Operations: []\nExploring Operation: 5+5=10, "
                 "Resulting Numbers: [10]\n10,10 equal: Goal Reached\n", 10, [5, 5])


def test_combine_and_apply_operation():
    assert combine_nums(14, 15) == [(29, "14+15=29"), (210, "14*15=210"), (1, "15-14=1")]
    assert combine_nums(86, 43)[-1] == (2, "86/43=2")
    assert combine_nums(5, 0) == [(5, "5+0=5"), (0, "5*0=0"), (5, "5-0=5")]
    assert apply_operation([84, 2, 14, 15], "14+15=29") == [84, 2, 29]
    with pytest.raises(ValueError):
        apply_operation([1, 2], "1+2=4")
    with pytest.raises(ValueError):
        apply_operation([1, 2], "1+7=8")


def test_guide_outputs_are_allowed_and_cover_the_random_choice():
    for a in AUGMENTS:
        outs = {guide(a["trace"], a, rng=seed) for seed in range(30)}
        assert outs <= set(a["allowed"]), (a["round"], a["nums"], a["target"])
        assert outs == set(a["allowed"])  # every explored child can be chosen
    assert {a["round"] for a in AUGMENTS} == {0, 1, 2}


def test_guide_keeps_trailing_newline_and_accepts_published_layout():
    a = next(a for a in AUGMENTS if a["allowed"][0].endswith("\n"))
    published = {"extra_info": {"target": a["target"], "nums": a["nums"], "solution": a["solution"]}}
    out = guide(a["trace"], published, rng=0)
    assert out in a["allowed"] and out.endswith("\n")
    # no root line at all: reset to the root state
    assert guide("garbage", a) == f"Current State: {a['target']}:{a['nums']}, Operations: []\n"


def test_guided_prefix_leads_to_a_correct_trace():
    """Repeated guidance with the optimal continuation always ends in a correct trace."""
    for p in PROBLEMS[:10]:
        trace = "Current State: 1:[1], Operations: []\n"   # a useless first attempt
        for _ in range(len(p["solution"]) + 1):
            trace = guide(trace, p, rng=0)
            if grade(trace, p["target"], p["nums"]):
                break
        assert grade(trace, p["target"], p["nums"])


def test_split_targets_holds_out_ten_percent():
    seen, unseen = split_targets(10, 100, seed=0)
    assert len(unseen) == 9 and len(seen) == 82 and not set(seen) & set(unseen)
    assert sorted(seen + unseen) == list(range(10, 101))
    rng_targets = list(range(10, 101))
    random.Random(0).shuffle(rng_targets)
    assert unseen == rng_targets[:9]


def test_generate_splits_properties_and_worker_independence():
    cfg = CountdownDataConfig(n_train=60, n_selftrain=10, n_valid=20, n_valid_unseen=10, n_test=20, n_numbers=3, seed=3,
                              workers=1)
    a = generate_splits(cfg, progress=False)
    b = generate_splits(CountdownDataConfig(**{**cfg.__dict__, "workers": 2}), progress=False)
    assert a == b
    seen, unseen = split_targets(10, 100, 3)
    keys = {s: {(p["target"], tuple(sorted(p["nums"]))) for p in a[s]} for s in a}
    for s in ("selftrain", "valid", "valid_unseen", "test_seen", "test_unseen"):
        assert len(keys[s]) == len(a[s]) and not keys[s] & keys["train"]
    assert not keys["valid"] & keys["test_seen"]
    assert len(a["selftrain"]) == 10 and all("trace" not in p for p in a["selftrain"])
    for s, recs in a.items():
        for p in recs:
            assert p["target"] in (unseen if s.endswith("_unseen") else seen)
            assert all(1 <= n <= 99 for n in p["nums"]) and len(p["nums"]) == 3
            assert p["solution"] == solve(p["target"], p["nums"])
    for p in a["train"]:
        assert p["trace"] == sos_trace(p["target"], p["nums"], p["strategy"], p["heuristic"],
                                       p["beam_width"], p["trace_seed"])
    assert {p["strategy"] for p in a["train"]} == {"dfs", "bfs"}


def test_splits_are_disjoint_in_a_small_problem_space():
    """No test problem in any training set; self-training problems never in the SFT set.

    A problem space of a few hundred problems makes the training draws collide with the
    evaluation and self-training problems all the time, so the redraws are exercised.
    """
    cfg = CountdownDataConfig(n_train=400, n_selftrain=40, n_valid=10, n_valid_unseen=10, n_test=20, n_numbers=3, min_target=10,
                              max_target=19, max_number=8, seed=1, workers=1)
    a = generate_splits(cfg, progress=False)
    keys = {s: [(p["target"], tuple(sorted(p["nums"]))) for p in a[s]] for s in a}
    held_out = ("selftrain", "valid", "valid_unseen", "test_seen", "test_unseen")
    for i, s in enumerate(held_out):
        assert len(set(keys[s])) == len(keys[s]) == len(a[s])      # no repeats inside a held-out split
        assert not set(keys[s]) & set(keys["train"])               # none of them in the SFT set
        for t in held_out[i + 1:]:
            assert not set(keys[s]) & set(keys[t])
    assert len(set(keys["train"])) < len(keys["train"])            # the space is small: train repeats
    assert all(1 <= n <= 8 for recs in a.values() for p in recs for n in p["nums"])
    assert max(n for p in a["train"] for n in p["nums"]) == 8
    # without max_number the numbers go up to max_target - 1, as the published generator draws them
    wide = generate_splits(CountdownDataConfig(**{**cfg.__dict__, "max_number": 0, "n_train": 200}), progress=False)
    assert max(n for p in wide["train"] for n in p["nums"]) > 8
    with pytest.raises(Exception, match="too small"):
        generate_splits(CountdownDataConfig(**{**cfg.__dict__, "n_selftrain": 5000, "max_attempts": 20}),
                        progress=False)


def test_records_round_trip_and_cli(tmp_path):
    from searchrl.cli import main

    assert main(["data", "--out", str(tmp_path), "task.n_train=30", "task.n_selftrain=5", "task.n_valid=5", "task.n_valid_unseen=5", "task.n_test=5",
                 "task.n_numbers=4", "task.seed=1", "task.workers=1", "--quiet"]) == 0
    for split in ("train", "selftrain", "valid", "valid_unseen", "test_seen", "test_unseen"):
        recs = read_problems(tmp_path / f"{split}.jsonl")
        assert recs and all(len(r["nums"]) == 4 for r in recs)
    task = CountdownTask(data_dir=tmp_path)
    p = task.problems("train")[0]
    assert task.reward(p, p["trace"]) == float(grade(p["trace"], p["target"], p["nums"]))
    assert task.reward(p, optimal_trace(p["target"], p["nums"], p["solution"])) == 1.0
    [s1, s2] = task.score([p, p], [task.demonstration(p), optimal_trace(p["target"], p["nums"], p["solution"])])
    assert s1.correct == grade(p["trace"], p["target"], p["nums"]) and s1.reward == float(s1.correct)
    assert s2.correct and s2.reward == 1.0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["train"]["problems"] == 30


def test_reader_accepts_published_guided_rest_layout(tmp_path):
    path = tmp_path / "rl.jsonl"
    rec = {"data_source": "countdown", "prompt": [{"role": "user", "content": "..."}],
           "extra_info": {"target": 42, "nums": [86, 43, 44], "solution": ["86/43=2", "44-2=42"]}}
    path.write_text(json.dumps(rec) + "\n")
    (p,) = read_problems(path)
    assert (p["target"], p["nums"], p["solution"]) == (42, [86, 43, 44], ["86/43=2", "44-2=42"])
    assert p["data_source"] == "countdown"


@pytest.mark.parametrize("line,field", [
    ('{"nums": [1, 2], "solution": []}', "target"),
    ('{"target": "12", "nums": [1, 2]}', "target"),
    ('{"target": 12, "nums": [1]}', "nums"),
    ('{"target": 12, "nums": [1, "x"]}', "nums"),
    ('{"extra_info": {"target": 12, "nums": [3]}}', "extra_info.nums"),
    ('{"target": 12, "nums": [3, 4], "solution": "3*4=12"}', "solution"),
])
def test_bad_records_name_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"target": 12, "nums": [3, 4], "solution": ["3*4=12"]}\n\n' + line + "\n")
    with pytest.raises(RecordError) as e:
        read_problems(path)
    assert e.value.line == 3 and e.value.field == field
    assert f"{path}:3" in str(e.value) and field in str(e.value)


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"target": 12, "nums": [3, 4]}\n{"target": 12, nums\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: invalid JSON"):
        read_problems(path)


def test_reader_reads_published_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"data_source": "countdown",
             "extra_info": {"target": 42, "nums": [86, 43, 44], "solution": ["86/43=2", "44-2=42"]}},
            {"data_source": "countdown", "extra_info": {"target": 12, "nums": [3, 4], "solution": ["3*4=12"]}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    probs = read_problems(tmp_path / "train.parquet")
    assert [(p["target"], p["nums"]) for p in probs] == [(42, [86, 43, 44]), (12, [3, 4])]
