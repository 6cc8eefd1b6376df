"""SFT of a micro model on fixed examples, for tests/test_multiprocess.py: run alone (1 process,
grad_accum 2) or under ``torchrun --nproc_per_node 2`` (2 processes, grad_accum 1); both take the
same 4 budgets per optimizer step, so the final weights must agree."""

import sys

import torch


def main(out: str) -> int:
    import os

    from searchrl.models.policy import load_policy
    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer
    from searchrl.train.sft import SFTConfig, train_sft

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tok = build_countdown_tokenizer()
    model, tok = load_policy("micro", tokenizer=tok, max_seq_len=128, seed=0)
    examples = [{"prompt": f"Q{i}: {i} + {i % 7} =", "response": f" {i + i % 7}\n" * (1 + i % 3)} for i in range(48)]
    cfg = SFTConfig(output_dir=out, lr=1e-3, warmup_steps=1, max_steps=4, tokens_per_batch=128, max_seq_len=128,
                    grad_accum=2 // world, save_every=0, log_every=1, seed=0)
    train_sft(model, tok, examples, cfg, progress=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
