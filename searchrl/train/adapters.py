"""Memory settings of a run: gradient checkpointing and LoRA adapters, on every transformers model
inside the trained module (a policy, or an actor's and a critic's backbones).

* ``gradient_checkpointing`` recomputes the transformer's activations in the backward pass
  (:func:`set_checkpointing`; same gradients, tested).
* ``lora_rank > 0`` injects peft LoRA adapters into the ``lora_targets`` linear layers
  (:func:`add_lora`) and freezes those models' own weights (a value head still trains). The
  adapters are ordinary parameters, so checkpoints keep them and a resume is exact; when
  training ends they are folded into the weights (:func:`merge_lora`), so ``final/`` is a
  plain model any loader reads and the caller's model is plain again, with the trained
  weights. Not with ``fsdp=true``. For models too large for one GPU in the RL trainers, train
  LoRA adapters under DDP.
"""

from __future__ import annotations

import torch


def transformers_in(model: torch.nn.Module) -> list:
    """The outermost transformers models inside ``model`` (itself, or an actor's and a critic's backbones)."""
    from transformers import PreTrainedModel

    found, inside = [], set()
    for name, m in model.named_modules():
        if isinstance(m, PreTrainedModel) and not any(name.startswith(p) for p in inside):
            found.append(m)
            inside.add(name + "." if name else "")
    return found


def set_checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing of a transformers model on or off (non-reentrant; the
    method's name changed in transformers 5)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def add_lora(model: torch.nn.Module, cfg) -> None:
    """LoRA adapters (rank ``cfg.lora_rank``, peft) on the ``cfg.lora_targets`` layers of every transformers
    model inside ``model``, in place: those models' own weights are frozen, the adapters train, and weights
    outside them (a value model's head) train as before."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError("lora_rank > 0 trains LoRA adapters with peft: pip install 'searchrl[lora]'") from None
    targets = cfg.lora_target_names()
    backbone = {id(p) for m in transformers_in(model) for p in m.parameters()}
    before = {id(p): p.requires_grad for p in model.parameters()}
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets)
    names = {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"lora_targets={cfg.lora_targets!r}: no linear layer named {missing} in the model "
                         f"(its linear layers: {sorted(names)})")
    inject_adapter_in_model(lora, model)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
        elif id(p) in backbone:
            p.requires_grad_(False)
        else:
            p.requires_grad_(before.get(id(p), True))


def merge_lora(model: torch.nn.Module) -> None:
    """Fold every LoRA adapter into its base layer and put the plain layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge()
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, m.get_base_layer())
