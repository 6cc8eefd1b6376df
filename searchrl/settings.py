"""Range checks for settings dataclasses, with errors that name the key and its allowed values.

Every settings dataclass (``config.py``, ``train/config.py``, ``search/config.py``, the tasks'
configs) checks its own fields in ``__post_init__`` with :func:`at_least` and :func:`one_of`.
They raise :class:`SettingError`, which carries the field's name so that the config loader
(:func:`searchrl.config.load_config`) can report the full dotted key and the recipe line or
command line that set it, before any command writes anything::

    command line: eval.n_problems = -1: must be >= 0 (0 = all)

A negative count must never act as a Python slice (``problems[:-1]``), nor a zero budget
run: these checks are what stands between a typo and a silent wrong result.

This module imports nothing of searchrl's, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class SettingError(ValueError):
    """A setting outside its allowed values. ``key`` is the field's name in its section."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r}: {allowed}")


def at_least(obj: Any, **bounds: int | float | tuple) -> None:
    """Check ``getattr(obj, name) >= lo`` for each ``name=lo`` (or ``name=(lo, "what lo means")``).

    ``None`` values are skipped (an unset optional setting).
    """
    for name, bound in bounds.items():
        lo, note = bound if isinstance(bound, tuple) else (bound, "")
        value = getattr(obj, name)
        if value is not None and value < lo:
            raise SettingError(name, value, f"must be >= {lo}" + (f" ({note})" if note else ""))


def one_of(obj: Any, name: str, allowed: Iterable[str]) -> None:
    """Check that ``getattr(obj, name)`` is one of ``allowed``."""
    allowed = tuple(allowed)
    value = getattr(obj, name)
    if value not in allowed:
        raise SettingError(name, value, f"must be one of {' | '.join(allowed)}")
