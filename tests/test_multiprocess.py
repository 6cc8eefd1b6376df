"""Data-parallel training through accelerate on this CPU: 2 processes (torchrun, gloo) give the
single-process result, the same optimizer steps on the same budgets, within float tolerance:
SFT, and on-policy RL (operation-level PPO with its critic, GRPO), whose processes sample the same
batch and share its micro-batches; and sharded (``fsdp=true``) SFT and value training, resumed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_sft.py"
RL_SCRIPT = Path(__file__).parent / "scripts" / "ddp_rl.py"
OFFLINE_SCRIPT = Path(__file__).parent / "scripts" / "ddp_offline.py"
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_sft_equals_one_process(tmp_path):
    from safetensors.torch import load_file

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(SCRIPT), str(one)], check=True, env=env, timeout=300)
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this interpreter")
    subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), str(SCRIPT), str(two)],
                   check=True, env=env, timeout=300)
    a = load_file(one / "final" / "model.safetensors")
    b = load_file(two / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst  # stated tolerance: float32 reductions in another order
    import json

    from searchrl.models.policy import load_policy
    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer

    states = [json.loads((d / "final" / "train_state.json").read_text()) for d in (one, two)]
    assert [s["num_processes"] for s in states] == [1, 2] and states[0]["tokens"] == states[1]["tokens"]
    init = load_policy("micro", tokenizer=build_countdown_tokenizer(), max_seq_len=128, seed=0)[0].state_dict()
    moved = max(float((a[k] - init[k]).abs().max()) for k in a if k in init)
    assert moved > 1e-4  # it trained: the agreement is not two copies of the initial weights


def _torchrun(*args):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this interpreter")
    subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), *map(str, args)],
                   check=True, env=ENV, timeout=300)


@pytest.mark.parametrize("method,flags", [("ppo", ()), ("grpo", ()), ("ppo", ("fsdp",)), ("grpo", ("fsdp",))],
                         ids=["ppo", "grpo", "ppo-fsdp", "grpo-fsdp"])
def test_two_process_rl_equals_one_process(tmp_path, method, flags):
    """``*-fsdp``: the policy (and the critic) sharded, sampling from a whole copy refreshed after each update."""
    import json

    from safetensors.torch import load_file

    from searchrl.tasks.countdown import CountdownConfig, CountdownTask

    data = tmp_path / "data"  # prepared once here: two processes must not both write it
    CountdownTask(CountdownConfig(n_train=12, n_selftrain=40, n_valid=3, n_valid_unseen=2, n_test=3, max_target=30,
                                  workers=1), data).prepare(progress=False)
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(RL_SCRIPT), str(data), str(one), method], check=True, env=ENV, timeout=300)
    _torchrun(RL_SCRIPT, data, two, method, *flags)
    parts = [""] + (["critic"] if method == "ppo" else [])
    for part in parts:
        a = load_file(one / "final" / part / "model.safetensors")
        b = load_file(two / "final" / part / "model.safetensors")
        assert a.keys() == b.keys()
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        # stated tolerance: float32 sums in another order. Adam divides by sqrt(v), so a weight whose gradient is
        # ~0 moves by up to lr on float noise: at lr 2e-2 the two runs were 2e-4 apart; at 1e-3 within 1e-5
        assert worst < 1e-5, (part, worst)
    logs = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [x["reward/task_mean"] for x in logs[0]] == [x["reward/task_mean"] for x in logs[1]]
    for key in ["actor/pg_loss", "actor/grad_norm", "actor/clip_frac"] + (["critic/vf_loss"] if method == "ppo" else []):
        assert [x[key] for x in logs[0]] == pytest.approx([x[key] for x in logs[1]], rel=1e-4, abs=1e-7), key
    assert [json.loads((d / "final" / "train_state.json").read_text())["num_processes"] for d in (one, two)] == [1, 2]
    from searchrl.models.policy import load_policy

    init = load_policy("micro", tokenizer=CountdownTask(CountdownConfig(), data).tokenizer(), max_seq_len=512,
                       seed=0)[0].state_dict()
    a = load_file(one / "final" / "model.safetensors")
    assert max(float((a[k] - init[k]).abs().max()) for k in a if k in init) > 1e-4  # it trained


def test_the_sft_command_under_torchrun_equals_one_process(tmp_path):
    """What a user types: ``torchrun --nproc_per_node 2 -m searchrl.cli sft ...`` against the same
    command in one process with twice the accumulation."""
    from safetensors.torch import load_file

    preset = Path(__file__).resolve().parents[1] / "searchrl" / "presets" / "demo-smoke.yaml"
    common = ["--config", str(preset), "--quiet", "sft.max_steps=4", "sft.save_every=0", f"data_dir={tmp_path / 'data'}"]
    subprocess.run([sys.executable, "-m", "searchrl.cli", "data", "--config", str(preset), "--quiet", "--out",
                    str(tmp_path / "data")], check=True, env=ENV, timeout=300)
    subprocess.run([sys.executable, "-m", "searchrl.cli", "sft", "--run-dir", str(tmp_path / "one"), *common,
                    "sft.grad_accum=2"], check=True, env=ENV, timeout=300)
    _torchrun("-m", "searchrl.cli", "sft", "--run-dir", tmp_path / "two", *common)
    a, b = (load_file(tmp_path / d / "sft" / "final" / "model.safetensors") for d in ("one", "two"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def _max_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def test_fsdp_sft_crashes_resumes_and_equals_one_process(tmp_path):
    """``fsdp=true`` over 2 processes (each holds half of every weight: the script checks), killed after
    step 3 and rerun: it resumes from the step-2 checkpoint (whole weights and optimizer state, re-sharded)
    and ends where one unsharded process does; the caller's model is plain again (script)."""
    import json

    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(SCRIPT), str(one)], check=True, env=ENV, timeout=300)
    with pytest.raises(subprocess.CalledProcessError):
        _torchrun(SCRIPT, two, "fsdp", "crash-after-3")
    assert [p.name for p in (two / "checkpoints").iterdir()] == ["step-2"] and not (two / "final").exists()
    _torchrun(SCRIPT, two, "fsdp")
    state = json.loads((two / "final" / "train_state.json").read_text())
    assert state["resumed_from_step"] == 2 and state["num_processes"] == 2
    assert _max_diff(one, two) < 1e-5  # the same tolerance as DDP: float32 sums in another order


def test_fsdp_bf16_sft_runs_and_tracks_fp32(tmp_path):
    """bf16 under FSDP (weights gathered in bf16, gradients reduced in fp32): losses within bf16 rounding of
    the fp32 single-process run's; the files keep fp32 weights."""
    import json

    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(SCRIPT), str(one)], check=True, env=ENV, timeout=300)
    _torchrun(SCRIPT, two, "fsdp", "bf16")
    losses = [[json.loads(x)["losses/sft"] for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert len(losses[1]) == 4 and losses[1] == pytest.approx(losses[0], rel=2e-3)
    assert losses[1] != losses[0]  # bf16 did change the arithmetic
    assert {v.dtype for v in load_file(two / "final" / "model.safetensors").values()} == {__import__("torch").float32}


@pytest.mark.parametrize("kind", ["value", "dpo"])
def test_fsdp_value_model_and_dpo_equal_one_process(tmp_path, kind):
    """A value model (transformer backbone + 3-class head) and DPO (reference = the initial policy) trained
    sharded over 2 processes equal one unsharded process."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(OFFLINE_SCRIPT), kind, str(one)], check=True, env=ENV, timeout=300)
    _torchrun(OFFLINE_SCRIPT, kind, two, "fsdp")
    assert _max_diff(one, two) < 1e-5
    if kind == "value":
        from searchrl.models.value import ValueModel

        assert ValueModel.from_pretrained(two / "final").kind == "3class"
