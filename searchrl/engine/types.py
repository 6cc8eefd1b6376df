"""The engine's API types, shaped like vLLM's: what a caller sends and gets back.

``SamplingParams`` in, ``RequestOutput`` (one ``CompletionOutput`` per sample) out, and
``ContinuationScore`` from :meth:`~searchrl.engine.sampler.Sampler.score_continuations`. The output
conventions (what ``logprobs``, ``text`` and ``finish_reason`` hold) are in
:mod:`searchrl.engine.sampler`. Plain dataclasses, no torch: searches and configs build
``SamplingParams`` without importing the engine's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SamplingParams", "CompletionOutput", "RequestOutput", "ContinuationScore"]


@dataclass
class SamplingParams:
    """Shaped like ``vllm.SamplingParams`` (the subset searchrl uses)."""

    n: int = 1
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] | None = None  # output text is cut before the first stop string
    seed: int | None = None  # None: a fixed default derived from the request index
    include_stop_str_in_output: bool = False
    stop_token_ids: list[int] | None = None  # extra token ids that end a sample (like EOS)
    ignore_eos: bool = False  # keep going past EOS (benchmarks)
    # also return the model logprob of every prompt token (RequestOutput.prompt_logprobs). As in vLLM, an
    # int asks for that many top alternatives on top of the prompt token itself: only the token's own
    # logprob is returned here, so any int >= 0 (0 too) or True switches it on; None/False: off
    prompt_logprobs: bool | int | None = None

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.stop and any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.prompt_logprobs is not None and not isinstance(self.prompt_logprobs, bool) and (
                not isinstance(self.prompt_logprobs, int) or self.prompt_logprobs < 0):
            raise ValueError(f"prompt_logprobs must be None, a bool or an int >= 0, got {self.prompt_logprobs!r}")

    @property
    def wants_prompt_logprobs(self) -> bool:
        return self.prompt_logprobs is not None and self.prompt_logprobs is not False


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float
    logprobs: list[float]  # model logprob (raw logits, temperature 1) of each token in token_ids
    finish_reason: str  # "stop" | "length"


@dataclass
class RequestOutput:
    request_id: int
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    # with SamplingParams.prompt_logprobs: None for the first token, then the model logprob (temperature 1)
    # of each prompt token given the tokens before it
    prompt_logprobs: list[float | None] | None = None


@dataclass
class ContinuationScore:
    """What :meth:`Sampler.score_continuations` returns for one (prompt, continuation) pair."""

    prompt_token_ids: list[int]
    token_ids: list[int]  # the continuation's tokens
    logprobs: list[float]  # model logprob of each, given the prompt and the continuation tokens before it
    sum_logprob: float
