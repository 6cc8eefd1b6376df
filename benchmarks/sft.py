"""SFT throughput: training tokens/s and model-FLOPs utilisation (MFU) of searchrl.train.sft.

Builds a small Llama (random init) and synthetic prompt/response token sequences,
runs ``train_sft`` for a few steps, and compares the achieved model FLOP/s,
``6 * params * tokens / time`` (forward + backward of a dense transformer, attention's
quadratic term ignored; padded tokens counted, since they are computed), with the
FLOP/s of large square matmuls timed on the same device in the training compute
dtype (fp32 on CPU; bf16 where SFT autocasts to bf16). The first logged window
(start-up, first-call overheads) is left out. Ends with one JSON line.

    python benchmarks/sft.py                # ~1 minute on 2 CPU cores
    python benchmarks/sft.py --steps 200    # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from searchrl.data import read_jsonl
from searchrl.train.accel import resolve_mixed_precision
from searchrl.train.sft import SFTConfig, train_sft


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Best observed FLOP/s of n x n @ n x n matmuls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--tokens-per-batch", type=int, default=2048)
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "no"],
                    help="SFTConfig.mixed_precision ('auto': bf16 on CUDA with bf16, else fp32)")
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=int(args.hidden * 8 / 3) // 16 * 16,
                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                         num_key_value_heads=max(1, args.hidden // 64), max_position_embeddings=512,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())

    rng = np.random.default_rng(0)
    examples = [{"prompt_ids": rng.integers(3, args.vocab, int(rng.integers(16, 48))).tolist(),
                 "response_ids": rng.integers(3, args.vocab, int(rng.integers(32, 160))).tolist() + [1]}
                for _ in range(args.examples)]

    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(output_dir=out, max_steps=args.steps, tokens_per_batch=args.tokens_per_batch,
                        max_seq_len=256, warmup_steps=5, save_every=0, log_every=args.log_every,
                        mixed_precision=args.mixed_precision)
        summary = train_sft(model, None, examples, cfg)
        logs = read_jsonl(f"{out}/metrics.jsonl")
    first, last = logs[0], logs[-1]
    dt = last["time_s"] - first["time_s"]
    real = last["tokens"] - first["tokens"]
    padded_frac = summary["padded_tokens"] / summary["tokens"]  # padded / real, whole run
    tok_s = real / dt
    padded_tok_s = tok_s * padded_frac

    device = next(model.parameters()).device
    mp = resolve_mixed_precision(cfg.mixed_precision)
    dtype = torch.bfloat16 if mp == "bf16" else torch.float32
    peak = matmul_flops(device, dtype, 4096 if device.type == "cuda" else 1024)
    achieved = 6 * params * padded_tok_s
    mfu = achieved / peak

    print(f"device {device}, {torch.get_num_threads()} threads, mixed precision {mp}")
    print(f"model: {params / 1e6:.2f}M params (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab})")
    print(f"steps {summary['steps']}, final loss {summary['final_loss']:.3f}, "
          f"padding {1 - 1 / padded_frac:.1%} of computed tokens")
    print(f"training: {tok_s:,.0f} tokens/s ({padded_tok_s:,.0f} incl. padding) -> {achieved / 1e9:.2f} GFLOP/s")
    print(f"{str(dtype).removeprefix('torch.')} matmul: {peak / 1e9:.1f} GFLOP/s -> MFU {mfu:.1%}")
    print(json.dumps({"tok_s": round(tok_s, 1), "mfu": round(mfu, 4), "matmul_flops": round(peak),
                      "params": params, "steps": summary["steps"], "device": str(device), "mixed_precision": mp}))


if __name__ == "__main__":
    main()
