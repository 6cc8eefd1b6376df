"""The search methods by name: what ``searchrl search`` and ``searchrl compare-search`` can run.

Why a registry
--------------
A method is known in many places: the comparison runs it and keys its results, the config checks
``search.methods``, ``searchrl search --help`` lists it, the value models it scores with are made
before it runs, the reports label it. Each of them reads one :class:`SearchMethod` here instead of
holding its own list or ``if method == ...`` chain (verl's small registries), so a new search is one
file that declares it.

Two kinds of method
-------------------
* :class:`PoolMethod` picks one response among a problem's samples from the comparison's shared
  **pool** (``search.pool_samples`` per problem; at budget B a problem reads its first samples
  whose tokens add up to at most B, at least one): ``choose(task, problem, samples, scores)``
  returns the index of the chosen sample, ``scores`` being the ``needs`` model's value of each
  sample (at its last token, or ``score="min"``: the lowest value over its steps).
* :class:`TreeMethod` runs a search on the policy: ``search(generator, scorer, task, problems,
  settings, *, budget_tokens, indices) -> [SearchResult]``, one result per problem (the signature of
  :func:`.vm_mcts.vm_mcts`, :func:`.mcts_star.mcts_star`, :func:`.beam.beam_search`; ``scorer`` is
  None for a method that needs no model). Its settings are the ``section`` of the search config
  (``search.vm_mcts`` ...) with the response limit every method shares (``search.max_tokens``);
  ``budget_rule(settings, budget, mean_response_tokens)`` turns the token budget B into the
  settings of one run (:func:`same_settings` when the search itself stops a problem once it
  generated B tokens; ``mean_response_tokens()`` is the pool's mean response length, for rules
  that size a search in whole responses, as VGS does). ``tree(result, tokenizer)`` (optional) turns
  one result into the nodes of its search tree (:func:`.common.tree_node`) from what the search left
  in ``result.meta``; the comparison keeps the first ``search.keep_trees`` problems' trees.

``needs`` names the model a method scores with, the search config's field that holds it: ``value``
(scalar value model), ``orm`` (outcome reward model), ``prm`` (process reward model trained on
Math-Shepherd step labels), ``classifier`` (VGS 3-class model), ``mcts_star_value`` (the value
model trained on MCTS* targets), or None. Each is made when left unset; none stands in for another.

Adding a search
---------------
1. In its own file under ``searchrl/search/``, write the method and declare it at module level:
   ``SEARCH_METHODS = (TreeMethod(name=..., label=..., needs=..., search=..., section=...),)``.
   The file imports no torch at module level (``searchrl --help`` lists the methods): import the
   engine inside the functions that sample, as :mod:`.vm_mcts` does. A method with settings of
   its own also adds its settings dataclass to :mod:`.config` and a field of that name to
   :class:`searchrl.config.SearchConfig`; one that reuses a section (ORM-MCTS reads
   ``search.vm_mcts``) adds nothing there.
2. Register it: add the module's name to :data:`MODULES` below. (Code outside the package, an
   experiment's script or a test, calls :func:`register` itself before the config is read, as
   ``tests/test_search_registry.py`` does.)

Nothing else changes: the comparison, the config check, the CLI help and the tables read the
registry. The built-in methods: :mod:`.bon` (best-of-N, votes and PRM-min on the pool),
:mod:`.vm_mcts` (VM-MCTS and ORM-MCTS, ReST-RL Algorithm 3), :mod:`.mcts_star` (MCTS*,
ReST-MCTS*), :mod:`.beam` (VGS block beam search and DVTS).

The registry is filled when first asked (:func:`methods`, :func:`get`, ...), by importing
:data:`MODULES` in order, so the methods are listed in that order whatever was imported before, and
the method files can import :mod:`.config` (which imports :mod:`.bon`) without a cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

#: the modules under searchrl.search that declare methods (``SEARCH_METHODS``), in listing order
MODULES = ("bon", "vm_mcts", "mcts_star", "beam")

#: what ``needs`` may name: a field of the search config holding a value model
NEEDS = ("value", "orm", "prm", "classifier", "mcts_star_value")


def same_settings(settings: Any, budget: int, mean_response_tokens: Callable[[], float]) -> Any:
    """The budget rule of a search that stops each problem once it spent the budget itself."""
    return settings


@dataclass(frozen=True)
class SearchMethod:
    """What every method declares: its name, its label in tables, the model it scores with."""

    kind: ClassVar[str] = ""
    name: str
    label: str
    needs: str | None = None  # "value" | "orm" | "prm" | "classifier" | "mcts_star_value" | None (module docs)
    aliases: tuple[str, ...] = ()  # other names accepted for it (``bon`` = ``bon-value``)
    oracle: bool = False  # it reads the task's verifier: an upper bound no real search has

    def __post_init__(self):
        if self.needs is not None and self.needs not in NEEDS:
            raise ValueError(f"search method {self.name!r}: needs must be one of {' | '.join(NEEDS)} or None, "
                             f"got {self.needs!r}")


@dataclass(frozen=True)
class PoolMethod(SearchMethod):
    """A choice among the shared pool's samples (see module docs). A sample is a dict with
    ``response`` (text), ``response_ids``, ``prompt_ids``, ``reward`` and ``correct``."""

    kind: ClassVar[str] = "pool"
    choose: Callable[[Any, dict, list[dict], list[float] | None], int | None] | None = None
    score: str = "last"  # how the ``needs`` model scores a sample: "last" (token) | "min" (over its steps)

    def __post_init__(self):
        super().__post_init__()
        if self.choose is None:
            raise ValueError(f"pool method {self.name!r}: needs a choose function")
        if self.score not in ("last", "min"):
            raise ValueError(f"pool method {self.name!r}: score must be last | min, got {self.score!r}")


@dataclass(frozen=True)
class TreeMethod(SearchMethod):
    """A search run on every problem (see module docs); resumable shards of ``search.shard_problems``."""

    kind: ClassVar[str] = "tree"
    search: Callable[..., list] | None = None
    section: str = ""  # the search config's field holding its settings ("vm_mcts" for search.vm_mcts)
    budget_rule: Callable[[Any, int, Callable[[], float]], Any] = same_settings
    #: ``tree(result, tokenizer)``: what the search did on one problem, as node dicts
    #: (:func:`.common.tree_node`), read off what it left in ``result.meta``; None: it keeps no tree
    tree: Callable[[Any, Any], list[dict]] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.search is None or not self.section:
            raise ValueError(f"tree method {self.name!r}: needs a search function and a settings section")


_methods: dict[str, SearchMethod] = {}
_aliases: dict[str, str] = {}
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # before the imports: register() asks for the registry too
    try:
        for module in MODULES:
            for method in importlib.import_module(f"{__package__}.{module}").SEARCH_METHODS:
                register(method)
    except BaseException:
        _loaded = False
        _methods.clear()
        _aliases.clear()
        raise


def register(method: SearchMethod) -> SearchMethod:
    """Make ``method`` known by its name and aliases; a name can be taken once."""
    _load()
    for name in (method.name, *method.aliases):
        if (name in _methods or name in _aliases) and _methods.get(resolve(name)) is not method:
            raise ValueError(f"a search method named {name!r} is already registered")
    _methods[method.name] = method
    _aliases.update({a: method.name for a in method.aliases})
    return method


def unregister(name: str) -> None:
    """Forget the method ``name`` and its aliases (tests register methods of their own)."""
    method = _methods.pop(name)
    for a in method.aliases:
        _aliases.pop(a, None)


def resolve(name: str) -> str:
    """The method's own name for ``name`` (an alias or the name itself); unknown names unchanged."""
    _load()
    return _aliases.get(name, name)


def known(name: str) -> bool:
    """Whether ``name`` names a method, directly or as an alias."""
    return resolve(name) in _methods


def get(name: str) -> SearchMethod:
    """The method ``name`` (or an alias) names; an unknown name is a ``KeyError`` listing the known ones."""
    method = _methods.get(resolve(name))
    if method is None:
        raise KeyError(f"unknown search method {name!r}; known: {' | '.join(names())}")
    return method


def names() -> list[str]:
    """Every method's name, in listing order (:data:`MODULES`, then declaration order)."""
    _load()
    return list(_methods)


def methods() -> list[SearchMethod]:
    """Every method, in listing order."""
    _load()
    return list(_methods.values())


def aliases() -> dict[str, str]:
    """Alias -> the method's name (``{"bon": "bon-value"}``)."""
    _load()
    return dict(_aliases)


def listing() -> str:
    """Every method by name for a help text, aliases in parentheses: ``bon-oracle | bon-value (= bon) | ...``."""
    return " | ".join(m.name + "".join(f" (= {a})" for a in m.aliases) for m in methods())


def label(name: str) -> str:
    """The method's label in tables; ``name`` itself for a name no method has (a row of an older run)."""
    method = _methods.get(resolve(name))
    return method.label if method is not None else name


__all__ = ["MODULES", "NEEDS", "SearchMethod", "PoolMethod", "TreeMethod", "same_settings", "register", "unregister",
           "resolve", "known", "get", "names", "methods", "aliases", "listing", "label"]
