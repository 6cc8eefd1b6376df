"""Multi-turn episodes: attempt, feedback, attempt again (code self-repair; Guided-ReST, seed 001).

Why: Guided-ReST's code experiments are "episode-level search": up to 4 assistant turns, each
answered by the task's feedback (for code: the public tests, :mod:`searchrl.tasks.code.repair`),
the episode ending as soon as the feedback says it is done. This module runs such episodes on
any task with ``feedback(problems, responses) -> [Feedback(message, done)]`` and, for guidance,
``reference(problem) -> str``, through the same :func:`~searchrl.rollout.rollout` as every other
sampler (the history is the messages after the task's prompt).

The procedure is the published ``recipe/code_repair/main_gen.py``:

1. Turns ``t = 0 .. turns-1`` (0-based): every episode not done keeps its first ``t`` assistant
   turns and the user message after them, and samples turn ``t``; the new turn is graded on **all**
   tests (``task.score``: the episode's reward and ``correct`` are its last turn's) and on the public
   tests (``task.feedback``: the next user message, and ``done``).
2. Guidance (``guidance_rounds`` = R > 0, Guided-ReST): for round ``s = 1 .. R``, every episode not
   done is cut to its first ``s`` assistant turns; the user message after turn ``s`` gets
   ``"Here is the reference code to assist you:"`` and the reference appended; the turns after it
   are sampled again, the first with the reference in view, the rest with the history as stored.
   In the stored episode (what SFT learns from) the reference is replaced by the recipe's
   placeholder block :data:`PLACEHOLDER`, so the policy learns to repair from feedback, not to
   copy. With R = 0 this is plain multi-turn sampling (ReST's generation).
3. Budget: ``max_tokens`` counts every token after the task's prompt (assistant and user turns,
   by the chat template). A turn is not sampled when the history already fills the budget, and a
   sampled turn that reaches it is discarded (the episode keeps what it had), as in the recipe.

One deliberate difference: the recipe builds the cut episode's guided message from the feedback
on the episode's *latest* turn (its ``observations`` hold one entry per episode), so after the
cut the feedback no longer describes the code just above it. Here each turn keeps its own
feedback and the message after turn ``s`` is turn ``s``'s, as the issue's description of the
method says.

Every turn's sample is seeded from ``(seed, tag, problem index, sample, round, turn)``, so a
shard regenerated after a crash equals the lost one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engine import SamplingParams
from .rollout import chat_prompt, rollout
from .seeding import stable_seed
from .tasks.base import GUIDANCE, PLACEHOLDER, guided_message  # noqa: F401  (re-exported)

@dataclass
class Episode:
    """One episode: ``messages`` after the task's prompt (assistant first, alternating, ending with an
    assistant turn; guidance shown as :data:`PLACEHOLDER`), and per assistant turn its grade
    (``turns[k]``: ``reward``, ``correct``, ``feedback`` = the next user message, ``done``,
    ``finish_reason``). ``round`` is the guidance round that sampled its last turn (0 = none)."""

    index: int
    sample: int
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    num_tokens: int = 0
    round: int = 0

    @property
    def done(self) -> bool:
        return bool(self.turns) and bool(self.turns[-1]["done"])

    @property
    def reward(self) -> float:
        return float(self.turns[-1]["reward"]) if self.turns else 0.0

    @property
    def correct(self) -> bool:
        return bool(self.turns) and bool(self.turns[-1]["correct"])

    def to_record(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "reward": self.reward, "correct": self.correct,
                "n_turns": len(self.turns), "first_correct": bool(self.turns) and bool(self.turns[0]["correct"]),
                "meta": {"solved_round": self.round if self.correct else -1}}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Episode:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in rec.items() if k in names})


def _length(tok, task, problem: dict, messages: Sequence[dict]) -> int:
    """Tokens after the task's prompt (the recipe's ``get_response_length``)."""
    base = chat_prompt(tok, task, problem)
    if not messages:
        return 0
    text = tok.apply_chat_template([{"role": "user", "content": task.prompt(problem)}, *messages], tokenize=False,
                                   add_generation_prompt=messages[-1]["role"] == "user")
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    return n - len(tok(base, add_special_tokens=False)["input_ids"])


def units(n: int, turns: int, guidance_rounds: int) -> int:
    """Progress units per problem of :func:`run_episodes` (one per episode and turn it may sample)."""
    return n * (turns + sum(max(0, turns - s) for s in range(1, guidance_rounds + 1)))


def run_episodes(generator, task, problems: Sequence[dict], *, n: int = 1, turns: int = 4, max_tokens: int = 512,
                 temperature: float = 1.0, top_p: float = 1.0, guidance_rounds: int = 0, seed: int = 0,
                 tag: Sequence[Any] = (), indices: Sequence[int] | None = None,
                 advance: Callable[[int], Any] | None = None) -> list[list[Episode]]:
    """``n`` episodes per problem of up to ``turns`` assistant turns (see the module doc); one list per problem.

    ``tag`` goes into every seed (e.g. the iteration); ``indices`` are the problems' indices (default ``0..``).
    """
    if turns < 1:
        raise ValueError(f"turns must be >= 1, got {turns}")
    if not hasattr(task, "feedback"):
        raise ValueError(f"task {getattr(task, 'name', task)!r} gives no feedback(); multi-turn episodes need it")
    if guidance_rounds and not hasattr(task, "reference"):
        raise ValueError(f"task {getattr(task, 'name', task)!r} has no reference(); guidance needs it")
    tok = generator.tokenizer
    indices = list(range(len(problems))) if indices is None else list(indices)
    slots = [(p, Episode(index=idx, sample=j)) for p, idx in zip(problems, indices) for j in range(n)]

    def turn(t: int, reference: bool, rnd: int) -> None:
        todo, shown, stored, params = [], [], [], []
        for p, e in slots:
            if e.done:
                continue
            hist = e.messages[: 2 * t - 1] if t > 0 else []
            if t > 0 and not hist:
                continue
            k = (len(hist) + 1) // 2  # assistant turns kept
            h_shown, h_stored = list(hist), list(hist)
            if t > 0:
                fb = e.turns[k - 1]["feedback"]
                h_shown.append({"role": "user", "content": guided_message(fb, task.reference(p)) if reference else fb})
                h_stored.append({"role": "user", "content": guided_message(fb, PLACEHOLDER) if reference else fb})
            used = _length(tok, task, p, h_shown)
            if used >= max_tokens:
                continue
            todo.append((p, e, k))
            shown.append(h_shown)
            stored.append(h_stored)
            params.append(SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_tokens - used,
                                         seed=stable_seed(seed, *tag, e.index, e.sample, rnd, t)))
        if advance is not None:
            advance(len(slots) - len(todo))
        if not todo:
            return
        outs = rollout(generator, task, [p for p, _, _ in todo], params, indices=[e.index for _, e, _ in todo],
                       histories=shown, advance=advance)
        trajs = [ts[0] for ts in outs]
        fbs = task.feedback([p for p, _, _ in todo], [tr.response for tr in trajs])
        for (p, e, k), h, tr, fb in zip(todo, stored, trajs, fbs):
            new = h + [{"role": "assistant", "content": tr.response}]
            length = _length(tok, task, p, new)
            if length >= max_tokens:  # the recipe discards a turn that fills the budget
                continue
            e.messages = new
            e.turns = e.turns[:k] + [{"reward": tr.reward, "correct": tr.correct, "feedback": fb.message,
                                      "done": fb.done, "finish_reason": tr.finish_reason, "tokens": tr.num_tokens}]
            e.num_tokens = length
            e.round = rnd

    for t in range(turns):
        turn(t, False, 0)
    for s in range(1, guidance_rounds + 1):
        for t in range(s, turns):
            turn(t, t == s, s)
    out: list[list[Episode]] = []
    for i in range(len(problems)):
        out.append([e for _, e in slots[i * n:(i + 1) * n]])
    return out


def episode_examples(tokenizer, task, problem: dict, episode: Episode | dict) -> list[dict[str, str]]:
    """SFT examples of an episode, one per assistant turn: the conversation before the turn (chat
    template, assistant turn open) as ``prompt``, the turn as ``response``. Their summed token loss
    is the loss of the whole conversation with every assistant token trained and no other."""
    messages = episode.messages if isinstance(episode, Episode) else episode["messages"]
    return [{"prompt": chat_prompt(tokenizer, task, problem, messages[:k]), "response": m["content"]}
            for k, m in enumerate(messages) if m["role"] == "assistant"]


__all__ = ["Episode", "run_episodes", "episode_examples", "guided_message", "units", "GUIDANCE", "PLACEHOLDER"]
