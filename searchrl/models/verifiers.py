"""Off-the-shelf verifiers as search scorers: process reward models read at step separators, and
sequence-classification reward models as outcome reward models.

Every search scores states through the :class:`~searchrl.search.common.Scorer` protocol
(``score(prompt_ids, state_ids) -> [value in [0, 1]]``). Our :class:`~searchrl.models.value.ValueModel`
is one; the classes here make published verifiers others, so that ``search.prm=peiyi9979/math-shepherd-mistral-7b-prm``
or ``search.orm=<a reward model directory>`` runs every search with them. :func:`load_scorer` picks the class
from the directory's ``config.json`` (:func:`searchrl.models.policy.model_dir_kind`):

* ``searchrl_value`` entry: our :class:`~searchrl.models.value.ValueModel`;
* ``*ForTokenClassification``: :class:`TokenClassificationPRM` in ``token-classification`` mode (a PRM
  trained as token classification, e.g. with TRL's ``PRMTrainer``, or our value model exported by
  :meth:`ValueModel.export_token_classification`);
* ``*ForProcessRewardModel`` (Qwen2.5-Math-PRM): the same mode, the backbone loaded by transformers and the
  ``score`` head (Linear, ReLU, Linear to 2 classes) read from the weights, so no code from the Hub runs;
* a causal LM, only when asked (``search.verifier.causal_lm``): :class:`TokenClassificationPRM` in
  ``causal-lm`` mode, the Math-Shepherd PRM's convention (``peiyi9979/math-shepherd-mistral-7b-prm``, a
  ``MistralForCausalLM``): at each separator, the probability of the good token among {good, bad}.
  Without the setting a causal LM is refused, since a policy given there by mistake would score nonsense;
* ``*ForSequenceClassification``: :class:`SequenceClassificationRM` (an ORM): sigmoid of the logit of a
  one-label head, softmax probability of the positive class otherwise.

What a verifier reads
---------------------
Searches hand the scorer token ids in the *policy's* vocabulary; a verifier has its own tokenizer and input
format. So a verifier decodes with the policy's tokenizer (:class:`TextView`): the question is the user
message of the prompt (the chat template rendered around a sentinel locates it; a template it cannot
locate gives the whole decoded prompt), and the steps are the state's actions: runs of tokens that end at a
token whose text holds the task's action stop (``"\\n"``, as :class:`searchrl.actions.ActionSplitter`)
or at EOS, stripped, blank ones dropped. The verifier's text then follows one of two published conventions
(``search.verifier.convention``; each field can be set on its own):

* ``math-shepherd`` (Wang et al. 2024, arXiv:2312.08935; the model card's example):
  ``f"{question} {step_1} ки\\n{step_2} ки"``, tokenized with the verifier's special tokens; read at each
  ``ки``; labels ``+`` / ``-``;
* ``qwen-prm`` (Qwen2.5-Math-PRM, Zhang et al. 2025, arXiv:2501.07301; the model card's example): the
  verifier's chat template over a system prompt, the question as the user message and
  ``"<extra_0>".join(steps) + "<extra_0>"`` as the assistant message; read at each ``<extra_0>``; class 1 is
  the positive one.

A separator's position is found by character offsets (the token that holds the separator's last character),
so it does not depend on how a tokenizer splits the separator or on separators inside the question. A state
with no step yet is read at a separator right after the question (one empty step).

A state's score aggregates its step probabilities (``search.verifier.aggregate``): ``min`` (the PRM-min of
Lightman et al. 2023 and Math-Shepherd), ``last`` (Qwen's "last step" BoN), or ``prod``. For a decoder-only
verifier a step's probability depends only on the text before it, so :meth:`TokenClassificationPRM.values_at`
reads every prefix of a response from one pass (PRM-min's path); an encoder (e.g. BERT) offers no ``values_at``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import InputError
from ..actions import ActionSplitter

#: the published conventions (see module docs); a setting left '' takes its convention's value
CONVENTIONS: dict[str, dict[str, str]] = {
    "math-shepherd": {"separator": "ки", "positive_label": "+", "negative_label": "-", "format": "plain",
                      "system": ""},
    "qwen-prm": {"separator": "<extra_0>", "positive_label": "1", "negative_label": "0", "format": "chat",
                 "system": "Please reason step by step, and put your final answer within \\boxed{}."},
}
FORMATS = ("plain", "chat")
AGGREGATES = ("min", "last", "prod")
_SENTINEL = "\x00searchrl-question\x00"


def convention_settings(convention: str = "math-shepherd", **given: str) -> dict[str, str]:
    """The verifier settings of ``convention`` with every non-empty ``given`` one on top."""
    if convention not in CONVENTIONS:
        raise InputError(f"search.verifier.convention = {convention!r}: one of {' | '.join(CONVENTIONS)}")
    out = dict(CONVENTIONS[convention])
    out.update({k: v for k, v in given.items() if v})
    if out["format"] not in FORMATS:
        raise InputError(f"search.verifier.format = {out['format']!r}: one of {' | '.join(FORMATS)}")
    return out


class TextView:
    """The question and the steps a search's token ids (in the policy's vocabulary) stand for (module docs)."""

    def __init__(self, tokenizer, step_stop: str = "\n"):
        self.tokenizer, self.split = tokenizer, ActionSplitter(tokenizer, step_stop)  # the searches' own step rule
        self.around: tuple[str, str] | None = None
        try:
            from .tokenizer import prompt_for

            before, after = prompt_for(tokenizer, _SENTINEL).split(_SENTINEL)
            self.around = (before, after)
        except Exception:  # no chat template, or one that does not place the message verbatim
            self.around = None

    def question(self, prompt_ids: Sequence[int]) -> str:
        """The user message of a prompt (the whole decoded prompt when the template cannot be located)."""
        text = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
        if self.around is not None:
            before, after = self.around
            if text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
                return text[len(before):len(text) - len(after)].strip()
        return self.tokenizer.decode(list(prompt_ids), skip_special_tokens=True).strip()

    def segments(self, state_ids: Sequence[int]) -> list[tuple[int, str]]:
        """``[(end, text)]`` per action of a state (token end, stripped text; blank ones included)."""
        ids = [int(t) for t in state_ids]
        return [(e, self.tokenizer.decode(ids[s:e], skip_special_tokens=True).strip())
                for s, e in self.split.actions(ids)]

    def steps(self, state_ids: Sequence[int]) -> list[str]:
        return [t for _, t in self.segments(state_ids) if t]

    def text(self, state_ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(t) for t in state_ids], skip_special_tokens=True).strip()


def _label_index(setting: str, config, what: str) -> int | None:
    """A label setting as a class index: '' -> None, a number -> itself, else a name in ``config.label2id``."""
    if setting == "":
        return None
    n = int(getattr(config, "num_labels", 0) or 0)
    if setting.lstrip("-").isdigit():
        i = int(setting)
    else:
        names = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
        if setting not in names:
            raise InputError(f"search.verifier.{what} = {setting!r}: not a label of this model "
                             f"({', '.join(names) or 'none named'}); give a class index or one of these names")
        i = names[setting]
    if not 0 <= i < n:
        raise InputError(f"search.verifier.{what} = {setting!r}: class {i} outside the model's {n} labels")
    return i


def _positive_class(explicit: str, default: str, config, num_labels: int) -> int | None:
    """The positive class of a classifier head: None for one label (its sigmoid); ``explicit`` (the setting)
    as :func:`_label_index` reads it; else the convention's ``default`` label when the model names it, else
    class 1 of 2 (both published conventions put the positive class last)."""
    if num_labels == 1:
        return None
    labels = _Labels(config, num_labels)
    if explicit:
        return _label_index(explicit, labels, "positive_label")
    names = {str(k) for k in (labels.label2id or {})}
    if default and (default in names or (default.isdigit() and int(default) < num_labels)):
        return _label_index(default, labels, "positive_label")
    if num_labels == 2:
        return 1
    raise InputError(f"search.verifier.positive_label: the model has {num_labels} labels "
                     f"({', '.join(sorted(names)) or 'unnamed'}); say which is positive")


def _aggregate(probs: Sequence[float], how: str) -> float:
    if how == "min":
        return float(min(probs))
    if how == "last":
        return float(probs[-1])
    out = 1.0
    for p in probs:
        out *= float(p)
    return out


def _pad_id(tokenizer) -> int:
    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if isinstance(t, int):
            return t
    return 0


def _padded(seqs: Sequence[Sequence[int]], rows: Sequence[int], pad: int, left: bool = False):
    """``seqs[rows]`` as one batch: ids padded with ``pad`` to the longest (on the left when ``left``: a
    sequence classifier reads its last position) and the attention mask."""
    longest = max(len(seqs[j]) for j in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for r, j in enumerate(rows):
        span = slice(longest - len(seqs[j]), longest) if left else slice(0, len(seqs[j]))
        ids[r, span] = torch.tensor(seqs[j])
        mask[r, span] = 1
    return ids, mask


class _Verifier(nn.Module):
    """What both verifier kinds share: the policy's view of the ids, the verifier's tokenizer and format."""

    def __init__(self, model: nn.Module, tokenizer, view: TextView, *, format: str = "plain", system: str = "",
                 max_batch_tokens: int = 16384):
        super().__init__()
        if format not in FORMATS:
            raise InputError(f"search.verifier.format = {format!r}: one of {' | '.join(FORMATS)}")
        self.model, self.tokenizer, self.view = model, tokenizer, view
        self.format, self.system, self.max_batch_tokens = format, system, max_batch_tokens
        self.config = getattr(model, "config", None)

    def _chat(self, question: str, answer: str) -> tuple[str, int]:
        """The verifier's chat template over (system), user ``question``, assistant ``answer``; and where
        ``answer`` starts in it."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"search.verifier.format = 'chat': the verifier's tokenizer has no chat template; "
                             f"use format=plain")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        at = text.rfind(answer)
        if at < 0:
            raise InputError("search.verifier.format = 'chat': the verifier's chat template changes the assistant "
                             "message (it cannot be found in the rendered text); use format=plain")
        return text, at

    def _encode(self, text: str, marks: Sequence[int]) -> tuple[list[int], list[int]]:
        """``text``'s ids (with the verifier's special tokens in the plain format) and, for each character
        index in ``marks``, the token that holds it."""
        enc = self.tokenizer(text, add_special_tokens=self.format == "plain", return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        at = []
        for m in marks:
            hit = [i for i, (s, e) in enumerate(offsets) if s <= m < e]
            if not hit:
                raise InputError(f"the verifier's tokenizer keeps no token for character {m} of its input "
                                 f"(a separator dropped by normalization?)")
            at.append(hit[-1])
        return ids, at

    def _batches(self, seqs: list[list[int]]):
        """Index lists of ``seqs``, longest first, each within ``max_batch_tokens`` once padded."""
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        i = 0
        while i < len(order):
            rows = order[i:i + max(1, self.max_batch_tokens // max(len(seqs[order[i]]), 1))]
            yield rows
            i += len(rows)

    @property
    def device(self):
        return next(self.model.parameters()).device


class TokenClassificationPRM(_Verifier):
    """A process reward model read at step separators (see module docs).

    ``mode="token-classification"``: ``model(ids).logits`` is ``[B, T, L]``; a step's probability is the
    sigmoid of the logit (``L = 1``) or the softmax probability of ``positive_label`` (default class 1 of 2).
    ``mode="causal-lm"``: the logits over the vocabulary at the separator, restricted to the good and bad
    tokens (``positive_label``, ``negative_label``: ``tokenizer.encode(f"{good} {bad}")`` must give two
    tokens, as Math-Shepherd's code takes them), softmax, the good one's probability.
    """

    def __init__(self, model: nn.Module, tokenizer, view: TextView, *, mode: str = "token-classification",
                 separator: str = "ки", positive_label: str = "", negative_label: str = "", aggregate: str = "min",
                 format: str = "plain", system: str = "", head: nn.Module | None = None, causal: bool = True,
                 default_positive: str = "", max_batch_tokens: int = 16384):
        super().__init__(model, tokenizer, view, format=format, system=system, max_batch_tokens=max_batch_tokens)
        if mode not in ("token-classification", "causal-lm"):
            raise ValueError(f"mode must be token-classification | causal-lm, got {mode!r}")
        if aggregate not in AGGREGATES:
            raise InputError(f"search.verifier.aggregate = {aggregate!r}: one of {' | '.join(AGGREGATES)}")
        if not separator:
            raise InputError("search.verifier.separator: empty; a PRM is read at a separator after each step")
        self.mode, self.separator, self.aggregate, self.head = mode, separator, aggregate, head
        if mode == "causal-lm":
            pair = tokenizer.encode(f"{positive_label} {negative_label}", add_special_tokens=False)
            if len(pair) != 2:
                raise InputError(f"search.verifier.positive_label / negative_label = {positive_label!r} / "
                                 f"{negative_label!r}: the verifier's tokenizer makes {len(pair)} tokens of "
                                 f"'{positive_label} {negative_label}', not one good and one bad token")
            self.good_bad = [int(pair[0]), int(pair[1])]
            self.positive = None
        else:
            self.positive = _positive_class(positive_label, default_positive, self.config, self.num_labels)
        if causal:  # one pass gives every prefix's value (module docs); prm_min_scores looks for this method
            self.values_at = self._values_at

    @property
    def num_labels(self) -> int:
        if self.head is not None:
            return int(self.head[-1].out_features)
        return int(getattr(self.config, "num_labels", 1))

    # ---- the verifier's input
    def build(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The verifier's ids for ``question`` and ``steps`` (no step: one empty step), and the position of
        each step's separator."""
        steps = list(steps) or [""]
        sep = self.separator
        marks: list[int] = []
        if self.format == "plain":
            text = f"{question} "
            for k, s in enumerate(steps):
                text += (f"{s} " if s else "") + sep
                marks.append(len(text) - 1)
                if k < len(steps) - 1:
                    text += "\n"
        else:
            answer = sep.join(steps) + sep
            text, at = self._chat(question, answer)
            pos = 0
            for s in steps:
                pos += len(s) + len(sep)
                marks.append(at + pos - 1)
        return self._encode(text, marks)

    @torch.no_grad()
    def step_probs(self, items: Sequence[tuple[list[int], list[int]]]) -> list[list[float]]:
        """For each ``(ids, positions)`` (from :meth:`build`), the positive probability at each position."""
        seqs = [ids for ids, _ in items]
        out: list[list[float]] = [[] for _ in items]
        pad = _pad_id(self.tokenizer)
        was = self.training
        self.eval()
        try:
            for rows in self._batches(seqs):
                ids, mask = _padded(seqs, rows, pad)
                logits = self._logits(ids.to(self.device), mask.to(self.device)).float()
                for r, j in enumerate(rows):
                    at = logits[r, items[j][1]]  # [steps, L or V]
                    if self.mode == "causal-lm":
                        p = torch.softmax(at[:, self.good_bad], dim=-1)[:, 0]
                    elif at.shape[-1] == 1:
                        p = torch.sigmoid(at[:, 0])
                    else:
                        p = torch.softmax(at, dim=-1)[:, self.positive]
                    out[j] = p.cpu().tolist()
        finally:
            self.train(was)
        return out

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.head is not None:  # a *ForProcessRewardModel: backbone + the score head read from its weights
            hidden = self.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            return self.head(hidden.to(self.head[0].weight.dtype))
        return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    # ---- the Scorer protocol
    def score(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]]) -> list[float]:
        """Each state's step probabilities, aggregated (``min`` | ``last`` | ``prod``)."""
        items = [self.build(self.view.question(p), self.view.steps(s)) for p, s in zip(prompt_ids, state_ids)]
        return [_aggregate(ps, self.aggregate) for ps in self.step_probs(items)]

    def _values_at(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]],
                   ends: Sequence[Sequence[int]]) -> list[list[float]]:
        """For each i, the score of ``state_i[:e]`` for every ``e`` in ``ends[i]``, from one pass over the whole
        state where ``e`` ends an action (0, or the end of one of its actions); other cuts are scored alone."""
        if not len(prompt_ids) == len(state_ids) == len(ends):
            raise ValueError(f"{len(prompt_ids)} prompts, {len(state_ids)} states, {len(ends)} position lists")
        segs = [self.view.segments(s) for s in state_ids]
        questions = [self.view.question(p) for p in prompt_ids]
        items = [self.build(q, [t for _, t in sg if t]) for q, sg in zip(questions, segs)]
        probs = self.step_probs(items)
        out: list[list[float]] = []
        for i, (sg, es) in enumerate(zip(segs, ends)):
            bounds = {0} | {e for e, _ in sg}
            row = []
            for e in es:
                if e not in bounds:
                    row.append(self.score([prompt_ids[i]], [list(state_ids[i])[:e]])[0])
                    continue
                k = sum(1 for end, t in sg if t and end <= e)  # steps of the prefix
                if k == 0:  # no step yet: the empty step's separator, read on its own
                    row.append(_aggregate(self.step_probs([self.build(questions[i], [])])[0], self.aggregate))
                else:
                    row.append(_aggregate(probs[i][:k], self.aggregate))
            out.append(row)
        return out


class SequenceClassificationRM(_Verifier):
    """An outcome reward model (``*ForSequenceClassification``): the state's score is the sigmoid of the logit
    (one label) or the softmax probability of ``positive_label`` (default class 1 of 2). Its input is
    ``f"{question} {response}"`` (plain) or the verifier's chat template over the question and the response
    (chat). Sequences are batched left-padded, so the last token is where the model pools."""

    def __init__(self, model: nn.Module, tokenizer, view: TextView, *, positive_label: str = "",
                 default_positive: str = "", format: str = "plain", system: str = "", max_batch_tokens: int = 16384):
        super().__init__(model, tokenizer, view, format=format, system=system, max_batch_tokens=max_batch_tokens)
        self.positive = _positive_class(positive_label, default_positive, self.config,
                                        int(getattr(self.config, "num_labels", 1)))
        if getattr(self.config, "pad_token_id", None) is None:
            self.config.pad_token_id = _pad_id(tokenizer)  # HF pools at the last token that is not padding

    def build(self, question: str, response: str) -> list[int]:
        if self.format == "plain":
            return list(self.tokenizer(f"{question} {response}", add_special_tokens=True)["input_ids"])
        text, _ = self._chat(question, response)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def score(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]]) -> list[float]:
        seqs = [self.build(self.view.question(p), self.view.text(s)) for p, s in zip(prompt_ids, state_ids)]
        out = [0.0] * len(seqs)
        pad = self.config.pad_token_id
        was = self.training
        self.eval()
        try:
            for rows in self._batches(seqs):
                ids, mask = _padded(seqs, rows, pad, left=True)
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
                if logits.shape[-1] == 1:
                    p = torch.sigmoid(logits[:, 0])
                else:
                    p = torch.softmax(logits, -1)[:, self.positive]
                for r, j in enumerate(rows):
                    out[j] = float(p[r])
        finally:
            self.train(was)
        return out


class _Labels:
    """A config's labels as :func:`_label_index` reads them, with the head's class count."""

    def __init__(self, config, num_labels: int):
        self.num_labels = num_labels
        same = int(getattr(config, "num_labels", -1)) == num_labels  # names of another head's classes do not count
        self.label2id = getattr(config, "label2id", None) if same else None


def _safetensors_state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` in a directory's ``*.safetensors`` (sharded or not)."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InputError(f"{path}: no *.safetensors weights (a *ForProcessRewardModel is read from safetensors)")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                if k.startswith(prefix):
                    out[k[len(prefix):]] = st.get_tensor(k)
    return out


def _prm_head(path: Path, dtype: torch.dtype) -> nn.Sequential:
    """A ``*ForProcessRewardModel``'s ``score`` head (``score.0`` Linear, ReLU, ``score.2`` Linear, ... as
    Qwen2.5-Math-PRM's ``nn.Sequential``), from its weights."""
    state = _safetensors_state(path, "score.")
    layers = sorted({int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit()})
    if not layers or any(f"{i}.weight" not in state for i in layers):
        raise InputError(f"{path}: no 'score.N.weight' tensors: not a *ForProcessRewardModel head this loader reads "
                         f"(Linear, ReLU, Linear as Qwen2.5-Math-PRM's)")
    mods: list[nn.Module] = []
    for n, i in enumerate(layers):
        w = state[f"{i}.weight"]
        lin = nn.Linear(w.shape[1], w.shape[0], bias=f"{i}.bias" in state)
        lin.load_state_dict({"weight": w, **({"bias": state[f"{i}.bias"]} if f"{i}.bias" in state else {})})
        mods.append(lin)
        if n < len(layers) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).to(dtype)


def _is_causal(config) -> bool:
    """Decoder-only: its values at a token depend only on the tokens before (module docs)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    t = getattr(config, "model_type", None)
    return t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and t not in MODEL_FOR_MASKED_LM_MAPPING_NAMES \
        and not getattr(config, "is_encoder_decoder", False)


def load_scorer(path: str | os.PathLike, *, tokenizer: Callable[[], Any] | Any = None, step_stop: str = "\n",
                dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                convention: str = "math-shepherd", separator: str = "", positive_label: str = "",
                negative_label: str = "", format: str = "", system: str = "", aggregate: str = "min",
                causal_lm: bool = False, max_batch_tokens: int = 16384):
    """The scorer in ``path`` (a directory or a Hub name), in eval mode: a
    :class:`~searchrl.models.value.ValueModel`, or a verifier (module docs) with the ``search.verifier``
    settings given here. ``tokenizer``: the policy's tokenizer (or a function returning it, called only for a
    verifier), which decodes the ids searches hand in; ``step_stop``: the task's action stop."""
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification, AutoTokenizer)

    from .policy import check_model_dir, model_dir_kind, resolve_model_path
    from .value import ValueModel

    path = resolve_model_path(path)
    check_model_dir(path, kind=None)
    kind = model_dir_kind(json.loads((path / "config.json").read_text(encoding="utf-8")))
    if kind == "value":
        return ValueModel.from_pretrained(path, dtype=dtype, device=device).eval()
    if kind == "policy" and not causal_lm:
        check_model_dir(path, kind="scorer")  # the refusal, with its reason
    s = convention_settings(convention, separator=separator, positive_label=positive_label,
                            negative_label=negative_label, format=format, system=system)
    policy_tok = tokenizer() if callable(tokenizer) and not hasattr(tokenizer, "decode") else tokenizer
    if policy_tok is None:
        raise ValueError(f"{path}: a verifier needs the policy's tokenizer (to read the searches' token ids)")
    view = TextView(policy_tok, step_stop)
    vtok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if not getattr(vtok, "is_fast", False):
        raise InputError(f"{path}: the verifier's tokenizer has no fast (Rust) version; separators are located by "
                         f"character offsets, which only fast tokenizers give")
    dtype = dtype or torch.float32
    common = {"format": s["format"], "system": s["system"], "max_batch_tokens": max_batch_tokens}
    if kind == "sequence-classification":
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
        scorer = SequenceClassificationRM(model, vtok, view, positive_label=positive_label,
                                          default_positive=s["positive_label"], **common)
    else:
        prm = {"separator": s["separator"], "aggregate": aggregate, **common}
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        if kind == "token-classification":
            model = AutoModelForTokenClassification.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
            scorer = TokenClassificationPRM(model, vtok, view, positive_label=positive_label,
                                            default_positive=s["positive_label"], causal=_is_causal(config), **prm)
        elif kind == "process-reward":
            model = AutoModel.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
            scorer = TokenClassificationPRM(model, vtok, view, positive_label=positive_label,
                                            default_positive=s["positive_label"], head=_prm_head(path, dtype),
                                            causal=_is_causal(config), **prm)
        else:  # a causal LM read as a Math-Shepherd PRM (causal_lm asked for)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
            scorer = TokenClassificationPRM(model, vtok, view, mode="causal-lm", positive_label=s["positive_label"],
                                            negative_label=s["negative_label"], causal=True, **prm)
    return (scorer.to(device) if device is not None else scorer).eval()


__all__ = ["CONVENTIONS", "FORMATS", "AGGREGATES", "convention_settings", "TextView", "TokenClassificationPRM",
           "SequenceClassificationRM", "load_scorer"]
