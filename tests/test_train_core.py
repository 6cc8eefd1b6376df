"""Trainer core: a second, non-SFT trainer built only from the core (TrainRun, optimizer, accumulation,
checkpoints, exact resume, metrics), checkpoint atomicity, trajectory refusal, trackers, loss registry."""

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field

import pytest
import torch

from searchrl.data import read_jsonl
from searchrl.train.accel import make_accelerator
from searchrl.train.checkpoint import Checkpointer, is_complete, load_finished
from searchrl.train.config import TrainConfig
from searchrl.train.core import TrainRun
from searchrl.train.losses import get_loss, register_loss
from searchrl.train.metrics import Stopwatch
from searchrl.train.optim import accumulation_step, build_optimizer

transformers = pytest.importorskip("transformers")

# ---------------------------------------------------------------- a toy value-model trainer on the core


@register_loss("test_value_mse")
def value_mse(values: torch.Tensor, returns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed squared error of predicted values, and the number of terms."""
    return ((values.float() - returns) ** 2).sum(), torch.tensor(values.numel())


@dataclass
class ValueConfig(TrainConfig):
    max_steps: int = 12
    batch_size: int = field(default=4, metadata={"help": "sequences per micro-batch"})
    grad_accum: int = 2
    trajectory_fields = TrainConfig.trajectory_fields + ("max_steps", "batch_size", "grad_accum")


def train_value(model, input_ids, returns, cfg: ValueConfig, *, callback=None, accelerator=None) -> dict:
    """Regress ``returns`` from the last token of ``input_ids``: data plan + loss, the rest is the core."""
    finished = load_finished(model, cfg.output_dir, "value")
    if finished is not None:
        return finished
    accelerator = make_accelerator(cfg, accelerator)
    fingerprint = hashlib.sha256(input_ids.numpy().tobytes() + returns.numpy().tobytes()).hexdigest()
    run = TrainRun(model, cfg, accelerator, total_steps=cfg.max_steps, name="value",
                   trajectory={"data_fingerprint": fingerprint})
    loss_fn = get_loss("test_value_mse")
    win = torch.zeros(())

    def micro_loss(rows: torch.Tensor) -> torch.Tensor:
        dev = run.accelerator.device  # the model's device (the GPU where there is one)
        values = run.model(input_ids=input_ids[rows].to(dev)).logits.squeeze(-1)
        loss_sum, _ = loss_fn(values, returns[rows].to(dev))
        win.add_(loss_sum.detach())
        return loss_sum

    with run, run.progress_bar("value", enabled=False) as bar:
        for step in range(run.start_step + 1, cfg.max_steps + 1):
            # the data plan: a pure function of (seed, step), so resuming needs no data state
            order = torch.randperm(len(returns), generator=torch.Generator().manual_seed(cfg.seed * 7919 + step))
            micro = [order[j * cfg.batch_size:(j + 1) * cfg.batch_size] for j in range(cfg.grad_accum)]
            gnorm = run.step(micro, micro_loss, normaliser=cfg.batch_size * cfg.grad_accum)
            bar.update(1)
            logs = None
            if run.should_log(step):
                logs = {"step": step, "losses/value": win.item() / (cfg.batch_size * cfg.grad_accum),
                        "charts/grad_norm": gnorm.item(), "charts/lr": run.lr}
                run.log(logs)
            win.zero_()
            if run.should_save(step):
                run.save(step)
            if callback is not None:
                callback(step, logs)
    return run.finish({"steps": cfg.max_steps, "resumed_from_step": run.start_step})


def value_model(seed=0, dropout=0.1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=16, attention_dropout=dropout, num_labels=1,
                      pad_token_id=0)
    return LlamaForSequenceClassification(cfg)


def value_data(n=16):
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 16, (n, 6), generator=g)
    return input_ids, (input_ids[:, -1] % 4).float() - 1.5


def value_cfg(path, **kw):
    base = dict(output_dir=str(path), lr=1e-2, warmup_steps=2, save_every=4, log_every=2, mixed_precision="no")
    return ValueConfig(**{**base, **kw})


class Crash(Exception):
    pass


def crash_at(k):
    def callback(step, logs):
        if step == k:
            raise Crash

    return callback


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_second_trainer_resumes_bitwise_like_an_uninterrupted_run(tmp_path):
    x, y = value_data()
    model_a = value_model()
    train_value(model_a, x, y, value_cfg(tmp_path / "a"))
    assert is_complete(tmp_path / "a")
    losses = [r["losses/value"] for r in read_jsonl(tmp_path / "a/metrics.jsonl")]
    assert len(losses) == 6 and losses[-1] < losses[0]  # it learns

    with pytest.raises(Crash):  # killed after step 7; the newest checkpoint is step 4
        train_value(value_model(), x, y, value_cfg(tmp_path / "b"), callback=crash_at(7))
    assert sorted(p.name for p in (tmp_path / "b/checkpoints").iterdir()) == ["step-4"]
    state = json.loads((tmp_path / "b/checkpoints/step-4/trainer_state.json").read_text())
    assert state["step"] == 4 and state["trajectory"]["batch_size"] == 4 and "train_time_s" in state
    assert [r["step"] for r in read_jsonl(tmp_path / "b/metrics.jsonl")] == [2, 4, 6]

    seen = []
    model_b = value_model(seed=123).eval()  # weights come from the checkpoint
    out = train_value(model_b, x, y, value_cfg(tmp_path / "b"), callback=lambda step, logs: seen.append(step))
    assert out["resumed_from_step"] == 4 and seen == list(range(5, 13))
    assert same_weights(model_a, model_b)
    ma, mb = read_jsonl(tmp_path / "a/metrics.jsonl"), read_jsonl(tmp_path / "b/metrics.jsonl")
    assert [r["step"] for r in mb] == [2, 4, 6, 8, 10, 12]  # lines past the checkpoint were dropped
    assert [r["losses/value"] for r in ma] == [r["losses/value"] for r in mb]

    # the model is handed back as it was given: its own forward, its training mode
    assert "forward" not in model_b.__dict__ and not model_b.training
    # a finished run is not trained again
    again = value_model(seed=5)
    out = train_value(again, x, y, value_cfg(tmp_path / "b"), callback=crash_at(1))
    assert out["skipped"] and same_weights(again, model_a)


def test_resume_progress_bar_says_so(tmp_path):
    x, y = value_data()
    cfg = value_cfg(tmp_path, save_every=3)
    with pytest.raises(Crash):
        train_value(value_model(), x, y, cfg, callback=crash_at(5))
    fingerprint = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    run = TrainRun(value_model(), cfg, make_accelerator(cfg), total_steps=12,
                   trajectory={"data_fingerprint": fingerprint})
    assert run.start_step == 3
    with run.progress_bar("value") as bar:
        assert bar.desc == "value resuming (step 3 of 12)" and bar.n == 3


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    x, y = value_data()
    cfg = value_cfg(tmp_path)
    model = value_model()
    real_save = type(model).save_pretrained

    def save_fails_at_step_8(self, directory, *a, **kw):
        if str(directory).endswith(".tmp-step-8"):
            real_save(self, directory, *a, **kw)
            raise OSError("disk full")  # the model is written, the rest of the checkpoint is not
        return real_save(self, directory, *a, **kw)

    monkeypatch.setattr(type(model), "save_pretrained", save_fails_at_step_8)
    with pytest.raises(OSError, match="disk full"):
        train_value(model, x, y, cfg)
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert (root / ".tmp-step-8/model.safetensors").exists()  # the half-written one is left ...
    assert [s for s, _ in Checkpointer(tmp_path, None).list()] == [4]  # ... but is not a checkpoint
    (root / "step-10").mkdir()  # nor is a directory without trainer_state.json
    (root / "step-10/model.safetensors").write_bytes(b"junk")

    model_b = value_model(seed=9)
    out = train_value(model_b, x, y, cfg)
    assert out["resumed_from_step"] == 4
    assert not (root / ".tmp-step-8").exists()  # cleaned at the start of the rerun
    model_a = value_model()
    train_value(model_a, x, y, value_cfg(tmp_path / "ref"))
    assert same_weights(model_a, model_b)


def test_changed_trajectory_is_refused_naming_the_key(tmp_path):
    x, y = value_data()
    with pytest.raises(Crash):
        train_value(value_model(), x, y, value_cfg(tmp_path), callback=crash_at(5))
    with pytest.raises(ValueError, match="different settings") as e:
        train_value(value_model(), x, y, value_cfg(tmp_path, batch_size=8))
    assert "'batch_size': (4, 8)" in str(e.value) and "'lr'" not in str(e.value)
    with pytest.raises(ValueError, match="'data_fingerprint'"):
        train_value(value_model(), x, y + 1.0, value_cfg(tmp_path))
    # log_every does not change what is learned: resuming with other values is fine
    out = train_value(value_model(), x, y, value_cfg(tmp_path, log_every=3))
    assert out["resumed_from_step"] == 4


# ---------------------------------------------------------------- one optimizer step


def test_accumulation_step_is_one_step_on_the_mean_of_all_micro_batches(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), lr=0.1, warmup_steps=0, weight_decay=0.1, mixed_precision="no")
    acc = make_accelerator(cfg)
    torch.manual_seed(0)
    x, y = torch.randn(12, 4), torch.randn(12)
    model, ref = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    ref.load_state_dict(model.state_dict())

    opt, sched = build_optimizer(model, cfg, total_steps=10)
    micro = [slice(0, 5), slice(5, 9), slice(9, 12)]  # uneven micro-batches
    gnorm = accumulation_step(acc, model, opt, sched, micro,
                              lambda s: ((model(x[s]).squeeze(-1) - y[s]) ** 2).sum(), normaliser=12)

    ref_opt, _ = build_optimizer(ref, cfg, total_steps=10)
    ((ref(x).squeeze(-1) - y) ** 2).mean().backward()
    ref_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ref.parameters()]))
    ref_opt.step()
    torch.testing.assert_close(gnorm, ref_norm)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
        assert p.grad is None  # zeroed
    assert sched.last_epoch == 1 and not torch.equal(model.weight, torch.nn.Linear(4, 1).weight)
    with pytest.raises(ValueError, match="normaliser"):
        accumulation_step(acc, model, opt, sched, micro, lambda s: model(x[s]).sum(), normaliser=0)


def test_stopwatch_leaves_out_pauses():
    watch = Stopwatch(base=10.0)
    with watch.paused():
        with watch.paused():  # nested pauses count once
            time.sleep(0.25)
        frozen = watch.elapsed()
        time.sleep(0.05)
        assert watch.elapsed() == frozen
    assert 10.0 <= watch.elapsed() < 10.2  # 0.3 s were paused
    assert watch.lap() < 0.2


# ---------------------------------------------------------------- trackers


def test_metrics_go_to_an_accelerate_tracker_and_nothing_is_imported_unasked(tmp_path):
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    class ListTracker(GeneralTracker):
        name, requires_logging_directory = "list", False

        def __init__(self):
            super().__init__()
            self.config, self.logged, self.finished = None, [], False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.logged.append((step, values))

        def finish(self):
            self.finished = True

    before = set(sys.modules)
    x, y = value_data()
    train_value(value_model(), x, y, value_cfg(tmp_path / "plain", max_steps=4))
    new = set(sys.modules) - before
    assert not [m for m in new if m.split(".")[0] in ("wandb", "tensorboard", "tensorboardX")
                or m.startswith("torch.utils.tensorboard")]

    tracker = ListTracker()
    acc = Accelerator(log_with=[tracker])
    train_value(value_model(), x, y, value_cfg(tmp_path / "tracked", max_steps=4), accelerator=acc)
    assert [step for step, _ in tracker.logged] == [2, 4]
    assert "losses/value" in tracker.logged[0][1] and "step" not in tracker.logged[0][1]
    lines = read_jsonl(tmp_path / "tracked/metrics.jsonl")
    assert [v["losses/value"] for _, v in tracker.logged] == [r["losses/value"] for r in lines]
    assert tracker.config["lr"] == 1e-2 and tracker.config["betas"] == "(0.9, 0.95)"  # flattened for hparams
    assert tracker.finished and acc.trackers == []  # finished, and the accelerator is left reusable


def test_a_launch_that_accelerate_does_not_see_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # e.g. torchrun on CPU without ACCELERATE_USE_CPU
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU"):
        make_accelerator(value_cfg(tmp_path))


# ---------------------------------------------------------------- loss registry


def test_loss_registry():
    from searchrl.train.losses import sft_loss

    assert get_loss("sft") is sft_loss and get_loss("test_value_mse") is value_mse
    with pytest.raises(KeyError, match="unknown loss 'nope'; known: .*sft.*test_value_mse"):
        get_loss("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_loss("sft")(lambda logits, labels: (logits.sum(), labels.numel()))
    assert register_loss("test_value_mse")(value_mse) is value_mse  # re-registering the same function is a no-op
    total, n = value_mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    assert math.isclose(total.item(), 5.0) and n.item() == 2
