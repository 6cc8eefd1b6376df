"""What search and self-training need from a text generator, as one small protocol.

Why: tree search, ReST and evaluation only ever do three things with a model at
generation time: sample continuations of many prompts, score given
continuations (value estimates, reranking, likelihood of a known solution), and
pick up new weights after a training step. Writing them against this protocol
instead of against :class:`~searchrl.engine.sampler.Sampler` keeps the backend
swappable (our sampler, the plain HF forward, later vLLM) without touching the
callers, and lets tests substitute a scripted fake.

The shapes follow vLLM (``SamplingParams`` in, ``RequestOutput`` out), so a vLLM
adapter is a thin wrapper. Importing this module imports no torch (the types come
from :mod:`searchrl.engine.types`); nothing is built or compiled.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .types import ContinuationScore, RequestOutput, SamplingParams

__all__ = ["Generator", "ContinuationScore"]


@runtime_checkable
class Generator(Protocol):
    """A text generator over one model (see module docs). :class:`~searchrl.engine.Sampler` is one."""

    tokenizer: Any  # the HF tokenizer prompts are encoded with

    def generate(self, prompts: list[str] | list[list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False, progress: Any = None) -> list[RequestOutput]:
        """Complete each prompt ``params.n`` times; one output per prompt, in order. ``progress``,
        if given, is called with 1 per finished sample (the caller's progress bar)."""
        ...

    def score_continuations(self, prompts: list[str] | list[list[int]],
                            continuations: list[str] | list[list[int]]) -> list[ContinuationScore]:
        """Model logprob of each token of ``continuations[i]`` after ``prompts[i]``."""
        ...

    def update_weights(self, model=None) -> None:
        """Generate with ``model`` from now on, or with the current model's new weights; drops cached state."""
        ...
