"""Throughput of searchrl.engine.Sampler vs transformers' generate() on this machine.

Builds a tiny random Llama (or loads ``--model DIR``) and a character-level
tokenizer, then decodes the same prompts greedily through

* ``model.generate()`` in batches of ``--batch`` left-padded prompts, and
* ``Sampler.generate()`` with ``max_batch_size=--batch``.

Two workloads:

* **fixed** (the headline ``ratio``): every prompt gets exactly ``--new-tokens``
  tokens, EOS ignored, so both do identical work; tokens/s of each.
* **varlen** (``ratio_varlen``): request ``i`` wants ``max_tokens_i`` drawn from
  ``[8, --new-tokens]`` - a stand-in for completions that stop at different
  lengths (EOS / stop strings). ``generate()`` has no per-row limit, so each of its
  batches runs to the longest member; the sampler refills rows as they finish.
  Throughput counts only the wanted tokens, for both.

It also times a few large fp32 matmuls to estimate the machine's attainable
FLOP/s and reports the fraction our sampler reaches on the fixed workload,
counting ``2 * params`` FLOPs per generated token (params excluding the input
embedding table; prompt tokens and attention over the cache are not counted, so
this underestimates the work done).

The last line of output is one JSON object.

    python benchmarks/sampler.py                     # 256 prompts x 128 tokens, batch 64
    python benchmarks/sampler.py --threads 0         # torch's default thread count
    python benchmarks/sampler.py --prompts 64 --new-tokens 32 --no-varlen
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import torch


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in "0123456789+-*/=(),.: \n" + "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_llama(vocab: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def matmul_flops(n: int = 2048, reps: int = 4) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model directory (default: a random tiny Llama)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64, help="batch size of both generate() and the sampler's rows")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (0: torch's default). Default 1: on a shared 2-core box, "
                         "2 OpenMP threads stall whenever another process holds a core")
    ap.add_argument("--skip-hf", action="store_true", help="only time our sampler")
    ap.add_argument("--no-varlen", action="store_true", help="skip the variable-length workload")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from searchrl.engine import Sampler, SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    else:
        tok = char_tokenizer()
        model = tiny_llama(len(tok), args)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    n_params = sum(p.numel() for p in model.parameters())
    if model.get_input_embeddings().weight is not model.get_output_embeddings().weight:
        n_params -= model.get_input_embeddings().weight.numel()
    rng = random.Random(args.seed)
    alphabet = "0123456789+-*= "
    prompts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(16, 48))) for _ in range(args.prompts)]
    N, B = args.new_tokens, args.batch
    print(f"model: {type(model).__name__}, {n_params / 1e6:.2f}M params (excl. input embedding), vocab {len(tok)}; "
          f"{len(prompts)} prompts x {N} new tokens, batch {B}, torch threads {torch.get_num_threads()}, "
          f"load avg {os.getloadavg()[0]:.2f}")

    sampler = Sampler(model, tok, max_batch_size=B)
    tok.padding_side = "left"
    model.generation_config.eos_token_id = None  # generate() ignores EOS, like ignore_eos=True below

    def run_ours(max_tokens: list[int]):
        params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in max_tokens]
        t = time.perf_counter()
        out = sampler.generate(prompts, params)
        dt = time.perf_counter() - t
        assert sampler.last_backend == "static", sampler.last_backend
        assert [len(r.outputs[0].token_ids) for r in out] == max_tokens
        return dt, [r.outputs[0].token_ids for r in out]

    def run_hf(max_tokens: list[int]):
        """Batches of B in order; each batch decodes to its longest member's max_tokens."""
        out, t = [], time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(prompts), B):
                enc = tok(prompts[i : i + B], return_tensors="pt", padding=True, add_special_tokens=False)
                gen = model.generate(**enc, do_sample=False, max_new_tokens=max(max_tokens[i : i + B]),
                                     pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
                out += [row[:m] for row, m in zip(gen[:, enc["input_ids"].shape[1] :].tolist(), max_tokens[i : i + B])]
        return time.perf_counter() - t, out

    # warm-up both (first calls allocate, load kernels)
    sampler.generate(prompts[:8], SamplingParams(temperature=0.0, max_tokens=8))
    with torch.inference_mode():
        enc = tok(prompts[:2], return_tensors="pt", padding=True, add_special_tokens=False)
        model.generate(**enc, do_sample=False, max_new_tokens=4, pad_token_id=tok.pad_token_id)

    res = {}
    workloads = [("fixed", "", [N] * len(prompts), "")]
    if not args.no_varlen:
        workloads.append(("varlen", "_varlen", [rng.randint(min(8, N), N) for _ in prompts], " (wanted tokens)"))
    for name, suffix, wanted, note in workloads:
        ours_s, ours_ids = run_ours(wanted)
        res[f"ours_tok_s{suffix}"] = sum(wanted) / ours_s
        print(f"{name:6s} | ours: {ours_s:6.2f} s, {res[f'ours_tok_s{suffix}']:8,.0f} tok/s{note}")
        if args.skip_hf:
            continue
        hf_s, hf_ids = run_hf(wanted)
        res[f"hf_tok_s{suffix}"] = sum(wanted) / hf_s
        res[f"ratio{suffix}"] = res[f"ours_tok_s{suffix}"] / res[f"hf_tok_s{suffix}"]
        agreement = sum(a == b for a, b in zip(ours_ids, hf_ids)) / len(prompts)
        if name == "fixed":
            res["greedy_agreement"] = agreement
        print(f"{name:6s} | transformers generate(): {hf_s:6.2f} s, {res[f'hf_tok_s{suffix}']:8,.0f} tok/s{note} | "
              f"ratio {res[f'ratio{suffix}']:.2f}x | identical greedy sequences {agreement:.1%}")

    flops = matmul_flops()
    mfu = 2 * n_params * res["ours_tok_s"] / flops
    print(f"fp32 matmul: {flops / 1e9:.1f} GFLOP/s; our sampler (fixed) reaches {mfu:.1%} of it")
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}
    out = {"ours_tok_s": out["ours_tok_s"], "hf_tok_s": out.get("hf_tok_s"), "ratio": out.get("ratio"),
           "mfu": round(mfu, 4), "matmul_flops": round(flops), **out}
    out.update(params=n_params, prompts=len(prompts), new_tokens=N, batch=B, threads=torch.get_num_threads(),
               load_avg=round(os.getloadavg()[0], 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
