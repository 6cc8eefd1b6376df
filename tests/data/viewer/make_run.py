"""Writes ``run/``: the small run directory the viewer's tests read (``python tests/data/viewer/make_run.py``).

Every file has the format a searchrl command writes (see :mod:`searchrl.view.collect`): the recorded
config, stage records, an evaluation shard of graded Countdown samples (a real DFS Stream-of-Search
trace that reaches the goal, an incorrect one, and one whose text is HTML with a ``<script>``), a
Guided-ReST generation shard whose guided prefix is in the shipped tokenizer's ids, self-repair
episode records, search-tree files in both layouts (``trees-<method>-<budget>.jsonl`` beside a
result, ``trees.jsonl`` inside one), SFT and PPO metrics logs, and a ``results.md`` with its plot.
The files are checked in; this script is how they were made (rerun it after a format change).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

from tokenizers import Tokenizer

from searchrl.tasks.countdown.traces import dfs_trace

HERE = Path(__file__).resolve().parent
RUN = HERE / "run"
TOKENIZER = HERE.parents[2] / "searchrl" / "presets" / "sos-tiny-base" / "tokenizer.json"

PROBLEMS = [{"target": 24, "nums": [2, 3, 4, 6], "solution": ["4*6=24", "3-2=1", "24*1=24"]},
            {"target": 15, "nums": [3, 5, 7], "solution": ["3*5=15", "15*1=15"]},
            {"target": 11, "nums": [1, 9, 2], "solution": ["9+2=11", "11*1=11"]}]
SCRIPT = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\"> & </pre> <!-- done"
INCORRECT = "Current State: 15:[3, 5, 7], Operations: []\nExploring Operation: 7-5=2, Resulting Numbers: [3, 2]\n" \
            "Generated Node #0,0: 15:[3, 2] Operation: 7-5=2\nMoving to Node #0,0\nWRONG-TURN-MARKER\n"


def jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def png(path: Path, w: int = 8, h: int = 4) -> None:
    """A tiny valid PNG (a blue bar), written without an image library."""
    raw = b"".join(b"\x00" + bytes([40, 90, 170]) * w for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main() -> None:
    if RUN.exists():
        shutil.rmtree(RUN)
    RUN.mkdir(parents=True)
    (RUN / "config.yaml").write_text("run_dir: ''\ndata_dir: ''\nseed: 0\ntask:\n  name: countdown\n  n_test: 3\n"
                                     "search:\n  split: test_seen\n"
                                     "selftrain:\n  split: selftrain\n  guidance_rounds: 1\n", encoding="utf-8")
    jsonl(RUN / "data" / "test_seen.jsonl", PROBLEMS)
    jsonl(RUN / "data" / "selftrain.jsonl", PROBLEMS[:2])
    write_json(RUN / "data" / "stage.json", {"stage": "data", "done": True, "depends": {"data": {"n_test": 3}}})

    # evaluation: one shard of graded samples
    trace = dfs_trace(24, [2, 3, 4, 6], threshold=24)
    samples = [
        {"index": 0, "sample": 0, "response": trace, "reward": 1.0, "correct": True, "finish_reason": "stop"},
        {"index": 1, "sample": 0, "response": INCORRECT, "reward": 0.0, "correct": False, "finish_reason": "length"},
        {"index": 2, "sample": 0, "response": SCRIPT, "reward": 0.0, "correct": False, "finish_reason": "stop"},
    ]
    jsonl(RUN / "eval" / "samples" / "test_seen" / "sampled-0123456789ab" / "000000-000002-0123456789abcdef.jsonl",
          [{"split": "test_seen", "mode": "sampled", **s, "prefix_len": 0, "meta": {},
            "num_tokens": len(s["response"]) // 4} for s in samples])
    (RUN / "eval" / "results.md").write_text(
        "# Countdown: fixture\n\nSampled: temperature 1, `4` samples.\n\n| Method | pass@1 |\n| :--- | ---: |\n"
        "| SoS | 33.3 (0.0..100.0) |\n\n![pass@k](passk.png)\n", encoding="utf-8")
    png(RUN / "eval" / "passk.png")

    # Guided-ReST: the second problem was rescued by guidance round 1
    tok = Tokenizer.from_file(str(TOKENIZER))
    prefix = "Current State: 15:[3, 5, 7], Operations: []\nExploring Operation: 3*5=15, Resulting Numbers: [15, 7]\n"
    cont = "Generated Node #0,0: 15:[15, 7] Operation: 3*5=15\n"
    p_ids, c_ids = tok.encode(prefix).ids, tok.encode(cont).ids
    assert tok.decode(p_ids, skip_special_tokens=False) == prefix
    gen = [{"index": 0, "sample": 0, "prompt_ids": [1, 4], "response_ids": tok.encode(trace).ids, "logprobs": [],
            "response": trace, "reward": 1.0, "correct": True, "finish_reason": "stop", "prefix_len": 0,
            "meta": {"solved_round": 0}, "num_tokens": len(tok.encode(trace).ids)},
           {"index": 1, "sample": 0, "prompt_ids": [1, 4], "response_ids": p_ids + c_ids,
            "logprobs": [-0.5] * len(c_ids),
            "response": prefix + cont, "reward": 0.0, "correct": False, "finish_reason": "length",
            "prefix_len": len(p_ids), "meta": {"solved_round": -1}, "num_tokens": len(p_ids) + len(c_ids)}]
    it = RUN / "guided-rest" / "iter1"
    jsonl(it / "gen" / "0123456789ab" / "shard-000000-000001.jsonl", gen)
    jsonl(it / "data.jsonl", gen[:1])
    write_json(it / "gen_stats.json", {"policy": "builtin:sos-tiny-base", "problems": 2, "kept": 1,
                                       "solved_by_round": [1, 0]})
    write_json(it / "done.json", {"model": "iter1/sft/final", "examples": 1, "kept": 1})
    write_json(RUN / "guided-rest" / "stage.json", {"stage": "guided-rest", "done": True,
                                                    "depends": {"selftrain": {"guidance_rounds": 1}}})

    # code self-repair episodes (searchrl.episodes.Episode.to_record, as the evaluation writes them)
    fb = "Here are the results on the public test cases:\n\n### Test 1 failed\nInput: [1]\nExpected: 2\nOutput: 1\n"
    episodes = [{"split": "test_unseen", "mode": "sampled", "index": 0, "sample": 0,
                 "messages": [{"role": "assistant", "content": "```python\ndef f(xs):\n    return len(xs)\n```"},
                              {"role": "user", "content": fb + "\nPlease fix it."},
                              {"role": "assistant", "content": "```python\ndef f(xs):\n    return 2 * len(xs)\n```"}],
                 "turns": [{"reward": 0.0, "correct": False, "feedback": fb, "done": False, "finish_reason": "stop",
                            "tokens": 20},
                           {"reward": 1.0, "correct": True, "feedback": "REPAIRED-FEEDBACK", "done": True,
                            "finish_reason": "stop", "tokens": 22}],
                 "num_tokens": 60, "round": 0, "reward": 1.0, "correct": True, "n_turns": 2, "first_correct": False,
                 "meta": {"solved_round": 0}}]
    shard = "000000-000000-0123456789abcdef.jsonl"
    jsonl(RUN / "repair-eval" / "samples" / "test_unseen" / "sampled-0123456789ab" / shard, episodes)

    # search trees, in both layouts
    def node(i, parent, action, value=None, visits=None, terminal=False, reward=None, chosen=False):
        return {"id": i, "parent": parent, "action": action, "value": value, "visits": visits, "terminal": terminal,
                "reward": reward, "chosen": chosen}

    trees = [{"index": 0, "method": "mcts-star", "budget": 100, "prompt": "24:[2, 3, 4, 6]",
              "response": "4*6=24\n3-2=1\n24*1=24\n", "correct": True, "generated_tokens": 96,
              "nodes": [node(0, None, "", 0.5, 8, chosen=True),
                        node(1, 0, "Exploring Operation: 4*6=24", 0.81, 5, chosen=True),
                        node(2, 0, "Exploring Operation: 2+3=5", 0.12, 3),
                        node(3, 1, "GRANDCHILD 3-2=1", 0.9, 4, chosen=True),
                        node(4, 3, "24*1=24", 1.0, 2, terminal=True, reward=1.0, chosen=True),
                        node(5, 2, "5*4=20", 0.0, 1, terminal=True, reward=0.0)]},
             {"index": 1, "method": "mcts-star", "budget": 100, "prompt": "15:[3, 5, 7]", "response": SCRIPT,
              "correct": False, "generated_tokens": 100,
              "nodes": [node(0, None, "", None, 1), node(1, 0, SCRIPT, -0.2, 1, terminal=True, reward=0.0)]}]
    jsonl(RUN / "compare-search" / "methods" / "trees-mcts-star-100.jsonl", trees)
    jsonl(RUN / "compare-search" / "methods" / "vm-mcts-100-0123456789ab" / "trees.jsonl",
          [{**trees[0], "method": "vm-mcts"}])

    # training curves
    write_json(RUN / "sft" / "stage.json", {"stage": "sft", "done": True, "depends": {"sft": {"lr": 0.001}}})
    jsonl(RUN / "sft" / "metrics.jsonl", [{"step": s, "epoch": s / 10, "losses/sft": 3.0 / s, "charts/lr": 1e-3}
                                          for s in (1, 2, 3, 4)])
    write_json(RUN / "ppo" / "stage.json", {"stage": "ppo (ppo)", "done": False, "depends": {"ppo": {"lr": 1e-6}}})
    jsonl(RUN / "ppo" / "metrics.jsonl", [{"step": s, "iteration": s, "reward/mean": 0.1 * s,
                                           "actor/pg_loss": -0.01 * s} for s in (1, 2, 3)])


if __name__ == "__main__":
    main()
