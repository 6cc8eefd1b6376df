"""A scripted policy and value function over a small known tree, for the search tests.

Text is tokenised one character per token (id = ord(c) + 1, EOS = 0), so a state's ids and
its text are interchangeable and every count in a test can be done by hand. A
:class:`ScriptedGenerator` continues a response text from a script: ``script[text]`` is
the list of possible *full* continuations of ``text`` (each ending with the EOS marker
``"$"``); sample ``j`` of a request takes continuation ``j % len(options)`` (or the one
chosen by ``pick(text, j, seed)``), and stop strings / ``max_tokens`` cut it as the
real sampler would (the token completing a stop string is kept, its text cut).
A text missing from the script is continued by ``default`` ("$": end at once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from searchrl.engine.types import CompletionOutput, RequestOutput, SamplingParams

EOS = "$"  # the EOS marker in scripts (decoded to nothing)
PROMPT = "Q:"


class CharTokenizer:
    """One token per character; id 0 is EOS; the chat template is ``"Q:" + user + "\\n"``."""

    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self.encode(text)}

    def encode(self, text: str) -> list[int]:
        return [0 if c == EOS else ord(c) + 1 for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True, **_) -> str:
        return "".join("" if i == 0 and skip_special_tokens else (EOS if i == 0 else chr(i - 1)) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return PROMPT + messages[-1]["content"] + "\n"


class EchoTask:
    """A task whose prompt is the problem's ``q``; a response is correct when it ends with the problem's
    ``answer`` line; the answer is the response's last line."""

    name = "echo"
    action_stop = "\n"

    def prompt(self, problem):
        return problem["q"]

    def answer(self, problem, response):
        lines = [ln for ln in response.strip().split("\n") if ln]
        return lines[-1] if lines else None

    def score(self, problems, responses):
        from searchrl.tasks import Score

        return [Score(reward=float(self.answer(p, r) == p["answer"]), correct=self.answer(p, r) == p["answer"])
                for p, r in zip(problems, responses)]


class ScriptedGenerator:
    """A :class:`~searchrl.engine.Generator` that continues texts from a script (see module docs).

    ``calls`` records every request as ``(response_text_so_far, params)``.
    """

    def __init__(self, script: dict[str, list[str]], pick: Callable[[str, int, int | None], int] | None = None,
                 default: str = EOS):
        self.tokenizer = CharTokenizer()
        self.script, self.pick, self.default = script, pick, default
        self.calls: list[tuple[str, SamplingParams]] = []

    def _response_text(self, prompt_ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        start = text.index("\n") + 1 if text.startswith(PROMPT) else 0  # after the chat template's line
        return text[start:]

    def generate(self, prompts, params=None, use_tqdm=False, progress=None):
        params = params or SamplingParams()
        out = []
        for r, p in enumerate(prompts):
            ids = self.tokenizer.encode(p) if isinstance(p, str) else list(p)
            sp = params[r] if isinstance(params, list) else params
            so_far = self._response_text(ids)
            self.calls.append((so_far, sp))
            options = self.script.get(so_far, [self.default])
            outputs = []
            for j in range(sp.n):
                k = self.pick(so_far, j, sp.seed) if self.pick else j % len(options)
                outputs.append(self._complete(options[k], j, sp))
            out.append(RequestOutput(request_id=r, prompt="", prompt_token_ids=ids, outputs=outputs))
        return out

    def _complete(self, cont: str, index: int, sp: SamplingParams) -> CompletionOutput:
        taken, finish = "", "length"
        for c in cont[: sp.max_tokens]:
            taken += c
            if c == EOS:
                finish = "stop"
                break
            if sp.stop and any(taken.endswith(s) for s in sp.stop):
                finish = "stop"
                break
        ids = self.tokenizer.encode(taken)
        text = self.tokenizer.decode(ids)
        if finish == "stop" and sp.stop and not sp.include_stop_str_in_output:
            for s in sp.stop:
                if text.endswith(s):
                    text = text[: -len(s)]
                    break
        return CompletionOutput(index=index, text=text, token_ids=ids, cumulative_logprob=0.0,
                                logprobs=[0.0] * len(ids), finish_reason=finish)

    def score_continuations(self, prompts, continuations):
        raise NotImplementedError("the scripted policy does not score")

    def update_weights(self, model=None):
        pass


class ScriptedScorer:
    """A :class:`~searchrl.search.common.Scorer` reading values from a table of response texts
    (``default`` for texts not in it); ``calls`` records every scored text."""

    def __init__(self, values: dict[str, float], default: float = 0.0):
        self.values, self.default = values, default
        self.tokenizer = CharTokenizer()
        self.calls: list[str] = []

    def score(self, prompt_ids, state_ids):
        out = []
        for s in state_ids:
            text = self.tokenizer.decode(s, skip_special_tokens=False)
            self.calls.append(text)
            out.append(self.values.get(text, self.default))
        return out
