"""The trainer core: :class:`TrainRun`, one resumable training run, everything but the data and the loss.

searchrl's trainers (SFT, value model, PPO, GRPO/DAPO, DPO) differ in their data and their
loss, and in nothing else that is hard to get right. A trainer is "its data plan plus its
loss" on a :class:`TrainRun` (see :func:`searchrl.train.sft.fit_batches`), so a fix lands in
every trainer at once. What a run promises:

* killed at any moment and rerun with the same arguments, it continues exactly as if never
  interrupted (bitwise equal weights on CPU); rerun with settings or data that change what is
  learned, it refuses, naming the differences;
* each optimizer step is the gradient of the mean over every loss term of the step, however
  the terms fall into micro-batches and processes;
* when it ends, the caller's model is the one it gave (plain: no autocast wrapper, no LoRA
  adapters, no sharding, its ``requires_grad`` flags and training mode), only with new weights.

The pieces, one job each, lower in the layers: :mod:`~searchrl.train.accel` (the accelerator,
precision, refused launches), :mod:`~searchrl.train.optim` (AdamW, schedule, the accumulation
step), :mod:`~searchrl.train.adapters` (gradient checkpointing, LoRA),
:mod:`~searchrl.train.fsdp` (sharding), :mod:`~searchrl.train.checkpoint` (checkpoints, final
model) and :mod:`~searchrl.train.metrics` (metrics log, compute time); its metrics go to the
command's trackers (:mod:`searchrl.tracking`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from searchrl import tracking
from searchrl.train import fsdp
from searchrl.train.adapters import add_lora, merge_lora, set_checkpointing, transformers_in
from searchrl.train.checkpoint import Checkpointer, load_weights, write_final
from searchrl.train.config import TrainConfig
from searchrl.train.metrics import METRICS_FILE, MetricsLog, Stopwatch
from searchrl.train.optim import MicroBatch, accumulation_step, build_optimizer, optimizer_parts

logger = logging.getLogger(__name__)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))  # tuples -> lists, as read back from JSON


def _config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))


class TrainRun:
    """One resumable training run in ``cfg.output_dir``: everything but the data and the loss.

    Constructing it only reads: it finds the newest checkpoint and checks its trajectory,
    so a trainer can inspect :attr:`state` (its own data position) and refuse before
    anything is touched. Entering it (``with run:``) moves the model to the device,
    builds optimizer and schedule, restores weights/optimizer/schedule/RNG from the
    checkpoint (or seeds the RNGs with ``cfg.seed``), prepares them with accelerate,
    deletes leftovers of interrupted writes, opens the metrics log and puts the model in
    training mode. Leaving it restores the model's forward and training mode and
    finishes the trackers. A whole trainer (``tests/test_train_core.py`` has a runnable one)::

        if (done := load_finished(model, cfg.output_dir, "value")) is not None:
            return done
        accelerator = make_accelerator(cfg, accelerator)
        run = TrainRun(model, cfg, accelerator, total_steps=n, trajectory={"data_fingerprint": fp})
        with run, run.progress_bar("value", enabled=progress) as bar:
            for step in range(run.start_step + 1, n + 1):
                micro_batches = ...  # this process's share of step `step`, a pure function of it
                gnorm = run.step(micro_batches, loss_fn, normaliser)  # loss_fn calls run.model
                if run.should_log(step):
                    run.log({"step": step, ...})
                if run.should_save(step):
                    run.save(step, {...data position...})
                bar.update(1)
        run.finish({...summary...})

    ``trajectory`` adds the trainer's own fingerprints (data) to the config's trajectory
    fields, the mixed precision and the process count.
    """

    def __init__(self, model, cfg: TrainConfig, accelerator, *, total_steps: int, tokenizer=None,
                 name: str = "training", trajectory: Mapping[str, Any] | None = None):
        self.base_model, self.model, self.cfg, self.accelerator = model, model, cfg, accelerator
        self.total_steps, self.tokenizer, self.name = total_steps, tokenizer, name
        self.out = Path(cfg.output_dir)
        self.main = accelerator.is_main_process
        self.trajectory = _jsonable({**{k: getattr(cfg, k) for k in cfg.trajectory_fields},
                                     "mixed_precision": accelerator.mixed_precision,
                                     "num_processes": accelerator.num_processes,
                                     "lora": cfg.lora_settings() if hasattr(cfg, "lora_settings") else {},
                                     # the optimizer file's layout differs (parameter names, not numbers)
                                     **({"fsdp": True} if getattr(cfg, "fsdp", False) else {}),
                                     **(trajectory or {})})
        self.checkpoints = Checkpointer(self.out, accelerator, cfg.keep_last)
        self.checkpoint = self.checkpoints.latest()  # resumed from, or None
        self.state: dict = {}  # trainer_state.json of that checkpoint
        if self.checkpoint is not None:
            self.state = Checkpointer.read_state(self.checkpoint, self.trajectory,
                                                 {"lora": {}, **(getattr(cfg, "trajectory_defaults", None) or {})})
        self.start_step: int = self.state.get("step", 0)
        self.optimizer = self.scheduler = self.unwrapped = self.metrics = None
        self.clock = Stopwatch(self.state.get("train_time_s", 0.0))  # restarted when entering
        self._entered = False

    # ---- setting up and tearing down

    def __enter__(self) -> TrainRun:
        from accelerate.utils import set_seed

        if self._entered:
            raise RuntimeError("a TrainRun can be entered once")
        self._entered = True
        model, acc, ckpt = self.base_model, self.accelerator, self.checkpoint
        self._was_training = model.training
        # accelerate's bf16 autocast wraps model.forward in place; remember it to restore exactly
        self._had_forward, self._saved_forward = "forward" in model.__dict__, model.__dict__.get("forward")
        self._requires_grad = [p.requires_grad for p in model.parameters()]
        self._lora = False
        self._unshard: dict | None = None  # how to make the model plain again, while it is sharded
        try:
            if getattr(self.cfg, "gradient_checkpointing", False):
                for m in transformers_in(model):
                    set_checkpointing(m, True)
            if getattr(self.cfg, "lora_rank", 0):
                add_lora(model, self.cfg)
                self._lora = True
            model.to(acc.device)
            if ckpt is not None:
                load_weights(model, ckpt)
            else:
                set_seed(self.cfg.seed, device_specific=True)
            if getattr(self.cfg, "fsdp", False):
                self._unshard = fsdp.shard_model(model, acc.device, acc.mixed_precision)
                optimizer, self.scheduler = build_optimizer(model, self.cfg, self.total_steps)  # on the shards
                self.optimizer, _ = acc.prepare(optimizer, self.scheduler)
                self.model = model
            else:
                optimizer, self.scheduler = build_optimizer(model, self.cfg, self.total_steps)
                # the scheduler is prepared only to register it with accelerate; we step the raw one
                self.model, self.optimizer, _ = acc.prepare(model, optimizer, self.scheduler)
            if ckpt is not None:
                self.checkpoints.load(ckpt, optimizer=self.optimizer, scheduler=self.scheduler, model=self.model)
                if self.main:
                    logger.info("resuming %s from %s (step %d of %d)", self.name, ckpt, self.start_step,
                                self.total_steps)
            self.unwrapped = acc.unwrap_model(self.model)
            if self.main:  # leftovers of writes cut short by a crash
                self.checkpoints.clean()
                shutil.rmtree(self.out / ".final.tmp", ignore_errors=True)
            config = _config_dict(self.cfg)
            # the command's trackers (tracking.report_to), one run named after output_dir inside the run dir
            tracker = tracking.start(self.out, config=config, kind="train", main=self.main)
            self.metrics = MetricsLog(self.out / METRICS_FILE, self.start_step, acc, tracker=tracker,
                                      project=tracking.project(), config=config)
            self.model.train()
        except BaseException:
            self._restore(failed=True)
            raise
        self.clock = Stopwatch(self.state.get("train_time_s", 0.0))
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._restore(failed=exc_type is not None)

    def _restore(self, failed: bool = False) -> None:
        model = self.base_model
        if self._unshard is not None and not failed:  # a failure on one process would leave the others waiting
            fsdp.unshard_model(model, self._unshard)
            self._unshard = None
            self.model = self.unwrapped = model
        self._merge_lora()  # the caller gets a plain model back, with the adapters' updates in its weights
        if getattr(self.cfg, "gradient_checkpointing", False):
            for m in transformers_in(model):
                set_checkpointing(m, False)
        for p, flag in zip(model.parameters(), getattr(self, "_requires_grad", [])):
            p.requires_grad_(flag)
        model.__dict__.pop("_original_forward", None)
        if self._had_forward:
            model.forward = self._saved_forward
        else:
            model.__dict__.pop("forward", None)
        model.train(self._was_training)
        if self.metrics is not None:
            self.metrics.close()

    # ---- the loop

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        return self.scheduler.get_last_lr()[0]

    def step(self, micro_batches: Sequence[MicroBatch], loss_fn: Callable[[MicroBatch], torch.Tensor],
             normaliser: float) -> torch.Tensor:
        """One optimizer step (:func:`accumulation_step`, clipped at ``cfg.grad_clip``, each part of a model
        with parts on its own); the gradient norm (one per part)."""
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        parts = optimizer_parts(self.unwrapped, self.cfg)
        groups = [ps for _, ps, _ in parts] if len(parts) > 1 else None
        return accumulation_step(self.accelerator, self.model, self.optimizer, self.scheduler, micro_batches,
                                 loss_fn, normaliser, max_norm, clip_groups=groups)

    def should_log(self, step: int) -> bool:
        return step % self.cfg.log_every == 0 or step == self.total_steps

    def should_save(self, step: int) -> bool:
        return self.cfg.save_every > 0 and step % self.cfg.save_every == 0 and step < self.total_steps

    def log(self, record: dict) -> None:
        """Write a metrics line (``record["step"]`` required); not counted as training time."""
        with self.clock.paused():
            self.metrics.write(record)

    def save(self, step: int, state: Mapping[str, Any] | None = None) -> Path:
        """Write checkpoint ``step`` with the trainer's ``state`` (its data position, counters).

        Call on every process after ``step`` optimizer steps. Not counted as training time.
        """
        with self.clock.paused():
            full = {**(state or {}), "seed": self.cfg.seed, "total_steps": self.total_steps,
                    "train_time_s": self.clock.elapsed(), "trajectory": self.trajectory,
                    "config": _config_dict(self.cfg)}
            return self.checkpoints.save(step, full, model=self.unwrapped, optimizer=self.optimizer,
                                         scheduler=self.scheduler, tokenizer=self.tokenizer)

    def progress_bar(self, desc: str, enabled: bool = True):
        """A tqdm bar over the run's steps (main process), saying so when the run resumes."""
        from tqdm.auto import tqdm

        if self.start_step:
            desc = f"{desc} resuming (step {self.start_step} of {self.total_steps})"
        return tqdm(total=self.total_steps, initial=self.start_step, desc=desc, unit="step", dynamic_ncols=True,
                    disable=not (self.main and enabled))

    def _merge_lora(self) -> None:
        if self._lora:
            merge_lora(self.base_model)
            self._lora = False

    def finish(self, summary: dict, started: float | None = None) -> dict:
        """Write the final model with ``summary`` (see :func:`write_final`); call after the loop.
        LoRA adapters are merged into the weights first, so ``final/`` is a plain model."""
        self._merge_lora()
        return write_final(self.accelerator, self.unwrapped, self.tokenizer, self.out, summary, started)
