"""Fully sharded data parallel training (torch FSDP2, ``TrainConfig.fsdp``) for the trainer core.

With ``fsdp=true`` each process keeps only its 1/P share of every weight, gradient and
optimizer moment instead of a whole copy (DDP): a model P times larger fits. The weights of
each transformer block are gathered just before the block runs and freed after it
(:func:`torch.distributed.fsdp.fully_shard` on every block named in the model's
``_no_split_modules``, then on the whole trained module); gradients are reduce-scattered as
averages over the processes, exactly as DDP all-reduces them, so the trainers' loss scaling
is the same and a 2-process FSDP run equals a 1-process run (tests/test_multiprocess.py).

We shard with torch's own ``fully_shard`` rather than accelerate's FSDP plugin because
accelerate enables its plugin only on accelerators (its CPU launcher has no FSDP), and the
equality test must run on CPU; the launch, process group and devices still come from
accelerate (``torchrun`` or ``accelerate launch``), which prepares the optimizer alone.

Files stay what they are without sharding: checkpoints and ``final/`` hold the full weights
(gathered, written by the main process), the optimizer state is written whole
(:func:`get_optimizer_state_dict` with ``full_state_dict``) and re-sharded when resumed,
and when training ends the caller's model is made plain again (:func:`unshard_model`),
whole on every process with the trained weights, as a model trained under DDP is.

The on-policy RL trainers sample from a plain, whole copy of the policy on each process
(:func:`copy_weights` after every update, as verl's hybrid engine hands weights to its
rollout engine): sampling runs a different number of forward passes on each process, which
a sharded model cannot (its processes gather weights in lockstep). The copy costs one more
policy in memory, not its gradients or optimizer state. Every other forward pass (values,
logprobs, the losses) is on the sharded model, the same rows or the same number of
micro-batches on every process.

Not supported: LoRA (``lora_rank``), refused with the reason.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from searchrl.train.adapters import transformers_in


def _units(model: nn.Module) -> list[nn.Module]:
    """What is sharded as one unit, innermost first (``model`` itself comes last, not listed): every
    transformer block (a class that a transformers model inside names in ``_no_split_modules``, e.g.
    ``LlamaDecoderLayer``), every outermost transformers model, and, when ``model`` is a wrapper of
    several (an actor with its critic), each of its parts, so that a trainer can call a part on its
    own (the critic's values) and find that part's weights gathered."""
    from transformers import PreTrainedModel

    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    units = {id(m): m for m in model.modules() if type(m).__name__ in names}
    units.update({id(m): m for m in transformers_in(model) if m is not model})
    if not isinstance(model, PreTrainedModel):
        units.update({id(m): m for m in model.children() if any(True for _ in m.parameters())})
    depth = {id(m): name.count(".") + 1 for name, m in model.named_modules() if name}
    return sorted(units.values(), key=lambda m: -depth[id(m)])


def shard_model(model: nn.Module, device: torch.device, mixed_precision: str) -> dict:
    """Shard ``model`` in place over all processes (its blocks, then the whole); returns what
    :func:`unshard_model` needs to make it plain again.

    ``mixed_precision="bf16"``: weights are gathered and used in bf16, gradients reduced in fp32,
    and the sharded master weights and optimizer state stay fp32.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("fsdp=true shards the model over several processes: launch with torchrun or "
                         "accelerate launch (one process has nothing to shard over)")
    undo = _snapshot(model)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kw: dict[str, Any] = {"mesh": mesh}
    if mixed_precision == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for unit in _units(model):
        fully_shard(unit, **kw)
    fully_shard(model, **kw)
    # FSDP sets itself up on the root's first forward pass; a trainer may call a part first (the
    # critic's values before any loss), so set it up now (a private hook: torch has no public one)
    model._get_fsdp_state()._lazy_init()
    return undo


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def set_gradient_sync(model: nn.Module, on: bool) -> None:
    """FSDP's ``no_sync``: with ``on=False`` backward passes accumulate unreduced gradients, and the
    next one with ``on=True`` reduce-scatters their sum."""
    model.set_requires_gradient_sync(on)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of a sharded ``model``, whole, on the CPU of the main process ({} on the others).
    Call on every process (it gathers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def copy_weights(model: nn.Module, part: nn.Module, dest: nn.Module) -> None:
    """Copy the current weights of ``part`` (``model`` itself or a part of it) of a sharded ``model``
    into ``dest``, a plain model of the same architecture (the RL trainers' sampling copy of the
    policy). Call on every process (it gathers); each process's ``dest`` gets them whole."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, keep_submodule_prefixes=False)
    state = get_model_state_dict(model, submodules=None if part is model else {part}, options=opts)
    with torch.no_grad():
        for name, t in dest.state_dict().items():
            t.copy_(state[name])


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer state of a sharded ``model``, whole (keyed by parameter names), on the main
    process's CPU ({} on the others). Call on every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    """Load a whole optimizer state (:func:`full_optimizer_state`) into a sharded model's optimizer:
    each process keeps its shards. Call on every process, each with the whole state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


# -----------------------------------------------------------------------------
# making the model plain again


_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_pre_hooks",
               "_backward_hooks", "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def _snapshot(model: nn.Module) -> dict:
    """Each module's class, attribute names and hook ids before sharding, and which parameters
    (by name) are the same tensor (tied embeddings), with their ``requires_grad``."""
    modules = {}
    for name, m in model.named_modules(remove_duplicate=False):
        hooks = {h: set(getattr(m, h).keys()) for h in _HOOK_DICTS if isinstance(getattr(m, h, None), dict)}
        modules[name] = (type(m), set(m.__dict__), hooks)
    first: dict[int, str] = {}
    params = []  # (module name, attribute, name of the first parameter that is this tensor, requires_grad)
    for mname, m in model.named_modules(remove_duplicate=False):
        for pname, p in m._parameters.items():
            if p is None:
                continue
            full = f"{mname}.{pname}" if mname else pname
            params.append((mname, pname, first.setdefault(id(p), full), p.requires_grad))
    return {"modules": modules, "params": params}


def unshard_model(model: nn.Module, undo: dict) -> None:
    """Undo :func:`shard_model` in place: every process gets plain, whole parameters holding the
    trained weights (shared again where they were tied), and the modules lose FSDP's classes,
    hooks and state. Call on every process (it gathers)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))  # whole, every process
    dist.barrier()
    mods = dict(model.named_modules(remove_duplicate=False))
    made: dict[str, nn.Parameter] = {}
    for mname, pname, source, requires_grad in undo["params"]:
        if source not in made:
            made[source] = nn.Parameter(state[source].detach().clone(), requires_grad=requires_grad)
        mods[mname]._parameters[pname] = made[source]
    for mname, (cls, attrs, hooks) in undo["modules"].items():
        m = mods[mname]
        m.__class__ = cls
        for key in set(m.__dict__) - attrs:
            del m.__dict__[key]
        for h, keep in hooks.items():
            d = getattr(m, h)
            for key in [k for k in d if k not in keep]:
                del d[key]


__all__ = ["shard_model", "unshard_model", "is_sharded", "set_gradient_sync", "full_state_dict", "copy_weights",
           "full_optimizer_state", "load_optimizer_state"]
