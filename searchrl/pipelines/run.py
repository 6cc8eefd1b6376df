"""A run: one config, one run directory, and the pieces every pipeline builds from them.

:class:`Run` is what the commands and the demo share: the task (from the registry, never
named here), its data (prepared once, as a stage), models (loaded as the config says,
checked before any long work), generators (``engine.backend``), and the stages with what
each depends on. A pipeline declares the stages it will run; :meth:`Run.open` checks all
of them against what the run directory recorded *before* recording the new config, so a
refused command leaves the directory as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..config import Config, to_dict
from ..rundir import (RunDirError, Stage, flat_defaults, model_fingerprint, record_config, recorded_config,
                      trajectory_settings)
from ..train.config import SFTConfig

logger = logging.getLogger("searchrl")

def config_for_run_dir(run_dir: str | None, recipes: list, overrides: list[str], *, fresh: bool = False) -> Config:
    """The config of a command: the run directory's recorded config (when it has one and no
    recipe is given, or ``fresh``), then recipes, then overrides."""
    from ..config import load_config

    overrides = list(overrides)
    base = None
    if run_dir:
        base = None if (recipes or fresh) else recorded_config(run_dir)
        overrides.append(f"run_dir={run_dir}")
    where = f"{run_dir}/config.yaml" if run_dir else "recorded config"
    return load_config(list(recipes), overrides, base=base, base_name=where)


class Run:
    """The run directory of ``cfg`` and what pipelines build from it (see module doc)."""

    def __init__(self, cfg: Config, progress: bool = True):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir)
        self.progress = progress
        self._task = None

    # ---- config record and stages
    def open(self, stages: list[Stage] = ()) -> Run:
        """Check ``stages`` (and the run's own data and SFT stages) against the run directory,
        then record the config."""
        for st in [self.data_stage(), self.sft_stage(), *stages]:
            if st is not None:
                st.check()
        self.dir.mkdir(parents=True, exist_ok=True)
        record_config(self.dir, to_dict(self.cfg))
        return self

    # ---- task and data
    @property
    def data_dir(self) -> Path:
        return Path(self.cfg.data_dir) if self.cfg.data_dir else self.dir / "data"

    @property
    def task(self):
        if self._task is None:
            from ..tasks import make_task

            self._task = make_task(self.cfg.task, self.data_dir)
        return self._task

    def data_identity(self) -> dict:
        """What the run's problems are: the task's data settings, or the external directory."""
        if self.cfg.data_dir:
            return {"data_dir": self.cfg.data_dir}
        skip = getattr(type(self.cfg.task), "NOT_DATA", ("name",))
        return {"task": self.cfg.task.name,
                **{k: v for k, v in dataclasses.asdict(self.cfg.task).items() if k not in skip}}

    def data_stage(self) -> Stage | None:
        return None if self.cfg.data_dir else Stage(self.data_dir, {"data": self.data_identity()}, name="data")

    def ensure_data(self) -> Path:
        """The task's data, prepared once (a stage of the run unless ``data_dir`` points elsewhere)."""
        stage = self.data_stage()
        if stage is None:
            if not self.task.is_prepared():
                raise FileNotFoundError(f"{self.data_dir}: no prepared data there; make it with "
                                        f"`searchrl data --out {self.data_dir}`")
            return self.data_dir
        if not stage.done:
            stage.begin()
            if not self.task.is_prepared():
                logger.info("preparing %s data in %s", self.cfg.task.name, self.data_dir)
            self.task.prepare(self.data_dir, progress=self.progress)
            stage.finish()
        return self.data_dir

    # ---- models
    def model_identity(self, name: str | os.PathLike) -> str:
        from ..models import is_model_dir, resolve_model_path

        path = resolve_model_path(name)
        return model_fingerprint(path) if is_model_dir(path) else str(name)

    def check_model(self, name: str | os.PathLike) -> Path | str:
        """Validate a model name early (before data or training): a preset, builtin:NAME or a model dir."""
        from ..models import PRESETS, check_model_dir, resolve_model_path

        if str(name) in PRESETS:
            return str(name)
        path = resolve_model_path(name)
        check_model_dir(path)
        return path

    def load(self, name: str | os.PathLike | None = None):
        """``(model, tokenizer)``: ``name`` or the config's ``model.name``."""
        from ..models import load_model

        return load_model(self.cfg.model, name, task=self.task, seed=self.cfg.seed)

    def generator(self, model, tokenizer, batch_size: int):
        from ..engine.factory import make_generator

        return make_generator(self.cfg.engine, model, tokenizer, batch_size)

    # ---- the SFT base model
    @property
    def sft_dir(self) -> Path:
        return self.dir / "sft"

    def sft_stage(self) -> Stage:
        c = self.cfg
        model = {"name": self.model_identity(c.model.name) if c.model.name else "",
                 "max_seq_len": c.model.max_seq_len, "dtype": c.model.dtype}
        return Stage(self.sft_dir, {"data": self.data_identity(), "model": model, "seed": c.seed,
                                    "sft": trajectory_settings(c.sft)}, name="sft",
                     defaults=flat_defaults("sft", SFTConfig(output_dir="")))

    def default_model(self) -> Path:
        """The model commands use without ``--model``: the run's SFT model (or its base_model)."""
        from ..models import resolve_model_path

        if self.cfg.base_model and not (self.sft_dir / "final").exists():
            return resolve_model_path(self.cfg.base_model)
        return self.sft_dir / "final"


__all__ = ["Run", "RunDirError", "config_for_run_dir", "logger"]
