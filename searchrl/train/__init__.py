"""Training: supervised fine-tuning (:mod:`searchrl.train.sft`)."""

from searchrl.train.sft import SFTConfig, train_sft

__all__ = ["SFTConfig", "train_sft"]
