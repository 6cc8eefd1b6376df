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
from ..data import atomic_write
from ..rundir import (CONFIG_FILE, RunDirError, Stage, check_run_dir, flat_defaults, model_fingerprint, record_config,
                      recorded_config, trajectory_settings)
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
        self._opened = False
        self._previous_config: bytes | None = None  # config.yaml's bytes before open() recorded this one

    # ---- config record and stages
    def open(self, stages: list[Stage] = (), models: list = (), value_models: dict | None = None,
             samples: bool = False, policy: str | os.PathLike | None = None) -> Run:
        """Check the settings (:meth:`check_settings`), the run directory, the run's data and SFT stages
        and ``stages`` against it, the ``models`` it will load or train from, the policy it samples
        (``samples``: ``policy``, default the run's base policy; :meth:`policy_path`) and the
        ``value_models`` (setting -> directory), then record the config. A refused command records
        nothing; :meth:`restore_config` undoes the record of a command that fails later."""
        from ..data import InputError

        self.check_settings()  # first: a missing package or an impossible setting says so before any model
        from .. import tracking

        tracking.activate(self.cfg.tracking, self.dir)  # this command's trackers (a missing package: refused here)
        from ..models.hub import HubError

        if samples:
            try:
                self.policy_path(policy)
            except HubError as e:  # the option or setting that named it, then the one line of what to do
                raise HubError(f"{'--model ' if policy else 'base_model='}{e}") from None
        check_run_dir(self.dir)
        for name in models:
            try:
                self.check_model(name)
            except HubError as e:  # the setting's name, then the one line of what to do
                key = "model.name" if str(name) == self.cfg.model.name else "base_model"
                raise HubError(f"{key}={e}") from None
        for key, name in (value_models or {}).items():
            try:  # a search's scorer may be an off-the-shelf verifier; other settings take our value models only
                self.check_model(name, preset_ok=False, kind="scorer" if key.startswith("search.") else "value")
            except (InputError, FileNotFoundError) as e:
                raise InputError(f"{key}: {e}") from None
        for st in [self.data_stage(), self.sft_stage(), *stages]:
            if st is not None:
                st.check()
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / CONFIG_FILE
        self._previous_config = config_file.read_bytes() if config_file.exists() else None
        record_config(self.dir, to_dict(self.cfg))
        self._opened = True
        return self

    def restore_config(self) -> None:
        """Put back the config the run directory recorded before :meth:`open` (or none), so that a command
        that failed leaves nothing a later command without ``--config`` would inherit."""
        if not self._opened:
            return
        config_file = self.dir / CONFIG_FILE
        if self._previous_config is None:
            config_file.unlink(missing_ok=True)
        else:
            with atomic_write(config_file, "wb") as f:
                f.write(self._previous_config)

    def check_settings(self) -> None:
        """What the config alone cannot check (each field checks its own range when the config is
        loaded): that the task can do what the settings ask, that the packages the settings need are
        installed, and that an external ``data_dir`` holds prepared data. One line each, naming the key."""
        import importlib.util

        from ..data import InputError
        from ..tasks import task_class

        c = self.cfg
        if c.engine.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise InputError("engine.backend = 'vllm': vLLM is not installed (pip install 'searchrl[vllm]', on a "
                             "GPU machine); or use engine.backend=searchrl | hf")
        if c.engine.workers and importlib.util.find_spec("ray") is None:
            raise InputError(f"engine.workers = {c.engine.workers}: Ray is not installed (pip install "
                             f"'searchrl[ray]'); or use engine.workers=0 (this process)")
        if not hasattr(task_class(c.task.name), "feedback"):
            for key in ("eval.turns", "selftrain.turns"):
                section, name = key.split(".")
                turns = getattr(getattr(c, section), name)
                if turns > 1:
                    raise InputError(f"{key} = {turns}: task {c.task.name!r} gives no feedback between turns, "
                                     f"so only {key}=1 is possible")
        if c.data_dir and not self.task.is_prepared():
            raise InputError(f"data_dir = {c.data_dir!r}: no prepared {c.task.name} data there; make it with "
                             f"`searchrl data --out {c.data_dir}` (with the same task settings)")

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

    def scoring_identity(self) -> dict:
        """The task's settings that change its prompts or grades but not its problems (the task config's
        ``SCORING``, e.g. the code task's reward shaping and sandbox limits): what every stage and shard of
        graded samples depends on, besides the problems."""
        return {k: getattr(self.cfg.task, k) for k in getattr(type(self.cfg.task), "SCORING", ())}

    def scoring_defaults(self) -> dict:
        """The task's ``SCORING`` settings at their defaults (what records made before they were keyed used,
        unless the user set them; an older record with another value is refused, never trusted)."""
        default = type(self.cfg.task)()
        return {k: getattr(default, k) for k in getattr(type(self.cfg.task), "SCORING", ())}

    def graded_depends(self) -> dict:
        """What a stage that samples and grades depends on besides its own settings: the problems, the task's
        scoring settings, and the dtype and backend the policy is sampled with."""
        return {"data": self.data_identity(), "scoring": self.scoring_identity(), "model_dtype": self.cfg.model.dtype,
                "engine": self.cfg.engine.backend}

    def graded_defaults(self) -> dict:
        """:meth:`graded_depends`' keys at the values that reproduce stage records made before they existed."""
        return {**self.data_defaults(), **{f"scoring.{k}": v for k, v in self.scoring_defaults().items()}}

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
        """A model directory's weights fingerprint, a Hub model's ``org/name@<commit>`` (given by name or by its
        snapshot directory in the Hub cache: results are keyed by the revision, :mod:`searchrl.models.hub`), or
        a preset's name."""
        from ..models import is_model_dir, resolve_model_path
        from ..models.hub import hub_snapshot_identity

        path = resolve_model_path(name)
        hub = hub_snapshot_identity(path)
        if hub is not None:
            return hub
        return model_fingerprint(path) if is_model_dir(path) else str(name)

    def scorer_identity(self, name: str | os.PathLike) -> str:
        """What a search's scores depend on: the scorer's :meth:`model_identity`, and for an off-the-shelf
        verifier the ``search.verifier`` settings that read it (our value models ignore them, so their keys
        stay what they were)."""
        import json as _json

        from ..models import resolve_model_path
        from ..models.policy import model_dir_kind
        from ..rundir import shard_key

        ident = self.model_identity(name)
        path = resolve_model_path(name)
        try:
            kind = model_dir_kind(_json.loads((path / "config.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return ident
        if kind == "value":
            return ident
        return f"{ident}:verifier-{shard_key(**dataclasses.asdict(self.cfg.search.verifier))}"

    def model_key(self, path: str | os.PathLike) -> str:
        """What graded samples of model ``path`` depend on: its weights, the dtype it is run in, the backend,
        and the task's scoring settings where they differ from their defaults (so keys of samples made at the
        defaults stay what they were before those settings were keyed)."""
        from ..rundir import shard_key

        defaults = self.scoring_defaults()
        changed = {k: v for k, v in self.scoring_identity().items() if v != defaults[k]}
        scoring = f":scoring-{shard_key(**changed)}" if changed else ""
        return f"{self.model_identity(path)}:{self.cfg.model.dtype}:{self.cfg.engine.backend}{scoring}"

    def check_model(self, name: str | os.PathLike, preset_ok: bool = True, kind: str = "policy") -> Path | str:
        """Validate a model name early (before data or training): a preset, builtin:NAME, a Hub name or a model
        dir of ``kind`` (``policy``, ``value``, or ``scorer``: a value model or an off-the-shelf verifier, and a
        causal LM too when ``search.verifier.causal_lm`` reads it as a PRM; a value model where a policy is
        expected is refused)."""
        from ..data import InputError
        from ..models import PRESETS, check_model_dir, resolve_model_path
        from ..models.policy import SCORER_KINDS

        if str(name) in PRESETS:
            if not preset_ok:
                raise InputError(f"{name}: a preset is an untrained model; give a checkpoint directory")
            return str(name)
        path = resolve_model_path(name)
        if kind == "scorer" and self.cfg.search.verifier.causal_lm:
            check_model_dir(name, kind=(*SCORER_KINDS, "policy"))
        else:
            check_model_dir(name, kind=kind)  # by name: a Hub model's errors name it, not its snapshot
        return path

    def load(self, name: str | os.PathLike | None = None):
        """``(model, tokenizer)``: ``name`` or the config's ``model.name``."""
        from ..models import load_model

        return load_model(self.cfg.model, name, task=self.task, seed=self.cfg.seed)

    def short(self, path: str | os.PathLike) -> str:
        """A model path as a plot title shows it: relative inside the run directory, else its last two parts."""
        from ..rundir import rel

        r = rel(self.dir, path)
        return r if not Path(r).is_absolute() else "/".join(Path(r).parts[-2:])

    def policy_path(self, model_dir: str | os.PathLike | None = None) -> Path:
        """The checkpoint a command samples from: ``--model``, else the run's base policy (validated)."""
        return Path(self.check_model(model_dir or self.base_model(), preset_ok=False))

    def load_value(self, path: str | os.PathLike):
        """The scorer in ``path`` (a directory or a Hub name), in eval mode, on the run's device and dtype: a
        trained value model, or an off-the-shelf verifier read as ``search.verifier`` says
        (:func:`searchrl.models.verifiers.load_scorer`), which decodes the searches' ids with the tokenizer of the
        run's policies (``base_model``, else ``model.name``: every policy of a run shares its vocabulary) and
        splits steps at the task's action stop."""
        import torch

        from ..models.policy import resolve_device
        from ..models.verifiers import load_scorer

        return load_scorer(path, tokenizer=lambda: self.tokenizer(self.cfg.base_model or None),
                           step_stop=self.task.action_stop, dtype=getattr(torch, self.cfg.model.dtype),
                           device=resolve_device(self.cfg.model.device),
                           **dataclasses.asdict(self.cfg.search.verifier))

    def selftrain_context(self):
        """What a self-training method gets from this run (:class:`searchrl.selftrain.loop.Context`): its
        task and loaders, what its stages depend on (:meth:`graded_depends`), its workers."""
        from ..selftrain.loop import Context

        return Context(task=self.task, load_model=self.load, make_generator=self.generator, load_value=self.load_value,
                       depends=self.graded_depends(), depends_defaults=self.graded_defaults(),
                       workers=self.workers(), progress=self.progress)

    # ---- where shards are made (searchrl.fanout)
    def resources(self):
        """The run's task, policy generators and value models, loaded on first use (in this process)."""
        from ..fanout import Resources

        return Resources(self.task, load_generator=self.policy_generator, load_scorer=self.load_value)

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


def export_value_model(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``searchrl export-value``: the value model in ``src`` (a directory or a Hub name) written to ``out`` as a
    ``*ForTokenClassification`` directory with its tokenizer
    (:meth:`searchrl.models.value.ValueModel.export_token_classification`)."""
    from ..models.policy import dir_tokenizer, resolve_model_path
    from ..models.value import ValueModel

    path = resolve_model_path(src)
    return ValueModel.from_pretrained(path).export_token_classification(out, tokenizer=dir_tokenizer(path))


def worker_resources(cfg: Config):
    """A Ray worker's resources: those of a :class:`Run` of ``cfg`` built where the worker runs."""
    return Run(cfg, progress=False).resources()


__all__ = ["Run", "RunDirError", "config_for_run_dir", "run_dir_override", "export_value_model", "logger"]
