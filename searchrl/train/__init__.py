"""Training: the trainer core every trainer is built on (:mod:`searchrl.train.core`), losses looked up
by name (:mod:`searchrl.train.losses`) and supervised fine-tuning (:mod:`searchrl.train.sft`).

Settings live in :mod:`searchrl.train.config` (no torch import); the names below are loaded on
first use, so reading a config does not import torch.
"""

import importlib

_EXPORTS = {"OptimConfig": "config", "TrainConfig": "config", "SFTConfig": "config", "TrainRun": "core",
            "get_loss": "losses", "register_loss": "losses", "train_sft": "sft"}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"searchrl.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'searchrl.train' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
