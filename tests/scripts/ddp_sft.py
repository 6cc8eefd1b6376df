"""SFT of a micro model on fixed examples, for tests/test_multiprocess.py: run alone (1 process,
grad_accum 2) or under ``torchrun --nproc_per_node 2`` (2 processes, grad_accum 1); both take the
same 4 budgets per optimizer step, so the final weights must agree.

    python ddp_sft.py OUT [fsdp] [crash-after-N]

``fsdp``: shard the model (``fsdp=true``; checkpoint at step 2), and check that the caller's model is
plain again afterwards with the final weights. ``crash-after-N``: raise after optimizer step N, as a
crash would (rerun the same command to resume).
"""

import sys

import torch


def main(out: str, *flags: str) -> int:
    import os

    from searchrl.models.policy import load_policy
    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer
    from searchrl.train.sft import SFTConfig, train_sft

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = "fsdp" in flags
    crash = next((int(f.rpartition("-")[2]) for f in flags if f.startswith("crash-after-")), None)
    tok = build_countdown_tokenizer()
    model, tok = load_policy("micro", tokenizer=tok, max_seq_len=128, seed=0)
    cls = type(model)
    examples = [{"prompt": f"Q{i}: {i} + {i % 7} =", "response": f" {i + i % 7}\n" * (1 + i % 3)} for i in range(48)]
    cfg = SFTConfig(output_dir=out, lr=1e-3, warmup_steps=1, max_steps=4, tokens_per_batch=128, max_seq_len=128,
                    grad_accum=2 // world, save_every=2 if fsdp else 0, log_every=1, seed=0, fsdp=fsdp,
                    mixed_precision="bf16" if "bf16" in flags else "no")

    def during(step, _logs):
        if fsdp:  # really sharded: each process holds half of each weight, every block its own unit
            from torch.distributed.fsdp import FSDPModule
            from torch.distributed.tensor import DTensor

            w = model.model.embed_tokens.weight
            assert isinstance(w, DTensor) and w.to_local().shape[0] <= -(-w.shape[0] // world) < w.shape[0], type(w)
            assert all(isinstance(b, FSDPModule) for b in model.model.layers)
        if step == crash:
            raise RuntimeError(f"crash after step {step}")

    train_sft(model, tok, examples, cfg, progress=False, callback=during)
    if fsdp:  # the caller's model is plain again, whole, with the trained weights
        from pathlib import Path

        from safetensors.torch import load_file

        assert type(model) is cls, type(model)
        assert all(type(p) is torch.nn.Parameter for p in model.parameters())
        assert model.lm_head.weight is model.model.embed_tokens.weight or not model.config.tie_word_embeddings
        final = load_file(Path(out) / "final" / "model.safetensors")
        own = model.state_dict()
        assert all(torch.equal(final[k], own[k]) for k in final)
        model(input_ids=torch.tensor([[1, 2, 3]]))  # runs alone, no collective
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
