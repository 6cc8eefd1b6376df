"""A 3-class value model (VGS) or DPO of a micro policy on fixed data, for tests/test_multiprocess.py:
run alone (1 process, grad_accum 2) or under ``torchrun --nproc_per_node 2`` with ``fsdp`` (weights,
gradients and optimizer state sharded over 2 processes); the final weights must agree.

    python ddp_offline.py value|dpo OUT [fsdp]
"""

import sys

import torch


def main(kind: str, out: str, *flags: str) -> int:
    import os

    from searchrl.models.policy import load_policy
    from searchrl.models.value import ValueModel
    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer
    from searchrl.train.config import DPOConfig, ValueTrainConfig
    from searchrl.train.dpo import train_dpo
    from searchrl.train.value import train_value

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    policy, tok = load_policy("micro", tokenizer=build_countdown_tokenizer(), max_seq_len=128, seed=0)
    common = dict(output_dir=out, lr=1e-3, warmup_steps=1, max_steps=4, tokens_per_batch=64, max_seq_len=64,
                  grad_accum=2 // world, save_every=0, seed=0, fsdp="fsdp" in flags)
    if kind == "value":
        model = ValueModel.from_policy(policy, kind="3class", dropout=0.0, seed=0)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        records = [{"prompt_ids": [1 + i % 5, 2 + i % 3], "state_ids": [3 + i % 7] * (1 + i % 4),
                    "rollout_ids": [4 + i % 2] * (2 + i % 3), "label": i % 3} for i in range(40)]
        train_value(model, tok, records, ValueTrainConfig(kind="3class", dropout=0.0, **common), progress=False)
    else:
        model = policy
        init = {k: v.clone() for k, v in model.state_dict().items()}
        pairs = [{"prompt_ids": [1 + i % 5, 2 + i % 3], "chosen_ids": [3 + i % 7] * (1 + i % 4),
                  "rejected_ids": [4 + i % 6] * (2 + i % 3)} for i in range(40)]
        train_dpo(model, None, tok, pairs, DPOConfig(**{**common, "max_seq_len": 32}), progress=False)
    moved = max(float((v - init[k]).abs().max()) for k, v in model.state_dict().items())
    assert moved > 1e-4, moved  # it trained: agreeing runs are not two copies of the initial weights
    if "fsdp" in flags:  # plain again, and equal to what it wrote
        from pathlib import Path

        from safetensors.torch import load_file

        assert all(type(p) is torch.nn.Parameter for p in model.parameters())
        assert type(model).__name__ in ("ValueModel", "LlamaForCausalLM"), type(model)
        final = load_file(Path(out) / "final" / "model.safetensors")
        assert all(torch.equal(final[k], v) for k, v in model.state_dict().items() if k in final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
