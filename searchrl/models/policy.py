"""Policies: any Hugging Face causal LM; tiny Llama presets trained from scratch.

A policy is a ``(model, tokenizer)`` pair of plain transformers objects, so checkpoints
are ``save_pretrained`` directories that vLLM, TRL and transformers load as they are.

* ``load_policy("tiny-1m", tokenizer=...)`` creates a fresh Llama-style model from a preset
  (sized for this 2-core CPU; the tokenizer, usually the task's own, decides the vocabulary).
* ``load_policy("path/to/dir")`` loads a checkpoint or a local pretrained model with its
  own tokenizer and chat template (e.g. Llama-3.2-1B-Instruct; its chat template's
  ``| trim`` is removed so that continuing a prefix re-tokenizes consistently, as the
  published Guided-ReST recipe does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from ..data import InputError
from .tokenizer import fix_chat_template_trim

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    intermediate: int


#: Tiny Llama-style presets (parameter counts with the 40-token digit vocabulary).
PRESETS: dict[str, Preset] = {
    "micro": Preset(hidden=32, layers=2, heads=2, intermediate=64),        # tests: 22k params
    "tiny-1m": Preset(hidden=128, layers=4, heads=4, intermediate=512),    # 1.05M
    "tiny-3m": Preset(hidden=192, layers=6, heads=6, intermediate=768),    # 3.5M
    "small-8m": Preset(hidden=256, layers=8, heads=8, intermediate=1024),  # 8.4M
    "small-20m": Preset(hidden=384, layers=8, heads=6, intermediate=1536), # 18.9M
}


def tiny_config(preset: str, vocab_size: int, max_seq_len: int, tokenizer=None) -> LlamaConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or a model directory")
    p = PRESETS[preset]
    ids = {}
    if tokenizer is not None:
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=p.hidden, num_hidden_layers=p.layers,
        num_attention_heads=p.heads, num_key_value_heads=p.heads, intermediate_size=p.intermediate,
        max_position_embeddings=max_seq_len, rope_theta=10000.0, tie_word_embeddings=True,
        rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, **ids,
    )


def is_model_dir(name: str | os.PathLike) -> bool:
    return Path(name).is_dir() and (Path(name) / "config.json").exists()


#: what a model directory can be: a causal LM (a policy), a searchrl value model (backbone + head), or an
#: off-the-shelf verifier (:mod:`searchrl.models.verifiers`: a token-classification PRM, a sequence-classification
#: reward model, a ``*ForProcessRewardModel`` such as Qwen2.5-Math-PRM)
MODEL_KINDS = ("policy", "value", "token-classification", "sequence-classification", "process-reward")
#: the kinds a search can score with (``kind="scorer"``); a causal LM only as a Math-Shepherd-style PRM, when asked
SCORER_KINDS = ("value", "token-classification", "sequence-classification", "process-reward")


def model_dir_kind(cfg: dict) -> str:
    """What a model directory's ``config.json`` (``cfg``) holds: ``"value"`` (a searchrl value model: the
    ``searchrl_value`` entry), a verifier kind by its ``architectures`` (``*ForTokenClassification``,
    ``*ForSequenceClassification``, ``*ForProcessRewardModel``), else ``"policy"``."""
    from .value import CONFIG_KEY

    if isinstance(cfg.get(CONFIG_KEY), dict):
        return "value"
    for arch in cfg.get("architectures") or []:
        for suffix, kind in (("ForTokenClassification", "token-classification"),
                             ("ForSequenceClassification", "sequence-classification"),
                             ("ForProcessRewardModel", "process-reward")):
            if str(arch).endswith(suffix):
                return kind
    return "policy"


def check_model_dir(path: str | os.PathLike, kind: str | tuple[str, ...] | None = "policy") -> None:
    """Refuse, with the reason, a directory that is not a loadable checkpoint of ``kind``: ``policy`` (a
    causal LM), ``value`` (a searchrl value model), ``scorer`` (any of :data:`SCORER_KINDS`), a tuple of
    :data:`MODEL_KINDS`, or ``None`` (any). A Hub name (``org/name[@rev]``) is resolved first
    (:mod:`searchrl.models.hub`).

    Cheap (reads JSON only), so commands call it before any long work. A value model given where a
    policy is expected (or the reverse) loads without an error in transformers (only an "unexpected
    weights" warning) and samples nonsense, so it is refused here, naming the directory and its kind.
    """
    import json

    from .hub import hub_snapshot_identity

    name, path = path, resolve_model_path(path)
    shown = (hub_snapshot_identity(path) if str(name) != str(path) else None) or path  # a Hub model: org/name@commit
    if not path.is_dir():
        raise FileNotFoundError(f"{shown}: no such model directory")
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{shown}: not a model directory (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise InputError(f"{cfg_path}: no 'model_type' field, so this is not a Hugging Face model config")
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
    if not weights:
        raise FileNotFoundError(f"{shown}: no weights (*.safetensors or *.bin) next to config.json")
    found = model_dir_kind(cfg)
    # a searchrl value model reads the policy's token ids: it needs no tokenizer of its own (policies and
    # off-the-shelf verifiers, which decode the text again, do)
    if found != "value" and not any((path / f).exists()
                                    for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise FileNotFoundError(f"{shown}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    wanted = SCORER_KINDS if kind == "scorer" else (kind,) if isinstance(kind, str) else kind
    if wanted is not None and found not in wanted:
        if found == "value":
            from .value import CONFIG_KEY

            raise InputError(f"{shown}: a value model ({cfg[CONFIG_KEY].get('kind')} head), not a policy; give a "
                             f"policy checkpoint here (e.g. <run_dir>/sft/final)")
        if found != "policy":
            what = "a policy checkpoint (e.g. <run_dir>/sft/final)" if wanted == ("policy",) else \
                "a directory written by `searchrl train-value`"
            raise InputError(f"{shown}: a {found} model ({', '.join(cfg.get('architectures') or [])}), not "
                             f"{'a policy' if wanted == ('policy',) else 'a searchrl value model'}; give {what}")
        if "token-classification" in wanted:
            raise InputError(f"{shown}: a policy ({cfg.get('model_type')} causal LM), not a value model or "
                             f"verifier; give one (`searchrl train-value`), a *ForTokenClassification PRM or a "
                             f"*ForSequenceClassification reward model, or set search.verifier.causal_lm=true to "
                             f"read it as a Math-Shepherd PRM")
        raise InputError(f"{shown}: a policy ({cfg.get('model_type')} causal LM), not a value model; give a "
                         f"directory written by `searchrl train-value`")


def load_policy(name: str | os.PathLike, tokenizer=None, *, max_seq_len: int = 1024,
                seed: int = 0, dtype: torch.dtype | None = None, device: str | torch.device | None = None):
    """``(model, tokenizer)`` from a preset name or a local model directory (see module doc).

    A preset needs ``tokenizer`` (the task's vocabulary); a model directory brings its own.
    """
    hf_logging.disable_progress_bar()  # per-file "Loading weights" bars for tiny models are noise
    if str(name) not in PRESETS:
        name = resolve_model_path(name)  # builtin:NAME, a Hub name
    if is_model_dir(name):
        check_model_dir(name)
        tok = tokenizer or dir_tokenizer(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32)
    elif str(name) in PRESETS:
        if tokenizer is None:
            raise ValueError(f"preset {name!r} is created from scratch and needs a tokenizer "
                             f"(a task's tokenizer(), e.g. searchrl.tasks.countdown.build_countdown_tokenizer())")
        tok = tokenizer
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_config(str(name), len(tok), max_seq_len, tok))
        if dtype is not None:
            model = model.to(dtype)
    else:
        raise FileNotFoundError(f"{name}: neither a model directory (with config.json) nor a preset "
                                f"({', '.join(sorted(PRESETS))})")
    if device is not None:
        model = model.to(device)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def resolve_model_path(name: str | os.PathLike) -> Path:
    """The local directory of a model name: ``builtin:NAME`` is a checkpoint shipped inside the package
    (``searchrl/presets/NAME``); ``org/name[@revision]`` with no local path of that name is a Hugging Face
    Hub model, its snapshot in the Hub cache (:func:`searchrl.models.hub.resolve_hub`: fetched when online,
    a :class:`~searchrl.models.hub.HubError` naming the fetch command when offline and not cached); any
    other name is a path as it is."""
    name = str(name)
    if name.startswith("builtin:"):
        from importlib import resources

        path = Path(str(resources.files("searchrl") / "presets" / name.split(":", 1)[1]))
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{name}: no shipped checkpoint at {path}")
        return path
    from .hub import is_hub_name, resolve_hub

    if is_hub_name(name):
        return resolve_hub(name).path
    return Path(name)


def resolve_device(setting: str) -> str:
    """A ``model.device`` setting as a torch device name: ``auto`` is cuda when available, else cpu."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def dir_tokenizer(path: str | os.PathLike):
    """A model directory's tokenizer, as :func:`load_policy` sets it up (chat template, pad token)."""
    tok = AutoTokenizer.from_pretrained(path)
    fix_chat_template_trim(tok)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(model_cfg, name: str | os.PathLike | None = None, task=None):
    """The tokenizer :func:`load_model` would return, without loading the weights."""
    name = str(resolve_model_path(name or model_cfg.name))
    if not is_model_dir(name) and name in PRESETS:
        if task is None or not hasattr(task, "tokenizer"):
            raise InputError(f"model preset {name!r} needs a vocabulary, and task "
                             f"{getattr(task, 'name', None)!r} brings no tokenizer(); use a model directory")
        return task.tokenizer()
    check_model_dir(name, kind=None)  # a value model's directory holds its policy's tokenizer too
    return dir_tokenizer(name)


def load_model(model_cfg, name: str | os.PathLike | None = None, task=None, seed: int = 0):
    """``(model, tokenizer)`` as a run's :class:`~searchrl.config.ModelConfig` says.

    ``name`` (default ``model_cfg.name``): a model directory, or a preset created from
    scratch with ``task.tokenizer()``.
    """
    if model_cfg.dtype not in DTYPES:
        raise InputError(f"model.dtype must be one of {DTYPES}, got {model_cfg.dtype!r}")
    dtype = getattr(torch, model_cfg.dtype)
    device = resolve_device(model_cfg.device)
    name = str(resolve_model_path(name or model_cfg.name))
    tokenizer = None
    if not is_model_dir(name) and name in PRESETS:
        if task is None or not hasattr(task, "tokenizer"):
            raise InputError(f"model preset {name!r} needs a vocabulary, and task "
                             f"{getattr(task, 'name', None)!r} brings no tokenizer(); use a model directory")
        tokenizer = task.tokenizer()
    return load_policy(name, tokenizer, max_seq_len=model_cfg.max_seq_len, seed=seed, dtype=dtype, device=device)
