"""What every search shares: states as token ids, line-level actions, value scoring, token accounting, results.

Why one module
--------------
Best-of-N, VM-MCTS (ReST-RL), MCTS* (ReST-MCTS*) and VGS block beam search differ in how
they pick what to expand and how they credit values, and in nothing else. They all

* hold a **state** as the response token ids so far (never re-tokenised text: the ids are
  exactly what the policy produced, and what the prefix cache of
  :class:`~searchrl.engine.Sampler` keys on), after the problem's **prompt ids** (the task's
  prompt in the chat template, :func:`problem_prompts`);
* cut generated tokens into **actions** at the task's ``action_stop`` (a line for every task
  so far): an action ends with the first token whose text contains the stop string, so a BPE
  token holding ``"\\n"`` in its middle still ends it (the Guided-ReST code's rule,
  :class:`ActionSplitter`); a state is **finished** when its last token is EOS or it reached
  the length limit;
* ask a :class:`Scorer` for values (a value model, an ORM, or a scripted one in tests);
* count, **per problem**, every token generated and every token a value model read
  (:class:`TokenCounter`), and hold each problem to its **budget** of generated tokens (see
  below), so searches are compared at budgets that actually hold;
* run **many problems at once**: each search advances all its trees in lockstep and sends
  one batched :meth:`Generator.generate` per step for all nodes of all problems
  (:func:`generate_counted`), and one :meth:`Scorer.score` call *per problem* per step for
  all of that problem's nodes (:func:`score_counted`; see below why not one for all);
* return one :class:`SearchResult` per problem: every complete response it produced
  (:class:`Candidate`, with its value) and the final response, and leave in its ``meta`` what its
  method's ``tree`` function (:mod:`.registry`) turns into the nodes of its search tree
  (:func:`tree_node`; the comparison keeps them for the first ``search.keep_trees`` problems). Reading
  the tree afterwards changes nothing the search sampled or chose.

Budgets hold
------------
A search given ``budget_tokens`` B keeps it in :class:`TokenCounter` (``budget``), and
:func:`generate_counted` never sends a request the problem cannot pay for: the tokens a problem
has left are shared equally among the samples it asks for in one call, each sample's
``max_tokens`` cut to its share (``left // samples``); when the share is below one token, the
problem's requests are not sent at all (their outputs are empty). A sample cut by its share ends
with ``finish_reason == "budget"``: it is what the policy would have written with that
``max_tokens`` (the sampler's per-sample seeds make a shorter limit give a prefix of the longer
sample), not a finished response, so searches never take it for one (each search's module says
what it does with it). A problem's generated tokens therefore never exceed B, whatever the
search does; a search stops a problem when it cannot pay one token per sample of its next
step (:meth:`TokenCounter.affords`).

Results do not depend on batching
---------------------------------
A problem's result is a function of the config, the seed, the problem and its index in the
split, not of which problems share its batch or shard (up to the generator's arithmetic: the
last point):

* sampling seeds are derived from names (:func:`request_seed`: run seed, problem index, node,
  iteration), never from a shared stream, so batching and budgets do not change samples;
* a value model sorts the sequences of one call by length, chunks them and pads each chunk to
  its longest, so a state's value changes in its last bits with the other sequences of the
  call (by up to 4e-7 in float32 on CPU, measured with
  :class:`~searchrl.models.value.ValueModel`). That is enough to decide a tie (two states of
  equal value, or one state met twice) one way in one batch and the other way in another,
  and a search then goes elsewhere. So :func:`score_counted` calls the scorer once per problem,
  with that problem's states only, in the problem's own order: the call, and so every value,
  is the same whatever else is being searched. Ties are then broken by each search's fixed
  order (the candidate, child or leaf that came first);
* what remains is the generator's own batching: a sampler's logits also move slightly with
  the rows decoded alongside (the shipped Countdown policy's logprobs by up to 1e-5 on CPU;
  :mod:`searchrl.engine.sampler`, "Per-sample randomness"), which can change a token only at
  a near-tie of its uniform with a cumulative probability, or of two logits when greedy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..engine.types import CompletionOutput, RequestOutput, SamplingParams  # torch-free
from ..actions import ActionSplitter, eos_ids  # noqa: F401 (part of this module's interface)
from ..seeding import stable_seed


@runtime_checkable
class Scorer(Protocol):
    """Values of states: ``score(prompt_ids, state_ids)[i]`` is V(prompt_i + state_i) in [0, 1].

    :class:`searchrl.models.value.ValueModel` is one (the value at the state's last token).
    """

    def score(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]]) -> list[float]: ...


def problem_prompts(tokenizer, task, problems: Sequence[dict]) -> list[list[int]]:
    """The prompt ids each problem's states extend (the task's prompt in the chat template)."""
    # imported here, not above: the rollout layer imports torch (see module docs)
    from ..rollout import chat_prompt

    return [list(tokenizer(chat_prompt(tokenizer, task, p), add_special_tokens=False)["input_ids"])
            for p in problems]


def request_seed(seed: int, *parts: object) -> int:
    """The sampling seed of one request, named by what identifies it (see module docs)."""
    return stable_seed("search", seed, *parts)


@dataclass
class TokenCounter:
    """Per-problem counts of generated tokens and of tokens read by a value model, and the budget of
    generated tokens each problem may spend (None: no limit; see module docs, "Budgets hold")."""

    generated: list[int]
    value: list[int]
    #: per problem, the prefix caches of the value models that scored it (:func:`score_by_owner`)
    caches: dict = field(default_factory=dict, repr=False, compare=False)
    budget: int | None = None

    @classmethod
    def zeros(cls, n: int, budget: int | None = None) -> TokenCounter:
        if budget is not None and budget < 0:
            raise ValueError(f"budget_tokens must be >= 0, got {budget}")
        return cls([0] * n, [0] * n, budget=budget)

    def left(self, problem: int) -> int | None:
        """Generated tokens ``problem`` may still spend (None without a budget)."""
        return None if self.budget is None else max(self.budget - self.generated[problem], 0)

    def affords(self, problem: int, samples: int = 1) -> bool:
        """True when ``problem`` can pay at least one token for each of ``samples`` samples."""
        left = self.left(problem)
        return left is None or left >= samples

    def fit(self, params: Sequence[SamplingParams], owners: Sequence[int]) -> list[SamplingParams | None]:
        """Each request's params with ``max_tokens`` cut to its samples' equal share of what its owner
        has left (None: less than one token each; see module docs)."""
        if self.budget is None:
            return list(params)
        samples: dict[int, int] = {}
        for p, owner in zip(params, owners):
            samples[owner] = samples.get(owner, 0) + p.n
        out: list[SamplingParams | None] = []
        for p, owner in zip(params, owners):
            share = self.left(owner) // samples[owner]
            if share < 1:
                out.append(None)
            elif share < p.max_tokens:
                out.append(dataclasses.replace(p, max_tokens=share))
            else:
                out.append(p)
        return out


#: the finish reason of a sample cut by its problem's budget (see module docs, "Budgets hold")
BUDGET = "budget"


def generate_counted(generator, prompts: Sequence[Sequence[int]], params, owners: Sequence[int],
                     counter: TokenCounter) -> list:
    """``generator.generate(prompts, params)``, adding each output's sampled tokens to its owner problem,
    within each owner's budget (:meth:`TokenCounter.fit`): a request its owner cannot pay for is not
    sent (its outputs are ``n`` empty samples), a sample cut by the budget ends with
    ``finish_reason`` :data:`BUDGET`."""
    if not prompts:
        return []
    asked = list(params) if isinstance(params, list) else [params] * len(prompts)
    if len(asked) != len(prompts) or len(owners) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts, {len(asked)} params, {len(owners)} owners")
    fitted = counter.fit(asked, owners)
    send = [i for i, p in enumerate(fitted) if p is not None]
    got = iter(generator.generate([list(prompts[i]) for i in send], [fitted[i] for i in send]) if send else [])
    outs = []
    for i, (p, f) in enumerate(zip(asked, fitted)):
        if f is None:
            outs.append(RequestOutput(request_id=i, prompt="", prompt_token_ids=list(prompts[i]),
                                      outputs=[CompletionOutput(j, "", [], 0.0, [], BUDGET) for j in range(p.n)]))
            continue
        o = next(got)
        if f.max_tokens < p.max_tokens:
            for c in o.outputs:
                if c.finish_reason == "length" and len(c.token_ids) >= f.max_tokens:
                    c.finish_reason = BUDGET
        outs.append(o)
    for owner, o in zip(owners, outs):
        counter.generated[owner] += sum(len(c.token_ids) for c in o.outputs)
    return outs


class _EngineValueScorer:
    """A :class:`~searchrl.models.value.ValueModel`'s ``score`` with its backbone on the static engine
    and a prefix cache (:class:`searchrl.engine.hidden.HiddenStates`): a state costs the tokens not
    scored before, not its whole length. Values equal the model's own ``score`` up to float rounding."""

    def __init__(self, model):
        import weakref

        from ..engine.hidden import HiddenStates

        self._model = weakref.ref(model)  # the cache entry must not keep the model alive
        self.hidden = HiddenStates(model.model)

    def score(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]],
              cache=None) -> list[float]:
        """As ``ValueModel.score``; ``cache`` (from ``self.hidden.new_cache()``) serves and keeps K/V."""
        import torch

        model = self._model()
        seqs = [list(p) + list(s) for p, s in zip(prompt_ids, state_ids)]
        if not seqs or not self.hidden.supported(model.model, max(map(len, seqs))):
            return model.score(prompt_ids, state_ids)
        head = model.value_head
        was_training = head.training
        head.eval()  # no dropout, as ValueModel.score
        try:
            with torch.no_grad():
                out = head(self.hidden.last(seqs, cache))
                return model.to_values(out.squeeze(-1) if model.classes == 1 else out).tolist()
        finally:
            head.train(was_training)


_ENGINE_SCORERS: Any = None  # weakref.WeakKeyDictionary: value model -> its _EngineValueScorer


def cached_scorer(scorer):
    """``scorer`` itself, or for a value model whose backbone the static engine runs (Llama, Qwen2,
    Mistral), one :class:`_EngineValueScorer` per model (kept while the model lives), so its prefix
    cache serves every later call. ``SEARCHRL_ENGINE_SCORER=0`` keeps the model's own ``score``."""
    import os
    import weakref

    global _ENGINE_SCORERS
    if os.environ.get("SEARCHRL_ENGINE_SCORER", "1") == "0":
        return scorer
    backbone = getattr(scorer, "model", None)
    if backbone is None or not all(hasattr(scorer, a) for a in ("value_head", "to_values", "classes")):
        return scorer
    from ..engine.hidden import HiddenStates

    if not HiddenStates.supported(backbone):
        return scorer
    if _ENGINE_SCORERS is None:
        _ENGINE_SCORERS = weakref.WeakKeyDictionary()
    fast = _ENGINE_SCORERS.get(scorer)
    if fast is None:
        fast = _ENGINE_SCORERS[scorer] = _EngineValueScorer(scorer)
    return fast


def score_by_owner(scorer: Scorer, prompt_ids: Sequence[Sequence[int]], states: Sequence[Sequence[int]],
                   owners: Sequence[int], caches: dict | None = None) -> list[float]:
    """``V(prompt_ids[i] + states[i])`` for every i, from one ``scorer.score`` call per owner (problem)
    over that owner's states in their order, so no owner's values depend on another's (see module docs).

    A value model the static engine runs scores through it (:func:`cached_scorer`); with ``caches``
    (a dict kept for one search call, :attr:`TokenCounter.caches`) each owner's prefix cache there
    serves its later calls: a problem reuses only what was computed for itself, so its values stay
    independent of the other problems and of how they are batched."""
    if not len(prompt_ids) == len(states) == len(owners):
        raise ValueError(f"{len(prompt_ids)} prompts, {len(states)} states, {len(owners)} owners")
    rows: dict[int, list[int]] = {}
    for i, owner in enumerate(owners):
        rows.setdefault(owner, []).append(i)
    values = [0.0] * len(states)
    scorer = cached_scorer(scorer)
    fast = isinstance(scorer, _EngineValueScorer)
    for owner, mine in rows.items():
        args = ([list(prompt_ids[i]) for i in mine], [list(states[i]) for i in mine])
        if fast and caches is not None:
            key = (id(scorer), owner)
            if key not in caches:
                caches[key] = scorer.hidden.new_cache()
            got = scorer.score(*args, cache=caches[key])
        else:
            got = scorer.score(*args)
        if len(got) != len(mine):
            raise ValueError(f"the scorer returned {len(got)} values for {len(mine)} states")
        for i, v in zip(mine, got):
            values[i] = float(v)
    return values


def score_counted(scorer: Scorer, prompt_ids: Sequence[Sequence[int]], states: Sequence[Sequence[int]],
                  owners: Sequence[int], counter: TokenCounter) -> list[float]:
    """:func:`score_by_owner` (one scorer call per owner problem), adding the tokens each value call reads
    to its owner problem."""
    if not states:
        return []
    values = score_by_owner(scorer, prompt_ids, states, owners, counter.caches)
    for owner, p, s in zip(owners, prompt_ids, states):
        counter.value[owner] += len(p) + len(s)
    return values


@dataclass
class Candidate:
    """A complete response a search produced, with the score it was ranked by (None: not scored)."""

    response_ids: list[int]
    text: str
    score: float | None
    finish_reason: str = "stop"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """One problem's search: its candidates, the final response (``chosen`` indexes ``candidates``;
    None when nothing was found), and the tokens it cost."""

    index: int
    candidates: list[Candidate]
    chosen: int | None
    generated_tokens: int
    value_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> str:
        return "" if self.chosen is None else self.candidates[self.chosen].text


def decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


# ---- what a search did, as a tree of node dicts (``searchrl search`` / ``compare-search`` keep the first
# ``search.keep_trees`` problems' trees as JSON Lines beside their results)

def tree_node(id: int, parent: int | None, action: str, *, value: float | None = None, visits: int | None = None,
              terminal: bool = False, reward: float | None = None, **extra: Any) -> dict[str, Any]:
    """One node of a kept search tree: ``id`` (its position in the list; the root is 0), ``parent``
    (None for the root), ``action`` (the text it appended to its parent's state; the root's is ""),
    ``value`` (the score the search held for it, None when it had none), ``visits`` (None when the search
    counts none), ``terminal`` (a response ends here: an end state, or a response the search could answer
    with), ``reward`` (the task's grade, when known), ``chosen`` (on the path to the final response, set by
    :func:`mark_chosen`), and any method-specific fields in ``extra``."""
    return {"id": id, "parent": parent, "action": action, "value": None if value is None else float(value),
            "visits": None if visits is None else int(visits), "terminal": bool(terminal),
            "reward": None if reward is None else float(reward), "chosen": False, **extra}


def action_texts(tokenizer, states: Sequence[Sequence[int]], parents: Sequence[int | None]) -> list[str]:
    """The text each state adds to its parent's (``parents[i]`` indexes ``states``; each parent's state is a
    prefix of its children's). Read off the decoded whole states, ``decode(state)[len(decode(parent)):]``, so
    the actions along a path add up to that path's decoded response even where a tokenizer decodes a piece
    alone differently (SentencePiece drops a leading space); the decoded new tokens where the parent's text
    is not a prefix of the child's."""
    texts = [decode(tokenizer, s) for s in states]
    out = []
    for i, p in enumerate(parents):
        if p is None:
            out.append(texts[i])
        elif texts[i].startswith(texts[p]):
            out.append(texts[i][len(texts[p]):])
        else:
            out.append(decode(tokenizer, list(states[i])[len(states[p]):]))
    return out


def mark_chosen(nodes: list[dict[str, Any]], node: int | None) -> list[dict[str, Any]]:
    """Set ``chosen`` on ``node`` (an id, None: nothing chosen) and its ancestors; ``nodes`` again."""
    while node is not None:
        nodes[node]["chosen"] = True
        node = nodes[node]["parent"]
    return nodes


def tree_from_states(tokenizer, states: Sequence[Sequence[int]], parents: Sequence[int | None],
                     fields: Sequence[dict[str, Any]], chosen: int | None) -> list[dict[str, Any]]:
    """Node dicts (:func:`tree_node`) for states ``states[i]`` (ids = positions, ``parents[i]`` indexing them),
    each with its ``fields`` (value, visits, terminal, ...), the path to ``chosen`` marked."""
    actions = action_texts(tokenizer, states, parents)
    return mark_chosen([tree_node(i, parents[i], actions[i], **fields[i]) for i in range(len(states))], chosen)


__all__ = ["Scorer", "problem_prompts", "request_seed", "eos_ids", "ActionSplitter", "TokenCounter", "BUDGET",
           "generate_counted", "score_by_owner", "score_counted", "Candidate", "SearchResult", "decode",
           "tree_node", "action_texts", "mark_chosen", "tree_from_states"]
