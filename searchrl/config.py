"""Configs: dataclasses filled from a YAML recipe plus ``key=value`` overrides.

OmegaConf does the parsing and type checking (``sft.lr=3e-4`` is checked against the
dataclass field's type; an unknown key is an error that names it). Every field has a
help string, so ``--help`` and the docs list every option, its default and its unit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .selftrain.rest import SelfTrainConfig
from .tasks.countdown.dataset import CountdownDataConfig
from .train.sft import SFTConfig


def _f(default: Any, help: str, **kw) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    name: str = _f("tiny-1m", "a preset (micro, tiny-1m, tiny-3m, small-8m, small-20m) or a local model directory")
    number_digits: int = _f(0, "tokenizer for presets: 0 = one token per digit, D = whole numbers of <= D digits")
    max_seq_len: int = _f(1024, "context length of presets (tokens)")
    dtype: str = _f("float32", "weights dtype for loading: float32 | bfloat16 | float16")
    device: str = _f("auto", "auto (cuda when available, else cpu) | cpu | cuda | cuda:N")


@dataclass
class EvalConfig:
    splits: list = _f(["test_seen", "test_unseen"], "splits to evaluate")
    n_problems: int = _f(200, "first N problems of each split (0 = all)")
    n_samples: int = _f(32, "sampled completions per problem for pass@k (0 = none)")
    temperature: float = _f(1.0, "sampling temperature for pass@k")
    top_p: float = _f(1.0, "nucleus sampling threshold")
    greedy: bool = _f(True, "also decode greedily (one sample per problem)")
    max_tokens: int = _f(1024, "response budget (tokens); prompt + response must fit the context")
    ks: list = _f([1, 2, 4, 8, 16, 32], "k values of pass@k")
    batch_size: int = _f(64, "rows decoded together by the sampler")
    shard_problems: int = _f(50, "problems per resumable shard of generated samples")
    seed: int = _f(0, "seed of the sampled completions (per problem and sample)")
    method: str = _f("model", "name of the evaluated method in tables and plots")


@dataclass
class Config:
    run_dir: str = _f("runs/default", "run directory: every output of the command goes here")
    seed: int = _f(0, "global seed")
    data: CountdownDataConfig = field(default_factory=CountdownDataConfig)
    data_dir: str = _f("", "existing Countdown data directory ('' = <run_dir>/data, made if missing)")
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(output_dir=""))
    eval: EvalConfig = field(default_factory=EvalConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    rest_sft: SFTConfig = field(default_factory=lambda: SFTConfig(output_dir="", warmup_steps=20, epochs=2.0))
    base_model: str = _f("", "start self-training from this checkpoint instead of training the SoS base "
                         "('' = train it into <run_dir>/sft)")


class ConfigError(ValueError):
    pass


def load_config(path: str | os.PathLike | list | None = None, overrides: list[str] | None = None,
                cls: type = Config) -> Any:
    """Recipe YAML(s) (optional; later ones win) merged over the dataclass defaults, then
    ``key=value`` overrides."""
    base = OmegaConf.structured(cls)
    paths = path if isinstance(path, list) else ([] if path is None else [path])
    try:
        for p in paths:
            base = OmegaConf.merge(base, OmegaConf.load(p))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"overrides must look like key=value, got {bad}")
            base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(base)
    except OmegaConfBaseException as e:
        where = f"{', '.join(map(str, paths))}: " if paths else ""
        raise ConfigError(f"{where}{e}".strip()) from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
