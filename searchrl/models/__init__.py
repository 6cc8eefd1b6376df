"""Tokenizers and policies (any HF causal LM; tiny presets from scratch)."""

from .policy import PRESETS, check_model_dir, is_model_dir, load_model, load_policy, num_params, resolve_model_path, tiny_config
from .tokenizer import fix_chat_template_trim, prompt_for

__all__ = ["PRESETS", "load_policy", "load_model", "check_model_dir", "resolve_model_path", "num_params", "tiny_config", "is_model_dir",
           "fix_chat_template_trim", "prompt_for"]
