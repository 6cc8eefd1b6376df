"""Files of a run that survive a kill at any moment: resumable checkpoints and the final model.

* **Checkpoints** (:class:`Checkpointer`). Every ``save_every`` steps
  ``output_dir/checkpoints/step-N/`` is written into ``.tmp-step-N/`` and renamed once
  complete (files fsynced first), so a checkpoint exists completely or not at all; a leftover
  temporary directory is deleted at the next start, and only directories holding
  ``trainer_state.json`` count. One holds the model (``save_pretrained``, loadable on its own,
  with the tokenizer), ``optimizer.pt``, ``scheduler.pt``, one ``rng_state_R.pt`` per process
  (python, numpy, torch, CUDA), and ``trainer_state.json``: the step, the trainer's data
  position, compute time, the config and the trajectory fingerprint. A rerun resumes from the
  newest checkpoint and continues exactly as if never interrupted (bitwise equal weights on
  CPU, tested); one whose trajectory differs (settings, precision, process count, data) is
  refused with the differing keys named (:meth:`Checkpointer.read_state`), rather than
  silently mixing two runs. ``keep_last`` checkpoints are kept. A sharded model's weights and
  optimizer state are gathered whole into the same files (:mod:`searchrl.train.fsdp`).

  Why not accelerate's ``save_state``/``load_state``: (1) its model file is
  ``model.safetensors``, the name ``save_pretrained`` uses, so a checkpoint would hold the
  weights twice or not as a loadable model; (2) it saves every model, optimizer and scheduler
  ever registered with the accelerator, so an accelerator reused across runs (ReST calls SFT
  once per round) would write and expect the objects of earlier runs too; (3) ``load_state``
  catches any error restoring the RNG states and only logs it, which would make a resume
  silently inexact; (4) its file names differ, so runs interrupted before this module existed
  could no longer be resumed. The few lines here keep the layout, load with
  ``weights_only=True`` and fail loudly.
* **Final model** (:func:`write_final`). ``output_dir/final/`` (model + tokenizer) is written
  to ``.final.tmp`` and renamed, with ``train_state.json`` (``{"done": true, ...summary}``)
  written last: :func:`is_complete` is true only for a finished run, and a rerun of a finished
  run loads those weights and returns at once (:func:`load_finished`).

Only the main process writes files, except that every process writes its own RNG state.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchrl.data import InputError, atomic_write, read_json, write_json
from searchrl.train import fsdp

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"  # in final/: completion marker, written last
TRAINER_STATE = "trainer_state.json"  # in checkpoints/step-N/: present = the checkpoint is complete


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
