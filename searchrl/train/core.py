"""The plumbing every trainer shares: optimizer, accumulation step, checkpoints, metrics, final model.

Why this file exists
--------------------
searchrl's trainers (SFT, value model, PPO, GRPO/DAPO, DPO) differ in their data and
their loss, and in nothing else that is hard to get right. Building an optimizer,
stepping it correctly under gradient accumulation and data parallelism, writing
checkpoints that survive a kill at any moment and resume bit for bit, keeping a
metrics log that reads as one run across restarts: written once here, so that a
trainer is "its data plan plus its loss" on this core (see
:func:`searchrl.train.sft.train_sft`), and a fix lands in every trainer at once.
Read top to bottom; every decision is written next to the code that makes it.

* **Settings.** :class:`OptimConfig` holds the optimizer fields (``lr``,
  ``weight_decay``, ``betas``, ``warmup_steps``, ``min_lr_ratio``, ``grad_clip``) and
  :class:`TrainConfig` adds what a resumable run needs (``output_dir``, ``seed``,
  ``mixed_precision``, ``save_every``, ``log_every``, ``keep_last``, ``report_to``).
  A trainer's config subclasses :class:`TrainConfig` (a trainer with two optimizers,
  say an actor and a critic, can hold a second :class:`OptimConfig`). Each config
  class names its *trajectory fields*: the settings that change what is learned,
  which a checkpoint must agree on to be resumed.
* **Optimisation.** AdamW (the fused kernel where torch has one for the device);
  weight decay only on tensors with >= 2 dims (matrices and embeddings, not
  norms/biases); learning rate warmed up linearly over ``warmup_steps`` (step 0 uses
  ``lr / warmup_steps``), then cosine-decayed to ``min_lr_ratio * lr`` at the last
  step; global gradient norm clipped to ``grad_clip``. The schedule counts optimizer
  steps and is stepped by us, not through accelerate's wrapper (which would step it
  num_processes times per step unless told otherwise).
* **Precision.** Weights and optimizer state stay in the model's dtype (pass an fp32
  model); ``mixed_precision="auto"`` runs forward/backward under bf16 autocast on CUDA
  devices with bf16, fp32 elsewhere. fp16 (which needs a loss scaler) is not
  supported. accelerate implements autocast by replacing ``model.forward`` in place;
  :class:`TrainRun` puts the original back when training ends (restoring the saved
  attribute exactly: ``unwrap_model(keep_fp32_wrapper=False)`` can also strip
  transformers' own forward decorators), so the caller's model is left as it was
  given, only with new weights.
* **One optimizer step** (:func:`accumulation_step`). A step is a list of
  micro-batches per process, the same number on every process. The loss callable
  returns a *sum* over the terms of its micro-batch (tokens, sequences); the caller
  passes the number of terms of the whole step over all processes as the
  normaliser. Each micro-batch's backward is scaled by ``P / normaliser``: gradients
  add up over the micro-batches and DDP averages them over the ``P`` processes, so
  the result is the gradient of the mean over every term of the step, however the
  terms fall into micro-batches. Gradients are all-reduced once per step: all but the
  last micro-batch run under ``no_sync``. Then clip, optimizer step, schedule step,
  ``zero_grad``. accelerate's own accumulation (``gradient_accumulation_steps``)
  is refused, because its backward divides the loss a second time.
* **Checkpoints** (:class:`Checkpointer`). Every ``save_every`` steps
  ``output_dir/checkpoints/step-N/`` is written into ``.tmp-step-N/`` and renamed once
  complete (files fsynced first), so a checkpoint exists completely or not at all; a
  leftover temporary directory is deleted at the next start, and only directories
  holding ``trainer_state.json`` count. One holds the model (``save_pretrained``,
  loadable on its own, with the tokenizer), ``optimizer.pt``, ``scheduler.pt``, one
  ``rng_state_R.pt`` per process (python, numpy, torch, CUDA), and
  ``trainer_state.json``: the step, the trainer's data position, compute time, the
  config and the trajectory fingerprint. A rerun resumes from the newest checkpoint
  and continues exactly as if never interrupted (bitwise equal weights on CPU);
  one whose trajectory differs (settings, precision, process count, data) is
  refused with the differing keys named, rather than silently mixing two runs.
  ``keep_last`` checkpoints are kept.

  Why not accelerate's ``save_state``/``load_state``: (1) its model file is
  ``model.safetensors``, the name ``save_pretrained`` uses, so a checkpoint would hold
  the weights twice or not as a loadable model; (2) it saves every model, optimizer
  and scheduler ever registered with the accelerator, so an accelerator reused across
  runs (ReST calls SFT once per round) would write and expect the objects of earlier
  runs too; (3) ``load_state`` catches any error restoring the RNG states and only
  logs it, which would make a resume silently inexact; (4) its file names differ, so
  runs interrupted before this module existed could no longer be resumed. The few
  lines here keep the layout, load with ``weights_only=True`` and fail loudly.
* **Final model** (:func:`write_final`). ``output_dir/final/`` (model + tokenizer)
  is written to ``.final.tmp`` and renamed, with ``train_state.json``
  (``{"done": true, ...summary}``) written last: :func:`is_complete` is true only for
  a finished run, and a rerun of a finished run loads those weights and returns at
  once (:func:`load_finished`).
* **Metrics** (:class:`MetricsLog`). ``output_dir/metrics.jsonl`` gets one line per
  log step, appended (one write and fsync each) rather than rewritten, so logging
  costs one line, not the file. On resume, lines after the checkpoint's step are
  dropped, so the file reads as one uninterrupted run; a line cut short by a crash is
  dropped too (:func:`searchrl.data.read_jsonl_log`). ``report_to`` (e.g.
  ``"tensorboard"``, ``"wandb"`` or both, comma-separated) additionally sends each
  line to accelerate's trackers; the tracker packages are only imported when asked
  for. metrics.jsonl stays the record: a tracker keeps what it was sent, so after a
  resume the steps between the checkpoint and the crash appear twice there.
* **Time.** :class:`Stopwatch` counts training compute only: writing metrics and
  checkpoints and running the caller's callback are paused out, so tokens/s and the
  stored ``train_time_s`` measure training, across all resumed parts of a run.

Multi-process: only the main process writes files, except that every process writes
its own RNG state into the checkpoint. A launch that accelerate does not recognise as
distributed (``torchrun`` on CPU without ``ACCELERATE_USE_CPU=true``) is refused: every
process would believe it is the main one and they would overwrite each other's files.
``fsdp=true`` shards weights, gradients and optimizer state over the processes with torch's
FSDP2 (:mod:`searchrl.train.fsdp`) for SFT, value and DPO training; files stay the same
(whole weights, gathered). accelerate's own FSDP/DeepSpeed plugins are refused. For models
too large for one GPU in the RL trainers, train LoRA adapters (``lora_rank``) under DDP.

* **Memory settings.** ``gradient_checkpointing`` recomputes the transformer's activations in
  the backward pass (same gradients, tested). ``lora_rank > 0`` injects peft LoRA adapters into
  the ``lora_targets`` linear layers of every transformers model inside the trained module
  (:func:`add_lora`), freezes those models' own weights (a value head still trains), keeps
  the adapters in the checkpoints (resumed exactly), and merges them into the weights when
  training ends (:func:`merge_lora`): ``final/`` is a plain model any loader reads, and the
  caller's model is plain again, with the trained weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from searchrl.data import InputError, append_jsonl, atomic_write, read_json, read_jsonl_log, write_json, write_jsonl
from searchrl.train import fsdp
from searchrl.train.config import TRACKERS, OptimConfig, TrainConfig, tracker_names  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"  # in final/: completion marker, written last
TRAINER_STATE = "trainer_state.json"  # in checkpoints/step-N/: present = the checkpoint is complete
METRICS_FILE = "metrics.jsonl"


# -----------------------------------------------------------------------------
# settings


def resolve_mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


# -----------------------------------------------------------------------------
# accelerator, optimizer, schedule


def make_accelerator(cfg: TrainConfig, accelerator=None):
    """The :class:`accelerate.Accelerator` of a run: ``accelerator`` after checking it, or a new one.

    A new one gets ``cfg.mixed_precision`` and the trackers of ``cfg.report_to`` (tensorboard
    logs to ``output_dir/tensorboard/``, wandb keeps its files in ``output_dir``). A given one
    must not accumulate gradients itself, and must have been made with trackers
    (``log_with``) if ``cfg.report_to`` asks for them.
    """
    from accelerate import Accelerator

    names = tracker_names(cfg.report_to)
    if accelerator is None:
        kw: dict[str, Any] = {}
        if names:
            from accelerate.utils import ProjectConfiguration

            out = Path(cfg.output_dir)
            kw = {"log_with": names, "project_config": ProjectConfiguration(
                project_dir=str(out), logging_dir=str(out / "tensorboard"))}
        try:
            accelerator = Accelerator(mixed_precision=resolve_mixed_precision(cfg.mixed_precision), **kw)
        except ValueError as e:  # accelerate's process-wide state was set up earlier with another precision
            logger.warning("%s; using the existing accelerate state", e)
            accelerator = Accelerator(**kw)
        have = {str(getattr(t, "value", t)) for t in accelerator.log_with}
        missing = [n for n in names if n not in have]
        if missing:  # accelerate drops a tracker whose package is missing, with only a debug message
            raise ValueError(f"report_to={cfg.report_to!r}: {', '.join(missing)} is not installed "
                             f"(pip install {' '.join(missing)})")
    elif names and not accelerator.log_with:
        raise ValueError(f"report_to={cfg.report_to!r} but the given Accelerator has no trackers; make it with "
                         f"log_with=... or pass no accelerator")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:  # every process would think it is the only one
        raise ValueError(f"launched as {world} processes (WORLD_SIZE) but accelerate runs each alone, so all of them "
                         f"would write the same files; on CPU set ACCELERATE_USE_CPU=true or use "
                         f"'accelerate launch --cpu'")
    if getattr(accelerator, "gradient_accumulation_steps", 1) != 1:
        raise ValueError(f"pass an Accelerator with gradient_accumulation_steps=1 and set "
                         f"{type(cfg).__name__}.grad_accum instead (its backward would divide the loss a second time)")
    kind = str(getattr(accelerator, "distributed_type", ""))
    if any(k in kind for k in ("FSDP", "DEEPSPEED", "MEGATRON")):
        raise ValueError(f"{kind}: accelerate's sharding plugins are not used; launch as DDP "
                         "(configs/accelerate/ddp.yaml) and set the trainer's fsdp=true, which shards with torch "
                         "FSDP2 and keeps our checkpoint files")
    if accelerator.mixed_precision not in ("no", "bf16"):
        raise ValueError(f"mixed precision {accelerator.mixed_precision!r} is not supported (use 'bf16' or 'no')")
    return accelerator


def lr_lambda(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier for optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def optimizer_parts(model: torch.nn.Module, cfg: OptimConfig) -> list[tuple[str, list, float]]:
    """``(name, trainable parameters, peak lr)`` of each part of ``model`` that has its own learning
    rate and its own gradient clipping: one part (``cfg.lr``) unless the model defines
    ``optimizer_parts(cfg)`` (an actor with a critic: :class:`searchrl.train.rl.ActorCritic`)."""
    own = getattr(model, "optimizer_parts", None)
    if own is not None:
        return [(name, [p for p in ps if p.requires_grad], lr) for name, ps, lr in own(cfg)]
    return [("model", [p for p in model.parameters() if p.requires_grad], cfg.lr)]


def _transformers_in(model: torch.nn.Module) -> list:
    """The outermost transformers models inside ``model`` (itself, or an actor's and a critic's backbones)."""
    from transformers import PreTrainedModel

    found, inside = [], set()
    for name, m in model.named_modules():
        if isinstance(m, PreTrainedModel) and not any(name.startswith(p) for p in inside):
            found.append(m)
            inside.add(name + "." if name else "")
    return found


def set_checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing of a transformers model on or off (non-reentrant; the
    method's name changed in transformers 5)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def add_lora(model: torch.nn.Module, cfg) -> None:
    """LoRA adapters (rank ``cfg.lora_rank``, peft) on the ``cfg.lora_targets`` layers of every transformers
    model inside ``model``, in place: those models' own weights are frozen, the adapters train, and weights
    outside them (a value model's head) train as before."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("lora_rank > 0 trains LoRA adapters with peft: pip install 'searchrl[lora]'") from None
    targets = cfg.lora_target_names()
    backbone = {id(p) for m in _transformers_in(model) for p in m.parameters()}
    before = {id(p): p.requires_grad for p in model.parameters()}
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets)
    names = {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"lora_targets={cfg.lora_targets!r}: no linear layer named {missing} in the model "
                         f"(its linear layers: {sorted(names)})")
    inject_adapter_in_model(lora, model)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
        elif id(p) in backbone:
            p.requires_grad_(False)
        else:
            p.requires_grad_(before.get(id(p), True))


def merge_lora(model: torch.nn.Module) -> None:
    """Fold every LoRA adapter into its base layer and put the plain layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge()
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, m.get_base_layer())


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int):
    """AdamW over ``model``'s trainable parameters and its warmup + cosine ``LambdaLR`` of ``total_steps``.

    ``cfg`` is any object with the :class:`OptimConfig` fields. Build it after moving the
    model to its device (the fused kernel is chosen by the parameters' device). A model with
    parts (:func:`optimizer_parts`) gets one pair of groups per part at that part's learning rate
    (the schedule scales every group alike).
    """
    parts = optimizer_parts(model, cfg)
    params = [p for _, ps, _ in parts for p in ps]
    groups = []
    for _, ps, lr in parts:
        groups += [{"params": [p for p in ps if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0, "lr": lr}]
    groups = [g for g in groups if g["params"]]
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        fused_devices = _get_fused_kernels_supported_devices()
    except ImportError:
        fused_devices = ["cuda"]
    fused = all(p.is_floating_point() and p.device.type in fused_devices for p in params)
    betas = tuple(cfg.betas)
    try:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused or None)
    except (RuntimeError, ValueError):
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    return optimizer, scheduler


# -----------------------------------------------------------------------------
# one optimizer step

MicroBatch = TypeVar("MicroBatch")


def accumulation_step(accelerator, model, optimizer, scheduler, micro_batches: Sequence[MicroBatch],
                      loss_fn: Callable[[MicroBatch], torch.Tensor], normaliser: float,
                      max_norm: float = math.inf, clip_groups: Sequence[Sequence[torch.nn.Parameter]] | None = None
                      ) -> torch.Tensor:
    """One optimizer step over this process's ``micro_batches``; returns the gradient norm (before clipping).

    With ``clip_groups`` each group of parameters is clipped to ``max_norm`` on its own (an actor
    and its critic, as separate optimizers would) and the norms of all groups are returned.

    ``loss_fn(micro_batch)`` runs the forward pass and returns the *sum* of the micro-batch's
    loss terms; ``normaliser`` is the number of terms of the whole step on all processes
    (e.g. response tokens). The gradient is then that of the mean over all of them (see
    the module docstring). Every process must pass the same number of micro-batches; one
    with no data left can pass a repeated micro-batch whose loss it multiplies by 0.
    """
    if not micro_batches:
        raise ValueError("an optimizer step needs at least one micro-batch")
    if not normaliser > 0:
        raise ValueError(f"normaliser must be > 0, got {normaliser}")
    scale = accelerator.num_processes / normaliser  # DDP and FSDP average gradients over the processes
    last = len(micro_batches) - 1
    for j, micro_batch in enumerate(micro_batches):
        # gradients are all-reduced (FSDP: reduce-scattered) once per step, on its last micro-batch
        with contextlib.nullcontext() if j == last else _no_sync(accelerator, model):
            accelerator.backward(loss_fn(micro_batch) * scale)
    if clip_groups:
        norms = [_plain(accelerator.clip_grad_norm_(list(g), max_norm)) for g in clip_groups]
        gnorm = torch.stack([n.detach().float() for n in norms])
    else:
        gnorm = _plain(accelerator.clip_grad_norm_(model.parameters(), max_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return gnorm.detach().float()


@contextlib.contextmanager
def _no_sync(accelerator, model):
    from searchrl.train.fsdp import is_sharded, set_gradient_sync

    if not is_sharded(model):
        with accelerator.no_sync(model):
            yield
        return
    set_gradient_sync(model, False)
    try:
        yield
    finally:
        set_gradient_sync(model, True)


def _plain(norm) -> torch.Tensor:
    """A gradient norm as a plain tensor (FSDP's is a replicated DTensor; accelerate may give a float or None)."""
    if not torch.is_tensor(norm):
        return torch.tensor(float(norm or 0.0))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# -----------------------------------------------------------------------------
# files: weights, RNG, atomic directories


def _torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename a fully written ``tmp`` directory to ``dest`` (replacing it)."""
    _fsync_tree(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_state() -> dict[str, Any]:
    # plain lists/tuples/tensors, so that torch.load(weights_only=True) can read it back
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(model: torch.nn.Module, directory: str | os.PathLike) -> None:
    """Load weights written by ``save_pretrained`` in ``directory`` into ``model`` (in place).

    A model made of several saved models (an actor with its critic) loads itself through its
    ``load_searchrl_weights(directory)``."""
    from safetensors.torch import load_file

    own = getattr(model, "load_searchrl_weights", None)
    if own is not None:
        return own(directory)
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if files:
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        own = model.state_dict()
        missing = set(own) - set(state)
        unexpected = set(state) - set(own)
        loaded_ptrs = {own[k].data_ptr() for k in own if k in state}
        # save_pretrained leaves out tied weights (lm_head tied to the embeddings)
        if not unexpected and all(own[k].data_ptr() in loaded_ptrs for k in missing):
            model.load_state_dict(state, strict=False)
            return
    # anything else (renamed keys, .bin files): let transformers read it, then copy
    loaded = type(model).from_pretrained(str(directory), dtype=next(model.parameters()).dtype)
    model.load_state_dict(loaded.state_dict())


def _save_model(directory: Path, model, tokenizer, state_dict: dict | None = None) -> None:
    if state_dict is None:
        model.save_pretrained(directory)
    else:  # the gathered weights of a sharded model
        model.save_pretrained(directory, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))  # tuples -> lists, as read back from JSON


def _config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))


# -----------------------------------------------------------------------------
# checkpoints


class Checkpointer:
    """Resumable checkpoints in ``output_dir/checkpoints/step-N/`` (layout: module docstring)."""

    def __init__(self, output_dir: str | os.PathLike, accelerator, keep_last: int = 1):
        self.root = Path(output_dir) / CHECKPOINT_DIR
        self.accelerator = accelerator
        self.keep_last = keep_last

    def list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (those with trainer_state.json) as ``(step, dir)``, oldest first."""
        found = []
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.is_dir() and d.name.startswith("step-") and d.name[5:].isdigit() and (d / TRAINER_STATE).is_file():
                    found.append((int(d.name[5:]), d))
        return sorted(found)

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1][1] if found else None

    def clean(self) -> None:
        """Delete the temporary directories of writes cut short by a crash (main process only)."""
        if self.accelerator.is_main_process:
            for tmp in self.root.glob(".tmp-step-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def read_state(ckpt: Path, trajectory: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict:
        """``ckpt``'s trainer_state.json, after checking that it was written on ``trajectory``.

        A key the checkpoint lacks counts as ``defaults[key]`` (a setting added later, at the
        value older runs implicitly used). Any difference is an InputError (a ValueError) naming the keys.
        """
        state = read_json(Path(ckpt) / TRAINER_STATE)
        defaults = defaults or {}
        was = {k: state["trajectory"].get(k, defaults.get(k)) for k in trajectory}
        diff = {k: (was[k], v) for k, v in trajectory.items() if was[k] != v}
        if diff:
            raise InputError(f"{ckpt} was written by a run with different settings or data "
                             f"(checkpoint, now): {diff}. Use another output_dir or delete {Path(ckpt).parent}.")
        return state

    def save(self, step: int, state: Mapping[str, Any], *, model, optimizer, scheduler, tokenizer=None) -> Path:
        """Write checkpoint ``step``; ``state`` goes to trainer_state.json (with ``"step"``). Call on every process.

        ``model`` is the unwrapped model (``accelerator.unwrap_model``).
        """
        acc = self.accelerator
        tmp, dest = self.root / f".tmp-step-{step}", self.root / f"step-{step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        _torch_save(_rng_state(), tmp / f"rng_state_{acc.process_index}.pt")
        weights = optim_state = None
        if fsdp.is_sharded(model):  # gathered whole on the main process: the files are those of DDP
            weights = fsdp.full_state_dict(model)
            optim_state = fsdp.full_optimizer_state(model, getattr(optimizer, "optimizer", optimizer))
        if acc.is_main_process:
            _save_model(tmp, model, tokenizer, weights)
            _torch_save(optimizer.state_dict() if optim_state is None else optim_state, tmp / "optimizer.pt")
            _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_json(tmp / TRAINER_STATE, {"step": step, **state})  # last: marks the checkpoint complete
            _replace_dir(tmp, dest)
            for _, old in self.list()[:-self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return dest

    def load(self, ckpt: Path, *, optimizer, scheduler, model=None) -> None:
        """Restore optimizer, schedule and this process's RNG states (weights: :func:`load_weights`).
        A sharded ``model``'s optimizer takes its shards of the whole state in the file."""
        ckpt = Path(ckpt)
        optim_state = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
        if model is not None and fsdp.is_sharded(model):
            fsdp.load_optimizer_state(model, getattr(optimizer, "optimizer", optimizer), optim_state)
        else:
            optimizer.load_state_dict(optim_state)
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True))
        rank = self.accelerator.process_index
        _set_rng_state(torch.load(ckpt / f"rng_state_{rank}.pt", map_location="cpu", weights_only=True))


# -----------------------------------------------------------------------------
# the final model


def is_complete(output_dir: str | os.PathLike) -> bool:
    """True when ``output_dir/final`` holds a finished run."""
    marker = Path(output_dir) / FINAL_DIR / STATE_FILE
    if not marker.is_file():
        return False
    try:
        return bool(read_json(marker).get("done"))
    except (OSError, ValueError):
        return False


def load_finished(model: torch.nn.Module, output_dir: str | os.PathLike, name: str = "training") -> dict | None:
    """If the run in ``output_dir`` finished, load its final weights into ``model`` and return its
    summary (with ``skipped=True``); else None."""
    out = Path(output_dir)
    if not is_complete(out):
        return None
    summary = read_json(out / FINAL_DIR / STATE_FILE)
    load_weights(model, out / FINAL_DIR)
    logger.info("%s already finished in %s; loaded its weights", name, out / FINAL_DIR)
    return {**summary, "skipped": True}


def write_final(accelerator, model, tokenizer, output_dir: str | os.PathLike, summary: dict,
                started: float | None = None) -> dict:
    """Write ``output_dir/final`` (model, tokenizer, then ``train_state.json`` = ``{"done": True, **summary}``).

    ``model`` is the unwrapped model. With ``started`` (a ``time.perf_counter()`` value),
    ``summary["wall_time_s"]`` is set. Call on every process; returns the summary.
    """
    out = Path(output_dir)
    summary = {"done": True, **summary}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _save_model(tmp, model, tokenizer)
        if started is not None:
            summary["wall_time_s"] = time.perf_counter() - started
        write_json(tmp / STATE_FILE, summary)  # the completion marker: written last
        _replace_dir(tmp, out / FINAL_DIR)
    accelerator.wait_for_everyone()
    if started is not None:
        summary["wall_time_s"] = time.perf_counter() - started
    return summary


# -----------------------------------------------------------------------------
# metrics and time


class MetricsLog:
    """``metrics.jsonl``, cut back to ``start_step`` when opened, then appended to; plus accelerate trackers.

    Trackers are used when the accelerator was made with ``log_with`` (see
    :func:`make_accelerator`); ones the caller already started are logged to and left
    running, ones started here are finished by :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, start_step: int, accelerator, *, project: str = "searchrl",
                 config: Mapping[str, Any] | None = None, tracker_kwargs: Mapping[str, dict] | None = None):
        self.path = Path(path)
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        if self.main:  # rewritten once per start, then appended to line by line
            records: list[dict] = []
            if self.path.exists():
                try:
                    records = [r for r in read_jsonl_log(self.path) if r.get("step", math.inf) <= start_step]
                except ValueError as e:
                    logger.warning("ignoring unreadable %s: %s", self.path, e)
            write_jsonl(self.path, records)
        self._started: list = []
        if accelerator.log_with and not accelerator.trackers:
            flat = {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
                    for k, v in (config or {}).items()}  # tensorboard's hparams take scalars only
            accelerator.init_trackers(project, config=flat, init_kwargs=dict(tracker_kwargs or {}))
            self._started = list(accelerator.trackers)

    def write(self, record: dict) -> None:
        """Append ``record`` (with a ``"step"``) to the file and send its numbers to the trackers."""
        if self.main:
            append_jsonl(self.path, record)
        if self.accelerator.trackers:
            values = {k: v for k, v in record.items()
                      if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(values, step=record["step"])

    def close(self) -> None:
        # not accelerator.end_training(): that also destroys the process group
        for tracker in self._started:
            tracker.finish()
        if self._started:
            self.accelerator.trackers = [t for t in self.accelerator.trackers if t not in self._started]
        self._started = []


class Stopwatch:
    """Seconds of training compute: time inside :meth:`paused` blocks is left out.

    ``base`` is the compute time of earlier (resumed) parts of the run. :meth:`lap` gives the
    compute time since the previous lap (a metrics window).
    """

    def __init__(self, base: float = 0.0):
        self.base = base
        self._start = self._lap = time.perf_counter()  # both shifted forward by every pause
        self._depth, self._paused_at = 0, 0.0

    def _now(self) -> float:
        return self._paused_at if self._depth else time.perf_counter()

    def elapsed(self) -> float:
        return self.base + self._now() - self._start

    def lap(self) -> float:
        now = self._now()
        seconds, self._lap = now - self._lap, now
        return seconds

    @contextlib.contextmanager
    def paused(self):
        if self._depth == 0:
            self._paused_at = time.perf_counter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                shift = time.perf_counter() - self._paused_at
                self._start += shift
                self._lap += shift


# -----------------------------------------------------------------------------
# a run


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
                for m in _transformers_in(model):
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
            self.metrics = MetricsLog(
                self.out / METRICS_FILE, self.start_step, acc, config=_config_dict(self.cfg),
                tracker_kwargs={"wandb": {"name": str(self.out), "dir": str(self.out)}})
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
            for m in _transformers_in(model):
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
