"""Rollouts: a problem's prompt through a generator, graded by its task, kept as token ids.

Every loop that samples a policy (ReST and Guided-ReST generation, evaluation, and the
coming RL trainers and searches) calls :func:`rollout`, and gets :class:`Trajectory`
records back. A trajectory keeps what RL needs and text re-tokenisation would lose: the
prompt's token ids, the response's token ids exactly as sampled, and the model's
log-probability of every sampled token (temperature 1, raw logits; see
:mod:`searchrl.engine.sampler`).

Guided continuation (Guided-ReST) passes a ``prefix`` per problem: the model continues
from prompt + prefix. The prefix becomes the first ``prefix_len`` response tokens (given,
not sampled: they have no logprobs), so ``prompt_ids + response_ids`` is exactly the
sequence the model saw and produced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engine import SamplingParams
from .models.tokenizer import prompt_for


@dataclass
class Trajectory:
    """One response to one problem, graded.

    ``logprobs[i]`` is the model log-probability of ``response_ids[prefix_len + i]`` (the
    sampled tokens; a guided prefix's tokens have none). ``response`` is the response text
    (prefix included); ``finish_reason`` is ``"stop"`` or ``"length"``.
    """

    index: int
    sample: int
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    response: str
    reward: float
    correct: bool
    finish_reason: str
    prefix_len: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.response_ids)

    def to_record(self, tokens: bool = True) -> dict[str, Any]:
        """A JSON-able record; ``tokens=False`` leaves out the id and logprob lists (evaluation)."""
        d = dataclasses.asdict(self)
        d["num_tokens"] = self.num_tokens
        if not tokens:
            for k in ("prompt_ids", "response_ids", "logprobs"):
                del d[k]
        return d

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Trajectory:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in rec.items() if k in names})


def chat_prompt(tokenizer, task, problem: dict, history: Sequence[dict] = ()) -> str:
    """The text a policy sees for a problem: the task's prompt in the chat template, then the
    ``history`` messages (a multi-turn episode's earlier turns, ending with a user message), the
    assistant turn open."""
    if not history:
        return prompt_for(tokenizer, task.prompt(problem))
    return tokenizer.apply_chat_template([{"role": "user", "content": task.prompt(problem)}, *history],
                                         tokenize=False, add_generation_prompt=True)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def rollout(generator, task, problems: Sequence[dict], params: SamplingParams | Sequence[SamplingParams],
            *, indices: Sequence[int] | None = None, prefixes: Sequence[str] | None = None,
            histories: Sequence[Sequence[dict]] | None = None,
            advance: Callable[[int], Any] | None = None) -> list[list[Trajectory]]:
    """Sample ``params.n`` responses per problem and grade them; one list of trajectories per problem.

    ``params``: one :class:`SamplingParams` for all problems or one each (per-problem seeds).
    ``indices``: each problem's index, stored in its trajectories (default ``0..``).
    ``prefixes``: per problem, text the response starts with (guided continuation).
    ``histories``: per problem, the messages after the task's prompt (multi-turn episodes,
    :mod:`searchrl.episodes`); the response is the next assistant turn and is what gets graded.
    ``advance(k)`` is called as samples finish (progress bars).
    """
    tok = generator.tokenizer
    n = len(problems)
    params = [params] * n if isinstance(params, SamplingParams) else list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} SamplingParams for {n} problems")
    indices = list(range(n)) if indices is None else list(indices)
    prefixes = [""] * n if prefixes is None else list(prefixes)
    histories = [()] * n if histories is None else list(histories)
    if len(histories) != n:
        raise ValueError(f"{len(histories)} histories for {n} problems")
    prompt_ids, inputs, prefix_ids = [], [], []
    for p, prefix, history in zip(problems, prefixes, histories):
        text = chat_prompt(tok, task, p, history)
        ids = _encode(tok, text)
        full = _encode(tok, text + prefix) if prefix else ids
        # the prompt is the longest common token prefix (the prefix's first token may merge
        # with the prompt's last), so prompt_ids + response_ids is exactly what the model saw
        k = 0
        while k < min(len(ids), len(full)) and ids[k] == full[k]:
            k += 1
        prompt_ids.append(full[:k])
        prefix_ids.append(full[k:])
        inputs.append(full)
    outs = generator.generate(inputs, params, progress=advance)
    flat_problems, flat_responses, made = [], [], []
    for i, o in enumerate(outs):
        for c in o.outputs:
            response = prefixes[i] + c.text
            made.append(Trajectory(
                index=indices[i], sample=c.index, prompt_ids=prompt_ids[i],
                response_ids=prefix_ids[i] + list(c.token_ids), logprobs=list(c.logprobs), response=response,
                reward=0.0, correct=False, finish_reason=c.finish_reason, prefix_len=len(prefix_ids[i])))
            flat_problems.append(problems[i])
            flat_responses.append(response)
    scores = task.score(flat_problems, flat_responses)
    if len(scores) != len(made):
        raise ValueError(f"task {task.name!r}: score() returned {len(scores)} scores for {len(made)} responses")
    for t, s in zip(made, scores):
        t.reward, t.correct = float(s.reward), bool(s.correct)
        if s.info:
            t.meta["score"] = s.info
    out: list[list[Trajectory]] = []
    k = 0
    for o in outs:
        out.append(made[k:k + len(o.outputs)])
        k += len(o.outputs)
    return out


def sft_example(t: Trajectory, eos_token_id: int | None) -> dict[str, list[int]]:
    """A trajectory as a pre-tokenized SFT example: its ids as they are, EOS appended when the
    response did not end with one (a correct response cut at the token budget still teaches
    the model to stop)."""
    response = list(t.response_ids)
    if eos_token_id is not None and (not response or response[-1] != eos_token_id):
        response.append(eos_token_id)
    return {"prompt_ids": list(t.prompt_ids), "response_ids": response}


__all__ = ["Trajectory", "rollout", "chat_prompt", "sft_example"]
