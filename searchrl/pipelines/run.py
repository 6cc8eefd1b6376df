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
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from ..config import Config, to_dict
from ..rundir import (RunDirError, Stage, flat_defaults, model_fingerprint, record_config, recorded_config,
                      trajectory_settings)
from ..train.config import SFTConfig

logger = logging.getLogger("searchrl")


def run_dir_override(overrides: list[str]) -> str | None:
    """The run directory a ``run_dir=...`` override names (the last one), if any."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")]
    return given[-1] if given else None


def config_for_run_dir(run_dir: str | None, recipes: list, overrides: list[str]) -> Config:
    """The config of a command in run directory ``run_dir`` (``--run-dir`` or a ``run_dir=``
    override): without a recipe, the directory's recorded config (if any) with the overrides
    on top; with a recipe, the recipe (the recorded config is then ignored, and its stages
    are checked against the recipe's settings) with the overrides on top."""
    from ..config import load_config

    run_dir = run_dir or run_dir_override(overrides)
    overrides = [o for o in overrides if not o.startswith("run_dir=")]
    base = recorded_config(run_dir) if run_dir and not recipes else None
    where = f"{run_dir}/config.yaml" if run_dir else "recorded config"
    cfg = load_config(list(recipes), overrides, base=base, base_name=where)
    # the path as typed (OmegaConf would read `007` as 7 and `${x}` as an interpolation)
    return dataclasses.replace(cfg, run_dir=run_dir) if run_dir else cfg


class Run:
    """The run directory of ``cfg`` and what pipelines build from it (see module doc)."""

    def __init__(self, cfg: Config, progress: bool = True):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir)
        self.progress = progress
        self._task = None
        self._workers = None

    # ---- config record and stages
    def open(self, stages: list[Stage] = (), models: list = ()) -> Run:
        """Check the run's data and SFT stages and ``stages`` against the run directory, and the
        ``models`` it will load, then record the config. A refused command records nothing."""
        for name in models:
            self.check_model(name)
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

    def data_defaults(self) -> dict:
        """For stage records made before a data setting existed: the value that reproduces them
        (the task config's ``RECORDED_DEFAULTS``), as :class:`Stage` ``defaults`` under ``data.``."""
        if self.cfg.data_dir:
            return {}
        return {f"data.{k}": v for k, v in getattr(type(self.cfg.task), "RECORDED_DEFAULTS", {}).items()}

    def data_stage(self) -> Stage | None:
        return None if self.cfg.data_dir else Stage(self.data_dir, {"data": self.data_identity()}, name="data",
                                                     defaults=self.data_defaults())

    def ensure_data(self) -> Path:
        """The task's data, prepared once (a stage of the run unless ``data_dir`` points elsewhere).

        Data found prepared without a stage record (made by ``searchrl data``) is compared
        with the settings the task recorded when it prepared it, where the task keeps them.
        """
        stage = self.data_stage()
        if stage is None:
            if not self.task.is_prepared():
                raise FileNotFoundError(f"{self.data_dir}: no prepared data there; make it with "
                                        f"`searchrl data --out {self.data_dir}`")
            return self.data_dir
        if not stage.done:
            if stage.record() is None and self.task.is_prepared():
                recorded = getattr(self.task, "prepared_settings", lambda: None)()
                mine = stage.depends["data"]
                diff = [k for k in mine if recorded is not None and k in recorded and recorded[k] != mine[k]]
                if diff:
                    raise RunDirError(f"{self.data_dir} holds data prepared with other settings: "
                                      + ", ".join(f"task.{k} ({recorded[k]!r} -> {mine[k]!r})" for k in diff))
            stage.begin()
            if not self.task.is_prepared():
                logger.info("preparing %s data in %s", self.cfg.task.name, self.data_dir)
            self.task.prepare(self.data_dir, progress=self.progress)
            stage.finish()
        return self.data_dir

    # ---- models
    def model_identity(self, name: str | os.PathLike) -> str:
        """A model directory's weights fingerprint, or a preset's name."""
        from ..models import is_model_dir, resolve_model_path

        path = resolve_model_path(name)
        return model_fingerprint(path) if is_model_dir(path) else str(name)

    def model_key(self, path: str | os.PathLike) -> str:
        """What samples of model ``path`` depend on: its weights, the dtype it is run in, the backend."""
        return f"{self.model_identity(path)}:{self.cfg.model.dtype}:{self.cfg.engine.backend}"

    def check_model(self, name: str | os.PathLike, preset_ok: bool = True) -> Path | str:
        """Validate a model name early (before data or training): a preset, builtin:NAME or a model dir."""
        from ..data import InputError
        from ..models import PRESETS, check_model_dir, resolve_model_path

        if str(name) in PRESETS:
            if not preset_ok:
                raise InputError(f"{name}: a preset is an untrained model; give a checkpoint directory")
            return str(name)
        path = resolve_model_path(name)
        check_model_dir(path)
        return path

    def load(self, name: str | os.PathLike | None = None):
        """``(model, tokenizer)``: ``name`` or the config's ``model.name``."""
        from ..models import load_model

        return load_model(self.cfg.model, name, task=self.task, seed=self.cfg.seed)

    # ---- where shards are made (searchrl.fanout)
    def resources(self):
        """The run's task, policy generators and value models, loaded on first use (in this process)."""
        from ..fanout import Resources
        from .value import load_value_model

        return Resources(self.task, load_generator=self.policy_generator,
                         load_scorer=lambda path: load_value_model(path, self))

    def workers(self):
        """Where the run's shards are made: this process (``engine.workers=0``) or that many Ray
        actors (each builds its own :meth:`resources` from this config); made once per run."""
        if self._workers is None:
            from ..fanout import LocalWorkers, RayWorkers

            e = self.cfg.engine
            if e.workers:
                cfg = dataclasses.replace(self.cfg, run_dir=os.path.abspath(self.cfg.run_dir),
                                          data_dir=os.path.abspath(self.cfg.data_dir) if self.cfg.data_dir else "")
                self._workers = RayWorkers(functools.partial(worker_resources, cfg), e.workers,
                                           address=e.ray_address, cpus=e.cpus_per_worker, gpus=e.gpus_per_worker)
            else:
                self._workers = LocalWorkers(self.resources())
        return self._workers

    def tokenizer(self, name: str | os.PathLike | None = None):
        """The tokenizer of ``name`` (or ``model.name``), without its weights."""
        from ..models.policy import load_tokenizer

        return load_tokenizer(self.cfg.model, name, task=self.task)

    def generator(self, model, tokenizer, batch_size: int):
        from ..engine.factory import make_generator

        return make_generator(self.cfg.engine, model, tokenizer, batch_size)

    # ---- the SFT base model
    @property
    def sft_dir(self) -> Path:
        return self.dir / "sft"

    def sft_stage(self) -> Stage:
        from ..models import PRESETS

        c = self.cfg
        model = {"name": self.model_identity(c.model.name) if c.model.name else "",
                 "max_seq_len": c.model.max_seq_len, "dtype": c.model.dtype}
        if c.model.name in PRESETS and hasattr(self.task, "tokenizer"):
            # a model created from scratch takes the task's vocabulary: it is part of what SFT makes
            vocab = sorted(self.task.tokenizer().get_vocab().items())
            model["vocabulary"] = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
        return Stage(self.sft_dir, {"data": self.data_identity(), "model": model, "seed": c.seed,
                                    "sft": trajectory_settings(c.sft)}, name="sft",
                     defaults={**flat_defaults("sft", SFTConfig(output_dir="")), **self.data_defaults()})

    def base_model(self) -> Path:
        """The run's base policy: ``base_model`` when set, else the run's own SFT model."""
        from ..models import resolve_model_path

        return resolve_model_path(self.cfg.base_model) if self.cfg.base_model else self.sft_dir / "final"

    def policy_generator(self, path: str | os.PathLike, batch_size: int):
        """A generator sampling from the checkpoint in ``path``."""
        return self.generator(*self.load(path), batch_size)

    def evaluate(self, path: str | os.PathLike, out_dir: str | os.PathLike, eval_cfg=None) -> dict:
        """Greedy and sampled evaluation of the policy in ``path`` (see :func:`searchrl.eval.evaluate`),
        with the run's ``eval`` settings or ``eval_cfg``."""
        from ..eval.evaluate import evaluate

        eval_cfg = eval_cfg or self.cfg.eval
        return evaluate(self.workers(), self.task, eval_cfg, out_dir, model_id=self.model_key(path),
                        progress=self.progress, policy=path)


def worker_resources(cfg: Config):
    """A Ray worker's resources: those of a :class:`Run` of ``cfg`` built where the worker runs."""
    return Run(cfg, progress=False).resources()


__all__ = ["Run", "RunDirError", "config_for_run_dir", "run_dir_override", "logger"]
