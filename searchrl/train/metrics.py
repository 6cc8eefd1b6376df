"""What a run reports: its metrics log and the time it spent training.

* **Metrics** (:class:`MetricsLog`). ``output_dir/metrics.jsonl`` gets one line per log step,
  appended (one write and fsync each) rather than rewritten, so logging costs one line, not
  the file. On resume, lines after the checkpoint's step are dropped, so the file reads as one
  uninterrupted run; a line cut short by a crash is dropped too
  (:func:`searchrl.data.read_jsonl_log`). The numbers of each line also go to the run's
  :class:`~searchrl.tracking.Tracker` (the command's ``tracking.report_to``: W&B, TensorBoard) and
  to the trackers of an accelerator the caller made with ``log_with=...``. metrics.jsonl stays
  the record: a tracker keeps what it was sent, so after a resume the steps between the
  checkpoint and the crash appear twice there.
* **Time** (:class:`Stopwatch`) counts training compute only: writing metrics and
  checkpoints and running the caller's callback are paused out, so tokens/s and the stored
  ``train_time_s`` measure training, across all resumed parts of a run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from searchrl.data import append_jsonl, read_jsonl_log, write_jsonl

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """``metrics.jsonl``, cut back to ``start_step`` when opened, then appended to; plus trackers.

    ``tracker``: the run's :class:`~searchrl.tracking.Tracker` (closed by :meth:`close`). An accelerator
    made with ``log_with=...`` by the caller brings its own accelerate trackers: ones the caller already
    started are logged to and left running, ones started here (``project``, ``config``) are finished by
    :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, start_step: int, accelerator, *, tracker=None,
                 project: str = "searchrl", config: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.tracker = tracker
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
            accelerator.init_trackers(project, config=flat)
            self._started = list(accelerator.trackers)

    def write(self, record: dict) -> None:
        """Append ``record`` (with a ``"step"``) to the file and send its numbers to the trackers."""
        if self.main:
            append_jsonl(self.path, record)
        values = {k: v for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tracker is not None:
            self.tracker.log_metrics(values, step=record["step"])
        if self.accelerator.trackers:
            self.accelerator.log(values, step=record["step"])

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
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
