"""A name -> function registry: how trainers pick a loss or an advantage estimator by a config string.

Losses (:mod:`searchrl.train.losses`), advantage estimators (:mod:`searchrl.train.advantages`) and
policy losses (:mod:`searchrl.train.policy_losses`) are each one :class:`Registry`: a variant is one
decorated function, a trainer holds no ``if name == ...`` chain, and an unknown name fails at once
with the list of known ones (verl's ``register_adv_est`` / ``register_policy_loss`` style).
"""

from __future__ import annotations

from collections.abc import Callable


class Registry:
    """Functions registered under names; ``kind`` names them in errors (``"loss"``, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: make ``fn`` available as ``get(name)``. A name can be registered once."""

        def deco(fn: Callable) -> Callable:
            if name in self._fns and self._fns[name] is not fn:
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({self._fns[name].__qualname__})")
            self._fns[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable:
        """The function registered as ``name``; an unknown name is a ``KeyError`` listing the known ones."""
        try:
            return self._fns[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._fns)) or '(none)'}") from None

    def names(self) -> list[str]:
        return sorted(self._fns)


__all__ = ["Registry"]
