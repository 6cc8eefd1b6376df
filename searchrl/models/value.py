"""Value models: a causal-LM backbone with a head read at every position.

Why one class
-------------
ReST-MCTS* and ReST-RL regress a scalar value of a partial solution; Value-Guided Search
classifies every token of a roll-out as leading to an incomplete, correct or incorrect end;
the coming PPO critic needs a value at every position. All of them are "the policy's
transformer, plus a small head on its hidden states", initialised from the policy
checkpoint, so :class:`ValueModel` is that and nothing more:

* ``kind="scalar"`` (ReST-RL eq. 6, ReST-MCTS*): ``Linear(h, 1)`` squashed by a sigmoid
  into [0, 1], trained with MSE on value targets. The published code clips a linear
  output to [0, 1] instead; a clipped output has no gradient once it leaves the interval,
  which a freshly initialised head often does, so we squash (same range, same targets).
* ``kind="orm"``: the same scalar head, trained on outcome labels of complete responses
  only (:mod:`searchrl.train.value`); it stands in for the papers' off-the-shelf outcome
  reward models (ReST-RL's Skywork ORM), which cannot be downloaded here.
* ``kind="3class"`` (VGS ``classifier_lib``): ``Dropout(0.05) -> Linear(h, h) -> ReLU ->
  Linear(h, 3)``, no biases, classes ordered as the VGS code orders them (0 incomplete,
  1 correct, 2 incorrect); the value of a state is P(class 1) at its last token.

The value of a state (prompt + partial response) is read at its **last token**
(:meth:`ValueModel.score`); :meth:`ValueModel.values` gives one at every position (a PPO
critic reads the value of an action from the token before the action starts).

Files: a Hugging Face directory. ``config.json`` is the backbone's config with a
``searchrl_value`` entry (``{"kind": ..., "dropout": ...}``); ``model.safetensors`` holds the
backbone under ``model.*`` (the prefix a causal LM uses, so ``AutoModel.from_pretrained``
reads the backbone of our directory) and the head under ``value_head.*``; the tokenizer sits
beside them. :meth:`ValueModel.from_pretrained` loads it back; the trainer core's checkpoints
call :meth:`save_pretrained` like any model's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..data import InputError

KINDS = ("scalar", "3class", "orm")
SUCCESS = 1  # the 3-class head's "correct" class
CONFIG_KEY = "searchrl_value"


class ValueModel(nn.Module):
    """A backbone (``AutoModel``-style: ``last_hidden_state``) and a value head (see module docs)."""

    def __init__(self, backbone: nn.Module, kind: str = "scalar", dropout: float = 0.05):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"value head kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.model, self.kind, self.dropout = backbone, kind, float(dropout)
        self.config = backbone.config
        h = self.config.hidden_size
        if kind == "3class":
            self.value_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(h, h, bias=False), nn.ReLU(),
                                            nn.Linear(h, 3, bias=False))
        else:
            self.value_head = nn.Linear(h, 1)
        self.value_head.to(next(backbone.parameters()).dtype)

    @property
    def classes(self) -> int:
        return 3 if self.kind == "3class" else 1

    # ---- building and files

    @classmethod
    def from_policy(cls, policy: nn.Module, kind: str = "scalar", dropout: float = 0.05,
                    seed: int | None = None) -> ValueModel:
        """A value model whose backbone is ``policy``'s transformer (weights shared with ``policy``;
        pass a copy to keep the policy unchanged). With ``seed`` the new head's initial weights
        come from that seed alone (not from whatever the global RNG holds), without touching
        the global RNG."""
        backbone = policy.base_model if hasattr(policy, "base_model") else policy
        if seed is None:
            return cls(backbone, kind, dropout)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(backbone, kind, dropout)

    def save_pretrained(self, directory: str | os.PathLike, state_dict: dict | None = None, **_) -> None:
        """Write ``config.json`` and ``model.safetensors`` (``state_dict``: these weights instead of the
        module's own, e.g. a sharded model's gathered ones)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config[CONFIG_KEY] = {"kind": self.kind, "dropout": self.dropout}
        (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        state = {k: v.detach().contiguous().cpu()
                 for k, v in (self.state_dict() if state_dict is None else state_dict).items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> ValueModel:
        """Load a directory written by :meth:`save_pretrained` (refused, with the reason, otherwise)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        from .hub import is_hub_name, resolve_hub

        directory = resolve_hub(directory).path if is_hub_name(directory) else Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{directory}: not a model directory (no config.json)")
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
        head = raw.get(CONFIG_KEY)
        if not isinstance(head, dict) or head.get("kind") not in KINDS:
            raise InputError(f"{cfg_path}: field {CONFIG_KEY!r}: not a searchrl value model "
                             f"(a policy directory? train one with `searchrl train-value`)")
        config = AutoConfig.from_pretrained(str(directory))
        backbone = AutoModel.from_config(config, dtype=dtype or torch.float32)
        model = cls(backbone, head["kind"], head.get("dropout", 0.05))
        state = load_file(str(directory / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "rotary" not in k]:
            raise InputError(f"{directory / 'model.safetensors'}: weights do not match the config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if dtype is not None:
            model = model.to(dtype)
        return model.to(device) if device is not None else model

    def export_token_classification(self, directory: str | os.PathLike, tokenizer=None) -> Path:
        """Write this value model as a ``*ForTokenClassification`` directory (e.g. ``LlamaForTokenClassification``)
        that ``transformers.AutoModelForTokenClassification.from_pretrained`` loads as it is: the same backbone,
        and the scalar head as the classifier ``score`` with ``num_labels=1`` (label ``"value"``), so its logits
        are :meth:`forward`'s and ``sigmoid(logits)`` are :meth:`values` at every position. Every tool that
        reads a token-classification PRM (TRL, vLLM's reward models,
        :class:`~searchrl.models.verifiers.TokenClassificationPRM`, which applies the sigmoid to a one-label
        head) then reads our values.

        Only a scalar head (``scalar``, ``orm``) has that form; the 3-class head (Linear, ReLU, Linear) is no
        ``*ForTokenClassification`` classifier, so it is refused. ``tokenizer`` is saved beside the weights
        (the value model's directory holds its policy's). Written to a temporary directory renamed into
        place, so ``directory`` is either complete or absent."""
        import shutil
        import tempfile

        from transformers import AutoModelForTokenClassification

        if self.classes != 1:
            raise InputError(f"{directory}: a {self.kind} value model has no *ForTokenClassification form (its head "
                             f"is Linear, ReLU, Linear); only scalar and orm heads are exported")
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise InputError(f"{directory}: exists and is not an empty directory; give a new one")
        config = self.config.__class__.from_dict(self.config.to_dict())
        config.num_labels = 1
        config.id2label, config.label2id = {0: "value"}, {"value": 0}
        config.classifier_dropout = 0.0
        config.token_classification_bias = True
        model = AutoModelForTokenClassification.from_config(config, dtype=next(self.parameters()).dtype)
        base = getattr(model, model.base_model_prefix)  # save_pretrained names the architecture (its class)
        missing, unexpected = base.load_state_dict(self.model.state_dict(), strict=False)
        if unexpected or [k for k in missing if "rotary" not in k]:
            raise ValueError(f"{type(model).__name__}: the backbone's weights do not fit (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        model.score.load_state_dict(self.value_head.state_dict())
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if directory.exists():
                directory.rmdir()
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    # ---- forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head's raw output at every position: ``[B, T]`` logits (scalar) or ``[B, T, 3]`` (3-class).

        Training calls this (through DDP's wrapper); :meth:`values` turns it into values."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        out = self.value_head(hidden)
        return out.squeeze(-1) if self.classes == 1 else out

    def to_values(self, out: torch.Tensor) -> torch.Tensor:
        """Values in [0, 1] from :meth:`forward`: sigmoid (scalar) or P(correct) (3-class)."""
        if self.classes == 1:
            return torch.sigmoid(out.float())
        return torch.softmax(out.float(), dim=-1)[..., SUCCESS]

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]``: the value after each position (the state ending at that token)."""
        return self.to_values(self(input_ids, attention_mask))

    def score(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]],
              max_batch_tokens: int = 16384) -> list[float]:
        """V(prompt_i + state_i) at its last token, for every i (batched by length; a
        :class:`~searchrl.search.common.Scorer`)."""
        ends = [[len(s)] for s in state_ids]
        return [v[0] for v in self.values_at(prompt_ids, state_ids, ends, max_batch_tokens)]

    @torch.no_grad()
    def values_at(self, prompt_ids: Sequence[Sequence[int]], state_ids: Sequence[Sequence[int]],
                  ends: Sequence[Sequence[int]], max_batch_tokens: int = 16384) -> list[list[float]]:
        """For each i, the values of the prefixes ``prompt_i + state_i[:e]`` for every ``e`` in ``ends[i]``
        (``e = 0``: the bare prompt), read from one forward pass over ``prompt_i + state_i`` (the
        value at a token depends only on the tokens before it). Sequences are batched by length,
        right-padded (with causal attention a real token never sees the padding after it)."""
        if not len(prompt_ids) == len(state_ids) == len(ends):
            raise ValueError(f"{len(prompt_ids)} prompts, {len(state_ids)} states, {len(ends)} position lists")
        seqs = [list(p) + list(s) for p, s in zip(prompt_ids, state_ids)]
        for i, (p, s, es) in enumerate(zip(prompt_ids, state_ids, ends)):
            if any(not 0 <= e <= len(s) for e in es) or (0 in es and not p):
                raise ValueError(f"sequence {i}: prefix ends {list(es)} outside 1..{len(p) + len(s)} tokens")
        pad = self.config.pad_token_id if getattr(self.config, "pad_token_id", None) is not None else 0
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        out: list[list[float]] = [[] for _ in seqs]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        i = 0
        try:
            while i < len(order):
                longest = len(seqs[order[i]])
                rows = order[i:i + max(1, max_batch_tokens // max(longest, 1))]
                ids = torch.full((len(rows), longest), pad, dtype=torch.long)
                for r, j in enumerate(rows):
                    ids[r, :len(seqs[j])] = torch.tensor(seqs[j])
                vals = self.values(ids.to(device)).cpu()
                for r, j in enumerate(rows):
                    at = [len(prompt_ids[j]) + e - 1 for e in ends[j]]
                    out[j] = vals[r, at].tolist()
                i += len(rows)
        finally:
            self.train(was_training)
        return out


def is_value_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` (a directory, or a Hub name already in the cache or fetchable) is a searchrl value model."""
    from .hub import HubError, is_hub_name, resolve_hub

    if is_hub_name(path):
        try:
            path = resolve_hub(path).path
        except HubError:
            return False
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return isinstance(json.loads(cfg.read_text(encoding="utf-8")).get(CONFIG_KEY), dict)
    except (OSError, ValueError):
        return False


__all__ = ["ValueModel", "KINDS", "SUCCESS", "is_value_dir"]
