"""Experiment trackers for every command: W&B and TensorBoard, set once in the ``tracking`` section.

Why one module: a command is several stages (an SFT base, self-training iterations each with its own
trainer, evaluations, a search comparison), and what a researcher wants on a dashboard is all of them,
side by side, grouped by run. So the settings are the command's, not each trainer's:

* ``tracking.report_to``: ``''`` (none), ``'wandb'``, ``'tensorboard'`` or both, comma-separated;
* ``tracking.project``: the W&B project (default ``searchrl``);
* ``tracking.group``: the W&B group every stage of the run joins (default: the run directory's name).

:meth:`searchrl.pipelines.run.Run.open` makes them the process's settings (:func:`activate`, after
checking that the packages are installed, before anything is recorded); a stage that produces numbers
opens its own :class:`Tracker` with :func:`start`, named after its directory inside the run directory
(``sft``, ``rest/iter2/sft``, ``eval``, ``compare-search``): one W&B run per stage (``name`` = that path,
``group`` and ``project`` shared, files under ``<run_dir>/wandb/``; the mode from W&B's own
``WANDB_MODE``, e.g. ``offline``) and one TensorBoard run per stage (event files in
``<run_dir>/tensorboard/<stage>/``, so ``tensorboard --logdir <run_dir>/tensorboard`` shows them all).
What is logged: the trainers' metrics lines (:mod:`searchrl.train.metrics`), evaluation and search
results as tables (W&B ``Table``; TensorBoard text holding a Markdown table), self-training
statistics per iteration (:mod:`searchrl.selftrain.loop`).

The files the library writes (``metrics.jsonl``, ``summary.json``, ``results.json``) stay the record: a
tracker keeps what it was sent, so a resumed command's stage is a new tracker run holding what that
command logged. Only the main process of a launch logs (``RANK`` 0). Importing this module imports
neither torch nor a tracker package (they load when a tracker opens).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import SettingError

TRACKERS = ("tensorboard", "wandb")
#: the Python package each tracker needs (TensorBoard's writer is torch.utils.tensorboard, which imports it)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def tracker_names(report_to: str) -> list[str]:
    """``"tensorboard, wandb"`` -> ``["tensorboard", "wandb"]``; an unknown name is a :class:`SettingError`."""
    names = [n.strip() for n in str(report_to or "").split(",") if n.strip()]
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise SettingError("report_to", report_to, f"unknown tracker(s) {bad}: use '' or a comma-separated subset "
                                                   f"of {' | '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


@dataclass
class TrackingConfig:
    """The ``tracking`` section: which trackers every stage of a command reports to (see the module doc)."""

    report_to: str = field(default="", metadata={
        "help": "experiment trackers of every stage of the command: '' (none), 'wandb', 'tensorboard', or both "
                "comma-separated (pip install wandb / tensorboard); files under <run_dir>/wandb and "
                "<run_dir>/tensorboard; W&B's mode from WANDB_MODE (e.g. offline)"})
    project: str = field(default="searchrl", metadata={"help": "W&B project of the stages' runs"})
    group: str = field(default="", metadata={
        "help": "W&B group every stage of the run joins ('' = the run directory's name)"})

    def __post_init__(self):
        tracker_names(self.report_to)
        if not str(self.project).strip():
            raise SettingError("project", self.project, "must name a W&B project")

    @property
    def names(self) -> list[str]:
        return tracker_names(self.report_to)

    def missing_packages(self) -> list[str]:
        """The packages of the asked-for trackers that are not installed."""
        return [PACKAGES[n] for n in self.names if importlib.util.find_spec(PACKAGES[n]) is None]


# ----------------------------------------------------------------------------- the process's settings


@dataclass(frozen=True)
class _Active:
    cfg: TrackingConfig
    run_dir: Path


_active: _Active | None = None
_open: list[Tracker] = []  # trackers started and not yet closed (closed by deactivate)


def activate(cfg: TrackingConfig | None, run_dir: str | os.PathLike) -> None:
    """Make ``cfg`` the tracking settings of this process's stages, inside ``run_dir`` (``cfg=None`` or no
    trackers: none). A tracker package that is not installed is an :class:`~searchrl.data.InputError` here,
    before any work."""
    global _active
    if cfg is not None and cfg.names:
        missing = cfg.missing_packages()
        if missing:
            from .data import InputError

            raise InputError(f"tracking.report_to = {cfg.report_to!r}: {', '.join(missing)} is not installed "
                             f"(pip install {' '.join(missing)})")
        _active = _Active(cfg, Path(run_dir))
    else:
        _active = None


def deactivate() -> None:
    """No trackers from now on; every tracker still open is closed (its files flushed)."""
    global _active
    _active = None
    while _open:
        _open[-1].close()


@contextlib.contextmanager
def active(cfg: TrackingConfig | None, run_dir: str | os.PathLike) -> Iterator[None]:
    """:func:`activate` for a block (library use: ``with tracking.active(cfg, run_dir): train_sft(...)``),
    then the settings before it; trackers opened inside and left open are closed."""
    global _active
    before, opened = _active, len(_open)
    activate(cfg, run_dir)
    try:
        yield
    finally:
        while len(_open) > opened:
            _open[-1].close()
        _active = before


def project() -> str:
    """The W&B project of the active settings (``searchrl`` when none)."""
    return _active.cfg.project if _active is not None else TrackingConfig.project


def stage_name(stage_dir: str | os.PathLike) -> str:
    """A stage's name: its directory relative to the active run directory (its own name when outside it)."""
    path = Path(stage_dir)
    if _active is not None:
        try:
            rel = Path(os.path.relpath(path.resolve(), _active.run_dir.resolve()))
            if not rel.parts or rel.parts[0] != "..":
                return rel.as_posix() if rel.parts else _active.run_dir.resolve().name
        except ValueError:  # another drive (Windows)
            pass
    return path.name


def _main_process() -> bool:
    return str(os.environ.get("RANK", "0") or "0") == "0"


def start(stage_dir: str | os.PathLike, config: Mapping[str, Any] | None = None, kind: str = "",
          main: bool | None = None) -> Tracker:
    """The tracker of the stage in ``stage_dir`` under the active settings (one that does nothing when there
    are none, or on a process other than the main one: ``main``, default ``RANK`` 0). ``config``: the stage's
    settings (W&B config, a TensorBoard text); ``kind``: W&B's ``job_type`` (train, eval, search, selftrain)."""
    if _active is None or not (_main_process() if main is None else main):
        return Tracker([], "", "", "", Path("."))
    cfg, run_dir = _active.cfg, _active.run_dir
    group = cfg.group or run_dir.resolve().name
    return Tracker(cfg.names, cfg.project, group, stage_name(stage_dir), run_dir, config=config, kind=kind)


def record(stage_dir: str | os.PathLike, *, metrics: Mapping[str, Any] | None = None,
           tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, config: Mapping[str, Any] | None = None,
           kind: str = "") -> None:
    """A finished stage's numbers in one go (evaluation, search): a tracker opened, ``metrics`` (flattened,
    step 0) and ``tables`` logged, closed. Nothing happens without active settings."""
    if _active is None:
        return
    with start(stage_dir, config=config, kind=kind) as tracker:
        if metrics:
            tracker.log_metrics(flat_numbers(metrics), step=0)
        for name, rows in (tables or {}).items():
            tracker.log_table(name, rows)


# ----------------------------------------------------------------------------- values


def flat_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested record under ``/``-joined keys (lists by position; bools, text and None dropped):
    what a tracker can plot."""
    out: dict[str, float] = {}
    items = d.items() if isinstance(d, Mapping) else enumerate(d)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, (int, float)):
            out[key] = v
        elif isinstance(v, (Mapping, list, tuple)):
            out.update(flat_numbers(v, key + "/"))
    return out


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cell(v: Any) -> Any:
    """A table cell: numbers, text, booleans and None as they are, anything else as compact JSON."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return json.dumps(v, default=str, separators=(",", ":"))


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``rows``, in the order they first appear."""
    return list(dict.fromkeys(k for r in rows for k in r))


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as a Markdown table (TensorBoard's text plugin renders it)."""
    cols = columns_of(rows)

    def text(v: Any) -> str:
        v = _cell(v)
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(text(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the tracker


class Tracker:
    """One stage's trackers (see the module doc). Made by :func:`start`; ``names=[]`` is one that does nothing.

    :meth:`log_metrics` sends numbers at a step (W&B ``run.log``; TensorBoard scalars), :meth:`log_table`
    a list of rows (W&B ``Table``; TensorBoard text of a Markdown table), :meth:`close` finishes them. W&B
    runs are made with ``reinit="create_new"`` (wandb >= 0.19.10), so a stage inside another (a self-training
    loop and its trainers) is a run of its own beside it.
    """

    def __init__(self, names: Sequence[str], project: str, group: str, stage: str, run_dir: Path,
                 config: Mapping[str, Any] | None = None, kind: str = ""):
        self.names, self.stage = list(names), stage
        self.wandb_run = self.writer = None
        self._table_steps: dict[str, int] = {}
        if not self.names:
            return
        flat = json.loads(json.dumps(_flat(config or {}), default=str))  # tuples, paths: as JSON has them
        try:
            if "wandb" in self.names:
                import wandb

                wdir = Path(os.environ.get("WANDB_DIR") or run_dir)
                wdir.mkdir(parents=True, exist_ok=True)
                try:
                    self.wandb_run = wandb.init(project=project, group=group, name=stage, dir=str(wdir), config=flat,
                                                job_type=kind or None, reinit="create_new")
                except wandb.errors.UsageError as e:  # e.g. online without an API key
                    from .data import InputError

                    raise InputError(f"tracking.report_to = 'wandb': W&B could not start a run ({e}); log in with "
                                     f"`wandb login`, or set WANDB_MODE=offline") from None
            if "tensorboard" in self.names:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard" / stage))
                if flat:
                    self.writer.add_text("config", markdown([{"setting": k, "value": v} for k, v in flat.items()]))
        except BaseException:
            self.close()
            raise
        _open.append(self)

    @property
    def enabled(self) -> bool:
        return self.wandb_run is not None or self.writer is not None

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """The numbers of ``metrics`` (ints and floats; anything else is left out) at ``step``."""
        if not self.enabled:
            return
        values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not values:
            return
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=int(step))
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, global_step=int(step))

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """``rows`` (dicts; columns = every key, in first-seen order) as the table ``name``."""
        if not self.enabled or not rows:
            return
        cols = columns_of(rows)
        if self.wandb_run is not None:
            import wandb

            table = wandb.Table(columns=cols, data=[[_cell(r.get(c)) for c in cols] for r in rows])
            self.wandb_run.log({name: table})
        if self.writer is not None:
            step = self._table_steps[name] = self._table_steps.get(name, -1) + 1
            self.writer.add_text(name, markdown(rows), global_step=step)

    def close(self) -> None:
        """Finish the W&B run and flush and close the TensorBoard writer (again: nothing)."""
        run, writer, self.wandb_run, self.writer = self.wandb_run, self.writer, None, None
        if self in _open:
            _open.remove(self)
        try:
            if writer is not None:
                writer.close()
        finally:
            if run is not None:
                run.finish()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *_) -> None:
        self.close()


__all__ = ["TRACKERS", "TrackingConfig", "Tracker", "tracker_names", "activate", "deactivate", "active", "start",
           "record", "stage_name", "project", "flat_numbers", "markdown"]
